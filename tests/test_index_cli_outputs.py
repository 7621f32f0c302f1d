"""Unusable output paths, JSON error answers, symbolic link loops and failed builds: each ends in
a clear message and the documented exit status, never a traceback or leftovers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from fakes import FakeEmbedder, write_pngs

from benchmark.commands import index as cli
from indexer.index import BUILD_DIR_NAME


@pytest.fixture(autouse=True)
def fake_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "load_embedder", lambda *args: FakeEmbedder())


@pytest.fixture
def built(tmp_path: Path) -> tuple[Path, list[Path]]:
    paths = write_pngs(tmp_path / "db", 3)
    result = CliRunner().invoke(cli.index_group, ["build", str(tmp_path / "db"), "--out",
                                                  str(tmp_path / "idx"), "-q"])
    assert result.exit_code == 0, result.output
    return tmp_path / "idx", paths


@pytest.mark.parametrize(("out", "problem"), [("a_file", "exists and is not a folder"),
                                              ("a_file/idx", "a_file is a file")])
def test_build_into_a_path_that_cannot_be_a_folder_is_a_usage_error(
        tmp_path: Path, out: str, problem: str) -> None:
    write_pngs(tmp_path / "db", 2)
    (tmp_path / "a_file").write_text("keep me")
    result = CliRunner().invoke(cli.index_group, ["build", str(tmp_path / "db"), "--out",
                                                  str(tmp_path / out), "-q"])
    assert result.exit_code == 2 and problem in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert (tmp_path / "a_file").read_text() == "keep me"


def test_an_unusable_grid_path_is_refused_before_any_search(built: tuple[Path, list[Path]],
                                                           tmp_path: Path) -> None:
    index_dir, paths = built
    (tmp_path / "a_file").write_text("")
    result = CliRunner().invoke(cli.query_command, [str(index_dir), str(paths[0]), "-k", "1",
                                                    "--grid", str(tmp_path / "a_file" / "g.png")])
    assert result.exit_code == 2 and "--grid" in result.stderr
    assert "a_file: exists and is not a folder" in result.stderr


def test_a_grid_that_fails_to_write_keeps_the_json_answer(built: tuple[Path, list[Path]],
                                                          tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(rows: object, path: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(cli, "draw_grid", refuse)
    index_dir, paths = built
    result = CliRunner().invoke(cli.query_command, [str(index_dir), str(paths[0]), "-k", "1",
                                                    "--json", "--grid", str(tmp_path / "g.png")])
    assert result.exit_code == 2
    answer = json.loads(result.stdout)
    assert answer["results"][0]["hits"][0]["path"] == str(paths[0].resolve())
    assert "cannot write the contact sheet (Permission denied)" in answer["error"]
    assert "cannot write the contact sheet" in result.stderr


@pytest.mark.parametrize("args", [["-k", "0"], ["-k", "many"], ["--no-such-option"]])
def test_usage_errors_under_json_print_a_json_error(built: tuple[Path, list[Path]],
                                                    args: list[str]) -> None:
    index_dir, paths = built
    result = CliRunner().invoke(cli.query_command, [str(index_dir), str(paths[0]), "--json", *args])
    assert result.exit_code == 2
    assert set(json.loads(result.stdout)) == {"error"} and result.stderr


def test_info_of_a_folder_that_is_no_index_under_json_prints_a_json_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli.index_group, ["info", str(tmp_path), "--json"])
    assert result.exit_code == 2
    assert "not an index folder" in json.loads(result.stdout)["error"]


def test_without_json_errors_print_no_json(built: tuple[Path, list[Path]]) -> None:
    index_dir, paths = built
    result = CliRunner().invoke(cli.query_command, [str(index_dir), str(paths[0]), "-k", "0"])
    assert result.exit_code == 2 and result.stdout == ""


def test_a_symlink_loop_query_is_reported_as_a_loop(built: tuple[Path, list[Path]],
                                                    tmp_path: Path) -> None:
    index_dir, _ = built
    loop = tmp_path / "loop.png"
    os.symlink(loop, loop)
    result = CliRunner().invoke(cli.query_command, [str(index_dir), str(loop), "-k", "1", "--json"])
    assert result.exit_code == 1
    (skipped,) = json.loads(result.stdout)["skipped"]
    assert "symbolic link loop" in skipped["error"] and "no such file" not in skipped["error"]


def test_a_build_in_which_every_file_fails_leaves_nothing_behind(tmp_path: Path) -> None:
    (tmp_path / "db").mkdir()
    for name in ("a.png", "b.png"):
        (tmp_path / "db" / name).write_bytes(b"not a png")
    result = CliRunner().invoke(cli.index_group, ["build", str(tmp_path / "db"), "--out",
                                                  str(tmp_path / "idx"), "-q"])
    assert result.exit_code == 1 and "none of the 2 items could be embedded" in result.output
    assert not (tmp_path / "idx" / BUILD_DIR_NAME).exists()
    assert not (tmp_path / "idx").exists()


def test_a_failed_build_into_an_existing_folder_keeps_the_folder(tmp_path: Path) -> None:
    (tmp_path / "db").mkdir()
    (tmp_path / "db" / "a.png").write_bytes(b"not a png")
    (tmp_path / "idx").mkdir()
    CliRunner().invoke(cli.index_group, ["build", str(tmp_path / "db"), "--out",
                                         str(tmp_path / "idx"), "-q"])
    assert (tmp_path / "idx").is_dir() and not (tmp_path / "idx" / BUILD_DIR_NAME).exists()
