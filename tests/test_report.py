"""Per-level stratification on a hand-computed example, and the files `bench map` writes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from benchmark.commands.bench_map import map_command
from benchmark.ranking import ExactResult
from benchmark.report import metric_table, terminal_table
from benchmark.scoring import KNN_KEY, METRICS, RANK_DEPTH, TIES, per_query_metrics, stratify
from retrieval.manifest import MANIFEST_NAME, write_manifest
from retrieval.metrics import TIE_SEED
from retrieval.model import BlurAwareNet, save_checkpoint
from retrieval.sim.layout import PRESETS, Preset


def padded(rows: list[list[int]]) -> np.ndarray:
    out = np.full((len(rows), RANK_DEPTH), -1, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def test_stratification_on_a_hand_computed_example():
    # Database: items 0, 1 show instance 10, item 2 instance 20, item 3 instance 30; 4 and 5
    # are distractors. Queries: instances 10, 20, 40 (no positive) and 30, at levels 1, 1, 2, 6.
    database_labels = np.array([10, 10, 20, 30, -1, -1])
    query_labels = np.array([10, 20, 40, 30])
    levels = np.array([1, 1, 2, 6])
    exact_top = padded([[0, 4, 1, 2, 3, 5], [4, 5, 2, 0, 1, 3], [0, 1, 2, 3, 4, 5],
                        [0, 1, 2, 4, 5, 3]])
    index_top = padded([[0, 4, 1, 2, 3, 5], [4, 5, 2, 0, 1, 3], [0, 1, 2, 3, 4, 5],
                        [0, 1, 2, 4, 5]])  # the approximate index missed query 3's positive
    exact = ExactResult(top_ids=exact_top, top_scores=np.zeros(exact_top.shape, np.float32),
                        positive_ranks=np.array([[1, 3], [3, 0], [0, 0], [6, 0]]),
                        num_positives=np.array([2, 1, 0, 1]),
                        tied_at_cutoff=np.array([True, False, False, False]),
                        tied_in_top_k=np.array([True, False, False, True]))
    per_query = per_query_metrics(index_top, query_labels, database_labels, exact)
    np.testing.assert_allclose(per_query["map100"], [5 / 6, 1 / 3, np.nan, 0.0])
    np.testing.assert_allclose(per_query["map_full"], [5 / 6, 1 / 3, np.nan, 1 / 6])
    np.testing.assert_allclose(per_query["recall1"], [1, 0, np.nan, 0])

    summary = stratify(per_query, levels, knn=(index_top, exact_top), exact=exact)
    overall, by_level = summary["overall"], summary["levels"]
    assert (overall["queries"], overall["no_positive"]) == (4, 1)
    assert overall["map100"] == pytest.approx((5 / 6 + 1 / 3 + 0) / 3)
    assert overall["map_full"] == pytest.approx((5 / 6 + 1 / 3 + 1 / 6) / 3)
    assert overall["recall10"] == pytest.approx(2 / 3)
    assert overall[KNN_KEY] == pytest.approx((1 + 1 + 1 + 5 / 6) / 4)
    assert (overall["ties_at_cutoff"], overall["ties_in_top_k"]) == (1, 2)
    assert (by_level[1]["ties_at_cutoff"], by_level[6]["ties_in_top_k"]) == (1, 1)
    assert by_level[1]["queries"] == 2 and by_level[1]["map100"] == pytest.approx(7 / 12)
    assert by_level[1]["recall1"] == pytest.approx(0.5) and by_level[1][KNN_KEY] == 1.0
    assert by_level[2] == {"queries": 1, "no_positive": 1, **dict.fromkeys(METRICS), KNN_KEY: 1.0,
                           **dict.fromkeys(TIES, 0)}
    assert by_level[6]["map100"] == 0.0 and by_level[6]["map_full"] == pytest.approx(1 / 6)
    assert by_level[6][KNN_KEY] == pytest.approx(5 / 6)
    for empty in (3, 4, 5):
        assert by_level[empty] == {"queries": 0, "no_positive": 0, **dict.fromkeys(METRICS),
                                   KNN_KEY: None, **dict.fromkeys(TIES, 0)}
    assert stratify(per_query, levels)["overall"]["ties_at_cutoff"] is None  # no exact ranking


def test_tables_print_percentages_and_n_a_for_empty_levels():
    entry = {"queries": 2, "no_positive": 0, "map100": 0.5}
    empty = {"queries": 0, "no_positive": 0, "map100": None}
    report = {"results": {"blur-aware": {"overall": entry,
                                         "levels": {str(lv): entry if lv == 1 else empty
                                                    for lv in range(1, 7)}}}}
    header, rows = metric_table(report, "map100")
    assert header == ["method", "all (n=2)", "BL1 (n=2)"] + [f"BL{lv} (n=0)" for lv in range(2, 7)]
    assert rows == [["blur-aware", "50.00", "50.00"] + ["n/a"] * 5]
    assert "blur-aware" in terminal_table(report).splitlines()[-1]


# --- the command end to end, on a hand-made data set of files and two tiny networks ----------

SIZE = (32, 48)


def write_picture(path, instance: int, exposure: int, seed: int) -> str:
    """A colour pattern per instance, smeared more as `exposure` grows."""
    rng = np.random.default_rng([instance, seed])
    base = np.random.default_rng(instance).integers(0, 256, (4, 6, 3)).astype(np.float64)
    pixels = np.kron(base, np.ones((8, 8, 1)))
    pixels = np.clip(pixels + rng.normal(0, 10 * (1 + exposure), pixels.shape), 0, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return path.name


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Instances 1..3 have 1 query trajectory (levels 1, 3, 6) and 2 database trajectories;
    instance 4 has queries but no database image; 3 distractors; one database file is corrupt."""
    folder = tmp_path_factory.mktemp("files")
    rows = []

    def add(role, instance, trajectory, exposure, level):
        name = write_picture(folder / "img" / f"{role}{len(rows)}.png", instance, exposure,
                             len(rows))
        rows.append((f"img/{name}", instance, trajectory, exposure, level, role))

    for instance in (1, 2, 3, 4):
        for exposure, level in ((0, 1), (3, 3), (8, 6)):
            add("query", instance, 0, exposure, level)
        if instance != 4:
            add("database", instance, 1, 0, 1)
            add("database", instance, 2, 5, 4)
    for k in range(3):
        add("distractor", 100 + k, 0, k, 1 + k)
    (folder / rows[3][0]).write_bytes(b"not a png")  # instance 1's first database image
    count = len(rows)
    columns = {
        "image_id": list(range(count)), "path": [r[0] for r in rows],
        "instance": [r[1] for r in rows], "category": [0] * count,
        "trajectory": [r[2] for r in rows], "exposure": [r[3] for r in rows],
        "blur_severity": [None] * count, "blur_level": [r[4] for r in rows],
        **{name: [None] * count for name in ("bbox_cx", "bbox_cy", "bbox_w", "bbox_h")},
        "split": ["test" if r[5] != "distractor" else "distractor" for r in rows],
        "role": [r[5] for r in rows],
    }
    write_manifest(folder / MANIFEST_NAME, columns, sim=None)
    return folder


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("checkpoints")
    paths = []
    for seed, heads in enumerate((True, False)):
        torch.manual_seed(seed)
        net = BlurAwareNet("test_byobnet", embedding_dim=16, blur_head=heads, loc_head=heads)
        save_checkpoint(folder / f"net{seed}", net.eval(), {"image_size": list(SIZE)})
        paths.append(str(folder / f"net{seed}"))
    return paths


