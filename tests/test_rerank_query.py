"""`query --rerank`, `rerank_search` and the dense cache, with tiny untrained networks.

The fake embedder ranks by random vectors; the re-ranker is real (a tiny dense net and a tiny
locator), so two decodings of the same pixels give the same view and verify with ~all their
cells as inliers, while different noise images share only a handful. With weight 2 and cap 100
that lifts the same picture by 2.0 and any other image by well under 1.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from click.testing import CliRunner
from fakes import MODELS, OTHER_DENSE, PNG_MAGIC, FakeEmbedder, tiny_reranker, virtual_source, write_pngs
from PIL import Image

from benchmark.commands import index as cli
from benchmark.commands import index_rerank as rerank_cli
from indexer.api import RerankedQuery, build_index, open_index, rerank_search, source_from_paths
from indexer.errors import InvalidQueryError
from indexer.rerank import cache as dense_cache
from indexer.rerank.cache import cache_parts, open_cache, write_cache
from retrieval.model import BlurAwareNet, save_checkpoint
from retrieval.rerank.dense_checkpoint import save_dense
from retrieval.rerank.dense_net import DenseFeatureNet
from retrieval.rerank.reranker import Reranker
from retrieval.rerank.verify import RerankParams

REAL_LOAD_RERANKER = rerank_cli.load_reranker
SAME_PICTURE_BONUS = 2.0  # weight 2 x min(inliers, 100) / 100 with >= 100 inliers


@pytest.fixture(scope="module")
def reranker() -> Reranker:
    return tiny_reranker(RerankParams(weight=SAME_PICTURE_BONUS, cap=100))


@pytest.fixture(autouse=True)
def tiny_models(monkeypatch: pytest.MonkeyPatch, reranker: Reranker) -> None:
    monkeypatch.setattr(cli, "load_embedder", lambda *args: FakeEmbedder())
    monkeypatch.setattr(rerank_cli, "load_reranker", lambda *args: (reranker, MODELS))


def _build(tmp_path: Path, *extra: str) -> tuple[Path, list[Path]]:
    paths = write_pngs(tmp_path / "db", 6)
    result = CliRunner().invoke(cli.index_group, ["build", str(tmp_path / "db"), "--out",
                                                  str(tmp_path / "idx"), "-q", *extra])
    assert result.exit_code == 0, result.output
    return tmp_path / "idx", paths


def _query(*args: str) -> dict:
    result = CliRunner().invoke(cli.query_command, [*args, "--json", "-q"])
    assert result.exit_code == 0, result.output
    (answer,) = json.loads(result.stdout)["results"]
    return answer


def _ids(hits: list[dict]) -> list[int]:
    return [hit["id"] for hit in hits]


def _same_pixels_other_bytes(path: Path, out: Path) -> Path:
    """A copy the fake embedder gives another vector (other bytes), the re-ranker the same view."""
    with Image.open(path) as image:
        image.save(out, compress_level=0)
    assert out.read_bytes() != path.read_bytes()
    return out


def test_hits_gain_inliers_and_rerank_score_with_renumbered_ranks(tmp_path: Path) -> None:
    index_dir, paths = _build(tmp_path)
    answer = _query(str(index_dir), str(paths[0]), "-k", "3", "--rerank", "6")
    hits = answer["hits"]
    assert "rerank" not in answer
    assert [set(hit) for hit in hits] == [{"rank", "id", "path", "score", "verified_inliers",
                                           "appearance", "rerank_score"}] * 3
    assert hits[0]["appearance"] == pytest.approx(1.0, abs=1e-5), "the same picture's cells match"
    assert all(-1 <= hit["appearance"] <= 1 + 1e-6 for hit in hits)
    assert [hit["rank"] for hit in hits] == [1, 2, 3]
    assert hits[0]["path"] == str(paths[0].resolve()) and hits[0]["verified_inliers"] >= 100
    assert hits[0]["rerank_score"] == pytest.approx(hits[0]["score"] + SAME_PICTURE_BONUS, abs=1e-5)
    assert all(isinstance(hit["verified_inliers"], int) for hit in hits)
    scores = [hit["rerank_score"] for hit in hits]
    assert scores == sorted(scores, reverse=True)


def test_reranking_permutes_the_global_top_k_and_keeps_the_rest(tmp_path: Path) -> None:
    index_dir, paths = _build(tmp_path)
    query = _same_pixels_other_bytes(paths[3], tmp_path / "copy.png")
    plain = _query(str(index_dir), str(query), "-k", "6")["hits"]
    target = next(hit for hit in plain if hit["path"] == str(paths[3].resolve()))
    assert 1 < target["rank"] <= 3, "precondition: the global vector does not find it first"
    hits = _query(str(index_dir), str(query), "-k", "6", "--rerank", "3")["hits"]
    assert hits[0]["id"] == target["id"], "verification lifts the same picture to rank 1"
    assert sorted(_ids(hits[:3])) == sorted(_ids(plain[:3]))
    assert [hit["rank"] for hit in hits] == [1, 2, 3, 4, 5, 6]
    for before, after in zip(plain[3:], hits[3:]):
        assert (after["id"], after["score"], after["rank"]) == (before["id"], before["score"],
                                                                before["rank"])
        assert after["verified_inliers"] is None and after["rerank_score"] == before["score"]
        assert after["appearance"] is None


def test_query_expansion_scores_hits_by_the_best_verified_one(tmp_path: Path, reranker: Reranker
                                                               ) -> None:
    index_dir, paths = _build(tmp_path)
    expanding = Reranker(reranker.dense, reranker.locator, reranker.image_size,
                         dataclasses.replace(reranker.params, expansion=0.5))
    query = _same_pixels_other_bytes(paths[3], tmp_path / "copy.png")
    (result,) = rerank_search(open_index(index_dir), [query], FakeEmbedder(), expanding, k=6,
                              rerank_k=6).results
    vectors = dict(zip((str(p.resolve()) for p in paths), FakeEmbedder().vectors_of(paths)))
    best = result.hits[0]
    assert best.path == str(paths[3].resolve()), "the same picture is verified best"
    for hit in result.hits:  # 0.5 * verified score + 0.5 * cosine to the best hit's vector
        verified = hit.score + SAME_PICTURE_BONUS * min(hit.verified_inliers, 100) / 100
        expected = 0.5 * verified + 0.5 * float(vectors[best.path] @ vectors[hit.path])
        assert hit.rerank_score == pytest.approx(expected, abs=1e-5)
    plain = _query(str(index_dir), str(query), "-k", "6")["hits"]
    assert sorted(hit.id for hit in result.hits) == sorted(_ids(plain)), "a permutation of the top 6"


def test_text_and_grid_show_the_reranked_order(tmp_path: Path) -> None:
    index_dir, paths = _build(tmp_path)
    query = _same_pixels_other_bytes(paths[3], tmp_path / "copy.png")
    result = CliRunner().invoke(cli.query_command, [str(index_dir), str(query), "-k", "2",
                                                    "--rerank", "6", "--grid", str(tmp_path / "g.png")])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[1].split() == ["rank", "score", "rerank", "appearance", "inliers", "id", "path"]
    first = lines[2].split()
    assert first[0] == "1" and int(first[4]) > 0 and first[-1] == str(paths[3].resolve())
    assert lines[-1] == f"wrote {tmp_path / 'g.png'}" and (tmp_path / "g.png").is_file()


def test_a_query_the_dense_stage_cannot_read_keeps_the_global_ranking(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    index_dir, _ = _build(tmp_path)
    odd = tmp_path / "odd.png"  # the fake embedder only checks the signature; decoding fails
    odd.write_bytes(PNG_MAGIC + b"no image data")
    plain = _query(str(index_dir), str(odd), "-k", "4")["hits"]
    with caplog.at_level(logging.WARNING):
        answer = _query(str(index_dir), str(odd), "-k", "4", "--rerank", "4")
    assert answer["rerank"].startswith("skipped: ") and str(odd) in answer["rerank"]
    assert [(h["id"], h["score"], h["rank"]) for h in answer["hits"]] == [
        (h["id"], h["score"], h["rank"]) for h in plain]
    assert all(h["verified_inliers"] is None and h["rerank_score"] == h["score"]
               for h in answer["hits"])
    assert "re-ranking skipped" in caplog.text and str(odd) in caplog.text


def test_a_locator_failure_keeps_the_global_ranking(tmp_path: Path, reranker: Reranker,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    paths = write_pngs(tmp_path / "db", 4)
    index, _ = build_index(source_from_paths(paths), FakeEmbedder(), tmp_path / "idx", progress=False)

    def fail(images: torch.Tensor) -> None:
        raise RuntimeError("locator broke")

    monkeypatch.setattr(reranker.locator, "locate", fail)
    found = rerank_search(index, [paths[1]], FakeEmbedder(), reranker, k=4, rerank_k=2)
    (result,) = found.results
    assert isinstance(result, RerankedQuery)
    assert result.skipped == "dense description failed (RuntimeError: locator broke)"
    plain = index.search_images([paths[1]], FakeEmbedder(), 4).results[0].hits
    assert [(h.id, h.score) for h in result.hits] == [(h.id, h.score) for h in plain]


def test_a_candidate_whose_file_is_gone_keeps_its_global_score(tmp_path: Path) -> None:
    index_dir, paths = _build(tmp_path)
    paths[3].unlink()
    plain = _query(str(index_dir), str(paths[0]), "-k", "6")["hits"]
    hits = _query(str(index_dir), str(paths[0]), "-k", "6", "--rerank", "6")["hits"]
    assert sorted(_ids(hits)) == sorted(_ids(plain)), "nothing dropped, nothing invented"
    (gone,) = [hit for hit in hits if hit["path"] == str(paths[3].resolve())]
    global_score = next(h["score"] for h in plain if h["id"] == gone["id"])
    assert gone["verified_inliers"] is None and gone["rerank_score"] == gone["score"] == global_score
    assert all(isinstance(hit["verified_inliers"], int) for hit in hits if hit is not gone)


def test_rows_without_files_are_kept_unverified(tmp_path: Path, reranker: Reranker) -> None:
    index, _ = build_index(virtual_source(4), FakeEmbedder(), tmp_path / "idx", progress=False)
    (query,) = write_pngs(tmp_path / "q", 1)
    (result,) = rerank_search(index, [query], FakeEmbedder(), reranker, k=4, rerank_k=4).results
    plain = index.search_images([query], FakeEmbedder(), 4).results[0].hits
    assert result.skipped is None
    assert [(h.id, h.score, h.score, None) for h in plain] == [
        (h.id, h.score, h.rerank_score, h.verified_inliers) for h in result.hits]


def test_rerank_k_must_be_positive(tmp_path: Path, reranker: Reranker) -> None:
    paths = write_pngs(tmp_path / "db", 2)
    index, _ = build_index(source_from_paths(paths), FakeEmbedder(), tmp_path / "idx", progress=False)
    with pytest.raises(InvalidQueryError, match="rerank_k"):
        rerank_search(index, paths, FakeEmbedder(), reranker, k=1, rerank_k=0)


def test_the_cache_holds_exactly_the_views_computed_on_demand(tmp_path: Path,
                                                              reranker: Reranker) -> None:
    write_pngs(tmp_path / "db", 6)
    result = CliRunner().invoke(cli.index_group, ["build", str(tmp_path / "db"), "--out",
                                                  str(tmp_path / "idx"), "-q", "--dense"])
    assert result.exit_code == 0, result.output
    size = _cache_bytes(tmp_path / "idx")
    assert f"dense cache: 6 views, {size / 1e6:.1f} MB" in result.stdout
    index = open_index(tmp_path / "idx")
    ids = np.arange(6)
    expected, _ = reranker.describe_items([row["path"] for row in index.rows(ids)])
    cache = open_cache(tmp_path / "idx")
    assert cache is not None and cache.models == MODELS
    for image_id, view in zip(ids, expected):
        cached = cache.get(int(image_id))
        assert np.array_equal(cached.descriptors, view.descriptors)
        assert cached.descriptors.dtype == view.descriptors.dtype
        assert np.array_equal(cached.points, view.points) and cached.cell_size == view.cell_size
    assert cache.get(6) is None
    info = json.loads(CliRunner().invoke(cli.index_group, ["info", str(tmp_path / "idx"),
                                                           "--json"]).stdout)
    assert info["dense_cache"] == {"views": 6, "bytes": size, "dense": "dense",
                                   "locator": "blur-aware"}
    text = CliRunner().invoke(cli.index_group, ["info", str(tmp_path / "idx")]).stdout
    assert f"dense cache     6 views, {size / 1e6:.1f} MB ({size} bytes" in text


def test_query_uses_the_cache_only_when_the_same_models_made_it(
        tmp_path: Path, reranker: Reranker, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    index_dir, paths = _build(tmp_path)
    (query_view,), _ = reranker.describe_items([paths[0]])
    write_cache(index_dir, MODELS, list(range(6)), [query_view] * 6)  # every image "is" the query
    forged = _query(str(index_dir), str(paths[0]), "-k", "6", "--rerank", "6")["hits"]
    assert all(h["rerank_score"] == pytest.approx(h["score"] + SAME_PICTURE_BONUS, abs=1e-5)
               for h in forged)
    monkeypatch.setattr(rerank_cli, "load_reranker", lambda *args: (reranker, OTHER_DENSE))
    with caplog.at_level(logging.WARNING):
        ignored = _query(str(index_dir), str(paths[0]), "-k", "6", "--rerank", "6")["hits"]
    assert "ignored" in caplog.text and "b" * 12 in caplog.text
    bonus = [h["rerank_score"] - h["score"] for h in ignored]
    assert bonus[0] == pytest.approx(SAME_PICTURE_BONUS, abs=1e-5) and max(bonus[1:]) < 1


def test_a_damaged_cache_is_reported_and_views_are_computed(tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    index_dir, paths = _build(tmp_path, "--dense")
    plain = _query(str(index_dir), str(paths[0]), "-k", "3", "--rerank", "6")
    cache_parts(index_dir)[0].write_bytes(b"junk")
    with caplog.at_level(logging.WARNING):
        assert _query(str(index_dir), str(paths[0]), "-k", "3", "--rerank", "6") == plain
    assert "unreadable dense cache" in caplog.text and str(cache_parts(index_dir)[0]) in caplog.text
    info = json.loads(CliRunner().invoke(cli.index_group, ["info", str(index_dir), "--json"]).stdout)
    assert "unreadable dense cache" in info["dense_cache"]["error"]


def test_index_add_extends_the_cache(tmp_path: Path, reranker: Reranker) -> None:
    index_dir, _ = _build(tmp_path, "--dense")
    runner = CliRunner()
    assert runner.invoke(cli.index_group, ["remove", str(index_dir), "--id", "1"]).exit_code == 0
    more = write_pngs(tmp_path / "more", 3, seed=9)
    added = runner.invoke(cli.index_group, ["add", str(index_dir), str(tmp_path / "more"), "-q"])
    assert added.exit_code == 0, added.output
    assert "dense cache: 8 views" in added.stdout, "5 kept, 1 removed, 3 added"
    cache = open_cache(index_dir)
    assert cache.ids.tolist() == [0, 2, 3, 4, 5, 6, 7, 8]
    index = open_index(index_dir)
    new_files = [row["path"] for row in index.rows(np.array([6, 7, 8]))]
    assert sorted(new_files) == sorted(str(p.resolve()) for p in more)
    expected, _ = reranker.describe_items(new_files)
    for image_id, view in zip((6, 7, 8), expected):
        assert np.array_equal(cache.get(image_id).descriptors, view.descriptors)


def test_index_add_leaves_a_cache_whose_checkpoints_changed(tmp_path: Path, reranker: Reranker,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    index_dir, _ = _build(tmp_path, "--dense")
    monkeypatch.setattr(rerank_cli, "load_reranker", lambda *args: (reranker, OTHER_DENSE))
    write_pngs(tmp_path / "more", 2, seed=9)
    added = CliRunner().invoke(cli.index_group, ["add", str(index_dir), str(tmp_path / "more"), "-q"])
    assert added.exit_code == 0 and "added 2 of 2 items" in added.stdout
    assert "not extended" in added.stderr and "now hold" in added.stderr
    assert open_cache(index_dir).ids.tolist() == [0, 1, 2, 3, 4, 5]


def test_index_add_without_a_cache_writes_none(tmp_path: Path) -> None:
    index_dir, _ = _build(tmp_path)
    write_pngs(tmp_path / "more", 2, seed=9)
    added = CliRunner().invoke(cli.index_group, ["add", str(index_dir), str(tmp_path / "more"), "-q"])
    assert added.exit_code == 0 and "dense cache" not in added.output
    assert open_cache(index_dir) is None


def _cache_arrays(index_dir: Path) -> dict[str, np.ndarray]:
    return open_cache(index_dir).arrays()


def _cache_bytes(index_dir: Path) -> int:
    return sum(path.stat().st_size for path in cache_parts(index_dir))


def test_index_dense_gives_an_existing_index_the_cache_build_dense_makes(tmp_path: Path) -> None:
    built, _ = _build(tmp_path / "a", "--dense")
    plain, _ = _build(tmp_path / "b")
    assert open_cache(plain) is None
    result = CliRunner().invoke(cli.index_group, ["dense", str(plain), "-q"])
    assert result.exit_code == 0, result.output
    assert "0 views kept, 6 images to describe" in result.stdout and "dense cache: 6 views" in result.stdout
    made, expected = _cache_arrays(plain), _cache_arrays(built)
    assert all(np.array_equal(made[name], expected[name]) for name in expected)


def test_index_dense_keeps_the_views_it_holds_and_describes_the_missing(
        tmp_path: Path, reranker: Reranker) -> None:
    index_dir, paths = _build(tmp_path, "--dense")
    (marker,), _ = reranker.describe_items([paths[0]])
    complete = _cache_arrays(index_dir)
    write_cache(index_dir, MODELS, [3, 4], [marker, marker])  # a partial cache, views 3, 4 forged
    result = CliRunner().invoke(cli.index_group, ["dense", str(index_dir), "-q"])
    assert result.exit_code == 0, result.output
    assert "2 views kept, 4 images to describe" in result.stdout
    cache = open_cache(index_dir)
    assert cache.ids.tolist() == [0, 1, 2, 3, 4, 5]
    assert np.array_equal(cache.get(3).descriptors, marker.descriptors), "kept, not redone"
    for image_id in (0, 1, 2, 5):
        start, stop = complete["offsets"][image_id], complete["offsets"][image_id + 1]
        # described again in a batch of another size: equal to float32 rounding
        np.testing.assert_allclose(cache.get(image_id).descriptors, complete["descriptors"][start:stop],
                                   rtol=1e-5, atol=1e-5)
    again = CliRunner().invoke(cli.index_group, ["dense", str(index_dir), "-q"])
    assert "6 views kept, 0 images to describe" in again.stdout


def test_index_dense_redoes_views_of_other_checkpoints_and_leaves_out_virtual_rows(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reranker: Reranker) -> None:
    index_dir, _ = _build(tmp_path, "--dense")
    monkeypatch.setattr(rerank_cli, "load_reranker", lambda *args: (reranker, OTHER_DENSE))
    result = CliRunner().invoke(cli.index_group, ["dense", str(index_dir), "-q"])
    assert result.exit_code == 0 and "0 views kept, 6 images to describe" in result.stdout
    assert open_cache(index_dir).models == OTHER_DENSE
    rendered = virtual_source(4)  # as a manifest's simulator rows: no path at all
    rendered = dataclasses.replace(rendered, metadata=rendered.metadata.set_column(
        0, "path", pa.array([None] * 4, pa.string())))
    build_index(rendered, FakeEmbedder(), tmp_path / "virtual", progress=False)
    virtual = CliRunner().invoke(cli.index_group, ["dense", str(tmp_path / "virtual"), "-q"])
    assert virtual.exit_code == 0 and "4 rows without a file are left out" in virtual.stderr
    assert open_cache(tmp_path / "virtual") is None


def test_index_dense_replaces_a_damaged_cache(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dense_cache, "PART_VIEWS", 2)
    index_dir, _ = _build(tmp_path, "--dense")
    first, *others = cache_parts(index_dir)
    assert len(others) == 2
    first.write_bytes(b"junk")  # one damaged part spoils the cache: which views are current is unknown
    with caplog.at_level(logging.WARNING):
        result = CliRunner().invoke(cli.index_group, ["dense", str(index_dir), "-q"])
    assert result.exit_code == 0 and "0 views kept, 6 images to describe" in result.stdout
    assert "unreadable dense cache" in caplog.text and str(first) in caplog.text
    assert open_cache(index_dir).ids.tolist() == [0, 1, 2, 3, 4, 5]
    assert first not in cache_parts(index_dir) and not set(others) & set(cache_parts(index_dir))


def test_index_dense_on_a_folder_that_is_no_index_is_an_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli.index_group, ["dense", str(tmp_path), "-q"])
    assert result.exit_code != 0 and str(tmp_path) in result.output


def test_rerank_zero_is_a_usage_error(tmp_path: Path) -> None:
    index_dir, paths = _build(tmp_path)
    result = CliRunner().invoke(cli.query_command, [str(index_dir), str(paths[0]), "-k", "2",
                                                    "--rerank", "0"])
    assert result.exit_code == 2 and "--rerank" in result.output


@pytest.mark.parametrize("broken", ["missing", "no_config", "bad_weights"])
def test_an_unusable_dense_checkpoint_is_a_usage_error(tmp_path: Path, broken: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rerank_cli, "load_reranker", REAL_LOAD_RERANKER)
    index_dir, paths = _build(tmp_path)
    dense = tmp_path / "dense_ckpt"
    if broken != "missing":
        dense.mkdir()
    if broken == "bad_weights":
        (dense / "dense.json").write_text(json.dumps({"dim": 8, "stride": 4, "crop": 64}))
        (dense / "dense.safetensors").write_bytes(b"junk")
    result = CliRunner().invoke(cli.query_command, [str(index_dir), str(paths[0]), "-k", "2",
                                                    "--rerank", "2", "--dense", str(dense),
                                                    "--device", "cpu"])
    assert result.exit_code == 2 and f"--dense {dense}" in result.stderr
    build = CliRunner().invoke(cli.index_group, ["build", str(tmp_path / "db"), "--out",
                                                 str(tmp_path / "idx2"), "-q", "--dense", str(dense)])
    assert build.exit_code == 2 and not (tmp_path / "idx2").exists()


def test_real_checkpoints_are_recorded_by_path_and_hash(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rerank_cli, "load_reranker", REAL_LOAD_RERANKER)
    torch.manual_seed(0)
    dense_config = save_dense(tmp_path / "dense_ckpt", DenseFeatureNet(dim=8), {})
    save_checkpoint(tmp_path / "locator", BlurAwareNet("test_byobnet", embedding_dim=16).eval(),
                    {"image_size": [32, 48]})
    options = ["--dense", str(tmp_path / "dense_ckpt"), "--locator", str(tmp_path / "locator"),
               "--device", "cpu"]
    index_dir, paths = _build(tmp_path, *options)
    models = open_cache(index_dir).models
    assert models.dense == str((tmp_path / "dense_ckpt").resolve())
    assert models.locator == str((tmp_path / "locator").resolve())
    assert models.dense_sha256 == dense_config["weights_sha256"]
    hits = _query(str(index_dir), str(paths[0]), "-k", "2", "--rerank", "6", *options)["hits"]
    assert hits[0]["path"] == str(paths[0].resolve()) and hits[0]["verified_inliers"] > 0


def test_mirror_vectors_are_cached_and_views_without_them_are_described_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reranker: Reranker,
        caplog: pytest.LogCaptureFixture) -> None:
    mirroring = Reranker(reranker.dense, reranker.locator, reranker.image_size,
                         dataclasses.replace(reranker.params, mirror=0.5))
    monkeypatch.setattr(rerank_cli, "load_reranker", lambda *args: (mirroring, MODELS))
    index_dir, paths = _build(tmp_path, "--dense")
    files = [row["path"] for row in open_index(index_dir).rows(np.arange(6))]
    expected, _ = mirroring.describe_items(files)
    cache = open_cache(index_dir)
    for image_id, view in enumerate(expected):
        assert np.array_equal(cache.get(image_id).mirror, view.mirror)
    cached = _query(str(index_dir), str(paths[1]), "-k", "6", "--rerank", "6")
    plain_views, _ = reranker.describe_items(files)  # the same cells, no mirror vectors
    write_cache(index_dir, MODELS, list(range(6)), plain_views)
    assert open_cache(index_dir).get(0).mirror is None
    with caplog.at_level(logging.WARNING):
        assert _query(str(index_dir), str(paths[1]), "-k", "6", "--rerank", "6") == cached
    assert "6 cached dense views lack the mirror vector" in caplog.text
    result = CliRunner().invoke(cli.index_group, ["dense", str(index_dir), "-q"])
    assert result.exit_code == 0 and "0 views kept, 6 images to describe" in result.stdout
    assert np.array_equal(open_cache(index_dir).get(5).mirror, expected[5].mirror)
    monkeypatch.setattr(rerank_cli, "load_reranker", lambda *args: (reranker, MODELS))
    again = CliRunner().invoke(cli.index_group, ["dense", str(index_dir), "-q"])
    assert "6 views kept, 0 images to describe" in again.stdout, "without a mirror share they serve"
