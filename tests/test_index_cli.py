"""The `index` and `query` commands through click's CliRunner, with the fake embedder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import faiss
import pytest
from click.testing import CliRunner
from fakes import FakeEmbedder, refuse_listing, write_pngs
from PIL import Image

from benchmark.commands import index as cli

loaded_models: list[str] = []


@pytest.fixture(autouse=True)
def fake_model(monkeypatch: pytest.MonkeyPatch) -> None:
    def load_embedder(model: str, device: str, batch_size: int) -> FakeEmbedder:
        loaded_models.append(model)
        return FakeEmbedder(fingerprint=f"fp-{model}")

    loaded_models.clear()
    monkeypatch.setattr(cli, "load_embedder", load_embedder)


@pytest.fixture()
def built(tmp_path: Path) -> tuple[Path, list[Path]]:
    paths = write_pngs(tmp_path / "db", 6)
    result = CliRunner().invoke(cli.index_group, ["build", str(tmp_path / "db"), "--out",
                                                  str(tmp_path / "idx"), "--quiet",
                                                  "--model", "my-model"])
    assert result.exit_code == 0, result.output
    assert "indexed 6 of 6 items" in result.output
    assert loaded_models == ["my-model"]
    loaded_models.clear()
    return tmp_path / "idx", paths


def _query(*args: str) -> tuple[int, dict]:
    result = CliRunner().invoke(cli.query_command, [*args, "--json"])
    return result.exit_code, json.loads(result.stdout) if result.exit_code in (0, 1) else {}


def test_query_json_schema_and_self_match(built: tuple[Path, list[Path]]) -> None:
    index_dir, paths = built
    code, answer = _query(str(index_dir), str(paths[0]), "-k", "3")
    assert code == 0
    assert set(answer) == {"results", "skipped"} and answer["skipped"] == []
    (result,) = answer["results"]
    assert result["query"] == str(paths[0])
    assert [set(hit) for hit in result["hits"]] == [{"rank", "id", "path", "score"}] * 3
    assert [hit["rank"] for hit in result["hits"]] == [1, 2, 3]
    assert result["hits"][0]["path"] == str(paths[0].resolve())
    assert result["hits"][0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert loaded_models == ["my-model"], "the model recorded at build time is reused"


def test_query_skips_bad_inputs_and_answers_the_rest(built: tuple[Path, list[Path]],
                                                     tmp_path: Path) -> None:
    index_dir, paths = built
    (tmp_path / "broken.png").write_bytes(b"junk")
    (tmp_path / "empty_dir").mkdir()
    code, answer = _query(str(index_dir), str(tmp_path / "missing.png"), str(paths[1]),
                          str(tmp_path / "broken.png"), str(tmp_path / "empty_dir"), "-k", "1")
    assert code == 1
    assert [r["query"] for r in answer["results"]] == [str(paths[1])]
    assert [s["path"] for s in answer["skipped"]] == [
        str(tmp_path / "missing.png"), str(tmp_path / "broken.png"), str(tmp_path / "empty_dir")]
    assert all(s["path"] in s["error"] for s in answer["skipped"])


def test_query_a_folder_searches_every_image_in_it(built: tuple[Path, list[Path]]) -> None:
    index_dir, paths = built
    code, answer = _query(str(index_dir), str(paths[0].parent.parent), "-k", "1")
    assert code == 0 and len(answer["results"]) == 6
    assert all(Path(r["query"]).resolve() == Path(r["hits"][0]["path"])
               for r in answer["results"])


@pytest.mark.parametrize("k", ["0", "7"])
def test_query_with_k_out_of_range_is_a_usage_error(built: tuple[Path, list[Path]], k: str
                                                    ) -> None:
    index_dir, paths = built
    result = CliRunner().invoke(cli.query_command, [str(index_dir), str(paths[0]), "-k", k])
    assert result.exit_code == 2 and "k" in result.output
    assert loaded_models == [], "no model is loaded for a request that must fail"


def test_query_on_a_folder_that_is_no_index_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli.query_command, [str(tmp_path), "q.png"])
    assert result.exit_code == 2 and "manifest.json" in result.output


def test_query_grid_writes_a_contact_sheet(built: tuple[Path, list[Path]],
                                           tmp_path: Path) -> None:
    index_dir, paths = built
    out = tmp_path / "grid.png"
    result = CliRunner().invoke(cli.query_command, [str(index_dir), str(paths[0]), str(paths[1]),
                                                    "-k", "4", "--grid", str(out)])
    assert result.exit_code == 0, result.output
    with Image.open(out) as sheet:
        assert sheet.size == (5 * 166 + 6, 2 * 184 + 6)  # query + 4 hits per row, 2 rows
    lines = result.stdout.splitlines()
    assert lines[0] == str(paths[0])
    assert lines[1].split() == ["rank", "score", "id", "path"]  # each query's table has a header
    assert lines[2].split()[0] == "1" and lines[2].split()[-1] == str(paths[0].resolve())
    assert lines[-1] == f"wrote {out}"


def test_query_grid_under_json_says_what_it_wrote_on_stderr(built: tuple[Path, list[Path]],
                                                            tmp_path: Path) -> None:
    index_dir, paths = built
    out = tmp_path / "grid.png"
    result = CliRunner().invoke(cli.query_command, [str(index_dir), str(paths[0]), "-k", "2",
                                                    "--json", "--grid", str(out)])
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["results"]) == 1  # stdout holds the JSON alone
    assert result.stderr.splitlines() == [f"wrote {out}"] and out.is_file()


def test_add_remove_and_info(built: tuple[Path, list[Path]], tmp_path: Path) -> None:
    index_dir, paths = built
    write_pngs(tmp_path / "more", 3, seed=9)
    runner = CliRunner()
    added = runner.invoke(cli.index_group, ["add", str(index_dir), str(tmp_path / "more"), "-q"])
    assert added.exit_code == 0 and "added 3 of 3 items" in added.output

    removed = runner.invoke(cli.index_group, ["remove", str(index_dir), "--id", "0",
                                              "--path", str(paths[3])])
    assert removed.exit_code == 0 and "removed 2 vectors; 7 remain" in removed.output

    info = json.loads(runner.invoke(cli.index_group, ["info", str(index_dir), "--json"]).output)
    assert (info["count"], info["next_id"], info["generation"]) == (7, 9, 3)
    assert info["model"]["name"] == "my-model"
    text = runner.invoke(cli.index_group, ["info", str(index_dir)]).output
    assert "vectors         7" in text and "search          exact" in text


def test_remove_needs_ids_or_paths_and_reports_unknown_ones(built: tuple[Path, list[Path]]
                                                            ) -> None:
    index_dir, _ = built
    runner = CliRunner()
    assert runner.invoke(cli.index_group, ["remove", str(index_dir)]).exit_code == 2
    unknown = runner.invoke(cli.index_group, ["remove", str(index_dir), "--id", "77"])
    assert unknown.exit_code == 1 and "id 77" in unknown.output


@pytest.mark.parametrize("verb", ["remove", "add"])
def test_a_bogus_manifest_factory_stops_add_and_remove_instead_of_being_kept(
        built: tuple[Path, list[Path]], tmp_path: Path, verb: str) -> None:
    index_dir, _ = built
    manifest_path = index_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["factory"] = "Bogus!!"
    manifest_path.write_text(json.dumps(manifest))
    write_pngs(tmp_path / "more", 1, seed=3)
    change = {"remove": ["--id", "0"], "add": [str(tmp_path / "more"), "--model", "my-model"]}[verb]
    result = CliRunner().invoke(cli.index_group, [verb, str(index_dir), *change])
    assert result.exit_code == 1
    assert f"{manifest_path}: damaged manifest" in result.stderr and "'Bogus!!'" in result.stderr
    assert json.loads(manifest_path.read_text()) == manifest, "nothing saved"


def test_add_with_another_model_is_refused(built: tuple[Path, list[Path]], tmp_path: Path
                                           ) -> None:
    index_dir, paths = built
    result = CliRunner().invoke(cli.index_group, ["add", str(index_dir),
                                                  str(paths[0].parent), "--model", "other"])
    assert result.exit_code == 1 and "fingerprint" in result.output


def test_build_reports_skipped_files_with_exit_1(tmp_path: Path) -> None:
    write_pngs(tmp_path / "db", 3)
    (tmp_path / "db" / "bad.png").write_bytes(b"")
    result = CliRunner().invoke(cli.index_group, ["build", str(tmp_path / "db"), "--out",
                                                  str(tmp_path / "idx"), "-q"])
    assert result.exit_code == 1
    assert "bad.png" in result.stderr and "indexed 3 of 4 items" in result.stdout
    assert loaded_models == ["blur-aware"], "the default model"


@pytest.mark.parametrize("verb", ["build", "add"])
def test_a_folder_that_cannot_be_listed_is_reported_skipped_with_exit_1(
        built: tuple[Path, list[Path]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, verb: str) -> None:
    index_dir, _ = built
    write_pngs(tmp_path / "more", 4, seed=1)  # two images in more/a, two in more/b
    refuse_listing(monkeypatch, tmp_path / "more" / "a")
    target = ["--out", str(tmp_path / "idx2")] if verb == "build" else []
    args = [verb, *([str(index_dir)] if verb == "add" else []), str(tmp_path / "more"), *target, "-q"]
    result = CliRunner().invoke(cli.index_group, args)
    assert result.exit_code == 1, result.output
    assert f"skipped: {tmp_path / 'more' / 'a'}: cannot list folder (Permission denied)" in result.stderr
    assert f"{'indexed' if verb == 'build' else 'added'} 2 of 2 items" in result.stdout


def test_a_query_folder_that_cannot_be_listed_is_in_skipped_with_exit_1(
        built: tuple[Path, list[Path]], monkeypatch: pytest.MonkeyPatch) -> None:
    index_dir, paths = built
    locked = paths[0].parent.parent / "a"
    refuse_listing(monkeypatch, locked)
    code, answer = _query(str(index_dir), str(paths[0].parent.parent), "-k", "1")
    assert code == 1 and len(answer["results"]) == 3, "the other folder's images are answered"
    assert answer["skipped"] == [{"path": str(locked),
                                  "error": f"{locked}: cannot list folder (Permission denied)"}]


def test_a_build_whose_only_folder_cannot_be_listed_says_so(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    write_pngs(tmp_path / "db", 2)
    refuse_listing(monkeypatch, tmp_path / "db")
    result = CliRunner().invoke(cli.index_group, ["build", str(tmp_path / "db"), "--out",
                                                  str(tmp_path / "idx"), "-q"])
    assert result.exit_code == 1
    assert f"no items to index; {tmp_path / 'db'}: cannot list folder (Permission denied)" in result.stderr


def test_build_resumes_after_an_interruption(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    write_pngs(tmp_path / "db", 5)
    args = ["build", str(tmp_path / "db"), "--out", str(tmp_path / "idx"), "-q",
            "--shard-size", "2"]
    monkeypatch.setattr(cli, "load_embedder", lambda *a: FakeEmbedder(crash_on_call=2))
    assert CliRunner().invoke(cli.index_group, args).exit_code != 0
    survivor = FakeEmbedder()
    monkeypatch.setattr(cli, "load_embedder", lambda *a: survivor)
    assert CliRunner().invoke(cli.index_group, args).exit_code == 0
    assert survivor.items_embedded == 3
    shutil.rmtree(tmp_path / "db")
    info = CliRunner().invoke(cli.index_group, ["info", str(tmp_path / "idx"), "--json"])
    assert json.loads(info.output)["count"] == 5


@pytest.mark.skipif(faiss.get_num_gpus() > 0, reason="checks the no-GPU refusal")
def test_build_on_cuda_without_gpu_fails_before_loading_the_model(tmp_path: Path) -> None:
    write_pngs(tmp_path / "db", 2)
    result = CliRunner().invoke(cli.index_group, ["build", str(tmp_path / "db"), "--out",
                                                  str(tmp_path / "idx"), "--device", "cuda"])
    assert result.exit_code == 1 and "no GPU" in result.output
    assert loaded_models == []