def run_map(*args):
    return CliRunner().invoke(map_command, [*args, "--device", "cpu", "-q"])


def test_bench_map_writes_a_complete_report(dataset, checkpoints, tmp_path):
    out = tmp_path / "report"
    result = run_map("--data", str(dataset), "--methods", ",".join(checkpoints), "--out",
                     str(out), "--factory", "exact")
    assert result.exit_code == 0, result.output
    assert "mAP@100 by blur level" in result.output

    report = json.loads((out / "report.json").read_text())
    assert set(report) == {"format", "config", "data", "timings_s", "results", "files"}
    assert [m["name"] for m in report["config"]["methods"]] == checkpoints
    assert report["config"]["seeds"]["tie_break"] == TIE_SEED
    assert all(len(m["fingerprint"]) == 16 for m in report["config"]["methods"])
    data = report["data"]
    assert (data["queries"], data["database"], data["distractors"]) == (12, 6, 3)
    assert data["queries_without_positive"] == 3 and data["embedding_errors"] == 1
    assert data["errors"][0]["image_id"] == 3
    assert "database3.png" in data["errors"][0]["message"]  # names the corrupt file
    for name in checkpoints:
        result_of = report["results"][name]
        assert not result_of["approximate"] and result_of["overall"][KNN_KEY] is None
        assert result_of["overall"]["queries"] == 12 and result_of["overall"]["no_positive"] == 3
        assert [result_of["levels"][str(lv)]["queries"] for lv in range(1, 7)] == [4, 0, 4, 0, 0, 4]
        assert result_of["levels"]["2"]["map100"] is None
        assert all(isinstance(result_of["overall"][key], int) for key in TIES)

    markdown = (out / "report.md").read_text()
    for label in METRICS.values():
        assert f"## {label}\n" in markdown
    for name in checkpoints:
        assert markdown.count(f"| {name} | ") == len(METRICS) + 1  # + the method list
    assert "| n/a |" in markdown
    assert '## Definitions (docs/method.md, "Metrics")' in markdown and "DESIGN.md" not in markdown
    with Image.open(out / report["files"]["plot"]) as plot:
        assert plot.format == "PNG" and plot.width > 100
    assert set(report["files"]["grids"]) == {"1", "3", "6"}
    for by_method in report["files"]["grids"].values():
        for path in by_method.values():
            with Image.open(out / path) as grid:
                assert grid.format == "PNG"


def test_a_second_run_reuses_the_vectors_and_can_use_an_approximate_index(
        dataset, checkpoints, tmp_path):
    out = tmp_path / "report"
    assert run_map("--data", str(dataset), "--methods", checkpoints[0], "--out", str(out),
                   "--factory", "exact").exit_code == 0
    cached = sorted((out / ".cache").glob("*.npy"))
    stamps = [path.stat().st_mtime_ns for path in cached]
    result = run_map("--data", str(dataset), "--methods", checkpoints[0], "--out", str(out),
                     "--factory", "IVF2,Flat")
    assert result.exit_code == 0, result.output
    assert [path.stat().st_mtime_ns for path in cached] == stamps
    summary = json.loads((out / "report.json").read_text())["results"][checkpoints[0]]
    assert summary["approximate"] and summary["factory"] == "IVF2,Flat"
    assert 0.0 <= summary["overall"][KNN_KEY] <= 1.0


@pytest.mark.parametrize(("args", "message"), [
    (["--methods", "no-such-model"], "no-such-model"),
    (["--methods", "a,a"], "listed twice"),
    (["--factory", "NotAFactory"], "invalid FAISS factory"),
    (["--distractors", "50"], "no simulator settings"),
])
def test_bad_requests_fail_with_a_clear_message(dataset, checkpoints, tmp_path, args, message):
    base = ["--data", str(dataset), "--methods", checkpoints[0], "--out", str(tmp_path / "r")]
    result = run_map(*base, *args)
    assert result.exit_code != 0 and message in result.output


def test_without_data_the_preset_test_split_is_synthesized_once(checkpoints, tmp_path,
                                                                monkeypatch):
    mini = Preset(categories=2, instances=3, trajectories=3, height=32, width=48, distractors=4)
    monkeypatch.setitem(PRESETS, "tiny", mini)
    out = tmp_path / "report"
    args = ["--preset", "tiny", "--methods", checkpoints[0], "--out", str(out),
            "--factory", "exact"]
    result = run_map(*args)
    assert result.exit_code == 0, result.output
    made = json.loads((out / "data" / "synth.json").read_text())
    assert made["splits"] == ["test"] and set(made["roles"]) == {"query", "database"}
    data = json.loads((out / "report.json").read_text())["data"]
    assert (data["virtual_distractors"], data["manifest_distractors"]) == (4, 0)

    manifest = out / "data" / MANIFEST_NAME
    stamp = manifest.stat().st_mtime_ns
    assert run_map(*args).exit_code == 0
    assert manifest.stat().st_mtime_ns == stamp  # reused, not synthesized again
    other_seed = run_map(*args, "--seed", "1")
    assert other_seed.exit_code != 0 and "other settings" in other_seed.output


def test_code_cites_sections_that_exist_in_docs_method_md():
    # The specification the code cites is docs/method.md (DESIGN.md was never in the repository).
    root = Path(__file__).resolve().parents[1]
    headings = set(re.findall(r"^## (.+)$", (root / "docs" / "method.md").read_text(), re.M))
    sources = [path for package in ("retrieval", "indexer", "benchmark")
               for path in (root / package).rglob("*.py")]
    cited = {(path.name, section) for path in sources
             for section in re.findall(r'docs/method\.md, "([^"]+)"', path.read_text())}
    assert {section for _, section in cited} >= {"Metrics", "Protocol", "Image formation",
                                                 "Blur severity and blur level"}
    assert {(name, section) for name, section in cited if section not in headings} == set()
    assert [path.name for path in sources if "DESIGN.md" in path.read_text()] == []


def test_reranked_exact_moves_only_the_positives_inside_the_top_k():
    from benchmark.rerank_eval import reranked_exact

    before = padded([[5, 7, 9, 2], [1, 2, 3, 4]])
    after = padded([[9, 5, 7, 2], [1, 2, 3, 4]])
    exact = ExactResult(top_ids=before, top_scores=np.zeros(before.shape, np.float32),
                        positive_ranks=np.array([[1, 3, 4, 40], [2, 0, 0, 0]]),
                        num_positives=np.array([4, 1]), tied_at_cutoff=np.zeros(2, bool),
                        tied_in_top_k=np.zeros(2, bool))
    moved = reranked_exact(exact, before, after, k=3)
    # query 0: ids 5 (rank 1) and 9 (rank 3) are re-ranked to 2 and 1; ranks 4 and 40 stay
    assert moved.positive_ranks.tolist() == [[1, 2, 4, 40], [2, 0, 0, 0]]
    assert moved.top_ids is after


def test_bench_map_rerank_adds_a_reranked_row_per_method(dataset, checkpoints, tmp_path):
    from retrieval.rerank.dense_checkpoint import save_dense
    from retrieval.rerank.dense_net import DenseFeatureNet

    torch.manual_seed(0)
    save_dense(tmp_path / "dense", DenseFeatureNet(dim=8, crop=32).eval(), {})
    out = tmp_path / "report"
    result = run_map("--data", str(dataset), "--methods", ",".join(checkpoints), "--out",
                     str(out), "--factory", "exact", "--rerank", "3", "--dense",
                     str(tmp_path / "dense"), "--locator", checkpoints[0])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    names = [checkpoints[0], f"{checkpoints[0]} +rerank3", checkpoints[1],
             f"{checkpoints[1]} +rerank3"]
    assert list(report["results"]) == names
    assert report["config"]["rerank"]["k"] == 3
    for name in checkpoints:
        plain, reranked = report["results"][name], report["results"][f"{name} +rerank3"]
        assert reranked["overall"]["queries"] == plain["overall"]["queries"]
        # re-ranking reorders the top 3 only: whether a positive is in the top 3 cannot change
        assert reranked["overall"]["recall10"] == plain["overall"]["recall10"]
    assert any(key.startswith("rerank: describe") for key in report["timings_s"])


def test_bench_map_rerank_with_a_bad_dense_checkpoint_fails_before_embedding(
        dataset, checkpoints, tmp_path):
    result = run_map("--data", str(dataset), "--methods", checkpoints[0], "--out",
                     str(tmp_path / "r"), "--rerank", "3", "--dense", str(tmp_path))
    assert result.exit_code == 2 and "not a dense checkpoint" in result.output
    assert not (tmp_path / "r" / ".cache").exists()


# --- bench merge: one table from runs of the same benchmark set --------------------------------

def run_merge(*args):
    from benchmark.commands.bench_merge import merge_command

    return CliRunner().invoke(merge_command, [str(arg) for arg in args])


def test_merging_runs_of_one_model_each_gives_the_table_of_both(dataset, checkpoints, tmp_path):
    for name in ("a", "b", "both"):
        methods = {"a": checkpoints[0], "b": checkpoints[1], "both": ",".join(checkpoints)}[name]
        assert run_map("--data", dataset, "--methods", methods, "--out", tmp_path / name,
                       "--factory", "exact").exit_code == 0
    result = run_merge(tmp_path / "a", tmp_path / "b" / "report.json", "--out", tmp_path / "m")
    assert result.exit_code == 0, result.output

    merged = json.loads((tmp_path / "m" / "report.json").read_text())
    both = json.loads((tmp_path / "both" / "report.json").read_text())
    assert merged["results"] == both["results"]  # the same figures as one run of the two
    assert merged["config"]["methods"] == both["config"]["methods"]
    assert merged["files"]["grids"] == both["files"]["grids"]
    for by_method in merged["files"]["grids"].values():
        for path in by_method.values():
            assert (tmp_path / "m" / path).read_bytes() == (tmp_path / "both" / path).read_bytes()
    assert [source["results"] for source in merged["merged_from"]] == [[checkpoints[0]],
                                                                     [checkpoints[1]]]
    markdown = (tmp_path / "m" / "report.md").read_text()
    assert "Merged by `bench merge`" in markdown and str(tmp_path / "a" / "report.json") in markdown
    assert all(markdown.count(f"| {name} | ") == len(METRICS) + 1 for name in checkpoints)
    with Image.open(tmp_path / "m" / merged["files"]["plot"]) as plot:
        assert plot.format == "PNG"


def test_a_later_run_replaces_a_models_row_and_grids_in_place(dataset, checkpoints, tmp_path):
    published, rerun = tmp_path / "published", tmp_path / "rerun"
    assert run_map("--data", dataset, "--methods", ",".join(checkpoints), "--out", published,
                   "--factory", "exact").exit_code == 0
    assert run_map("--data", dataset, "--methods", checkpoints[1], "--out", rerun,
                   "--factory", "exact").exit_code == 0
    # Stand-ins for a retrained model: another figure, and only its BL6 grid kept (published).
    report = json.loads((rerun / "report.json").read_text())
    report["results"][checkpoints[1]]["overall"]["map100"] = 0.125
    (rerun / "report.json").write_text(json.dumps(report))
    grids = report["files"]["grids"]
    for level in ("1", "3"):
        (rerun / grids[level][checkpoints[1]]).unlink()
    (rerun / grids["6"][checkpoints[1]]).write_bytes(b"new picture")
    old_grid = published / grids["1"][checkpoints[1]]
    first_grid = json.loads((published / "report.json").read_text())["files"]["grids"]["1"][
        checkpoints[0]]
    kept_grid = (published / first_grid).read_bytes()

    result = run_merge(published, rerun, "--out", published)
    assert result.exit_code == 0, result.output
    merged = json.loads((published / "report.json").read_text())
    assert list(merged["results"]) == checkpoints
    assert merged["results"][checkpoints[1]]["overall"]["map100"] == 0.125
    assert checkpoints[1] not in merged["files"]["grids"]["1"] and not old_grid.exists()
    assert (published / grids["6"][checkpoints[1]]).read_bytes() == b"new picture"
    assert (published / first_grid).read_bytes() == kept_grid


def test_merge_refuses_reports_of_another_set_or_missing_ones(dataset, checkpoints, tmp_path):
    out = tmp_path / "a"
    assert run_map("--data", dataset, "--methods", checkpoints[0], "--out", out,
                   "--factory", "exact").exit_code == 0
    other = tmp_path / "other"
    other.mkdir()
    report = json.loads((out / "report.json").read_text())
    report["data"]["distractors"] += 1
    (other / "report.json").write_text(json.dumps(report))
    result = run_merge(out, other, "--out", tmp_path / "m")
    assert result.exit_code == 1 and "'data summary' differ" in result.output
    assert str(other / "report.json") in result.output and not (tmp_path / "m").exists()

    report["data"]["distractors"] -= 1
    report["config"]["factory"] = "HNSW32"
    (other / "report.json").write_text(json.dumps(report))
    assert "'factory' differ" in run_merge(out, other, "--out", tmp_path / "m").output
    missing = run_merge(out, tmp_path / "nowhere", "--out", tmp_path / "m")
    assert missing.exit_code == 1 and f"{tmp_path / 'nowhere'}: no such report" in missing.output
    (other / "report.json").write_text("{not json")
    assert "not a readable report" in run_merge(other, "--out", tmp_path / "m").output
