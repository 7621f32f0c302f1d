"""Log messages: a library user controls them through `logging`; `blur-retrieval` shows them on
stderr, INFO by default, DEBUG with -v, WARNING and above under a command's -q."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from fakes import FakeEmbedder, refuse_listing, write_pngs

from benchmark.commands import index as indexer_cli
from benchmark.commands.main import PACKAGE_LOGGERS, main
from retrieval.images import iter_image_files


def test_every_package_stays_silent_until_the_program_configures_logging() -> None:
    for name in PACKAGE_LOGGERS:
        assert any(isinstance(h, logging.NullHandler) for h in logging.getLogger(name).handlers), name


def test_a_library_user_silences_a_package_with_its_logger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    write_pngs(tmp_path / "tree", 2)  # one image in each of tree/a and tree/b
    refuse_listing(monkeypatch, tmp_path / "tree" / "a")
    package = logging.getLogger("retrieval")
    before = package.level
    package.setLevel(logging.ERROR)
    try:
        assert len(list(iter_image_files(tmp_path / "tree"))) == 1
    finally:
        package.setLevel(before)
    assert caplog.records == []
    assert len(list(iter_image_files(tmp_path / "tree"))) == 1
    (record,) = caplog.records
    assert record.name == "retrieval.images" and "cannot list folder" in record.getMessage()


def _interrupted_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Build arguments whose first run stopped after one of three shards, and the fake model."""
    write_pngs(tmp_path / "db", 5)
    args = ["index", "build", str(tmp_path / "db"), "--out", str(tmp_path / "idx"), "--shard-size", "2"]
    monkeypatch.setattr(indexer_cli, "load_embedder", lambda *a: FakeEmbedder(crash_on_call=2))
    assert CliRunner().invoke(main, [*args, "-q"]).exit_code != 0
    monkeypatch.setattr(indexer_cli, "load_embedder", lambda *a: FakeEmbedder())
    return args


def _invoke(*args: str) -> Result:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result


def test_info_messages_show_on_stderr_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = _invoke(*_interrupted_build(tmp_path, monkeypatch))
    assert "INFO: " in result.stderr and "2 of 5 items already embedded" in result.stderr
    assert "already embedded" not in result.stdout and "indexed 5 of 5 items" in result.stdout
    assert "DEBUG: " not in result.stderr


@pytest.mark.parametrize("verbose", [[], ["-v"]])
def test_quiet_hides_info_messages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   verbose: list[str]) -> None:
    result = _invoke(*verbose, *_interrupted_build(tmp_path, monkeypatch), "-q")
    assert result.stderr == "", "no message below WARNING (a command's -q wins over -v), no progress bar"
    assert "indexed 5 of 5 items" in result.stdout


def test_verbose_adds_debug_messages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = _invoke("-v", *_interrupted_build(tmp_path, monkeypatch))
    assert "DEBUG: FAISS IDMap2,Flat over 5 vectors" in result.stderr
    assert "INFO: " in result.stderr and "DEBUG: " not in result.stdout


def test_a_command_leaves_the_package_loggers_as_it_found_them(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    loggers = [logging.getLogger(name) for name in PACKAGE_LOGGERS]
    before = [(logger.level, list(logger.handlers)) for logger in loggers]
    _invoke("-v", *_interrupted_build(tmp_path, monkeypatch), "-q")
    assert [(logger.level, list(logger.handlers)) for logger in loggers] == before


@pytest.mark.parametrize("quiet", [[], ["-q"]])
def test_query_json_keeps_stdout_pure_json_and_reports_an_unlistable_folder_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quiet: list[str]) -> None:
    monkeypatch.setattr(indexer_cli, "load_embedder", lambda *a: FakeEmbedder())
    write_pngs(tmp_path / "db", 3)
    _invoke("index", "build", str(tmp_path / "db"), "--out", str(tmp_path / "idx"), "-q")
    locked = tmp_path / "db" / "locked"
    write_pngs(locked, 1, seed=1)
    refuse_listing(monkeypatch, locked)
    result = CliRunner().invoke(main, ["query", str(tmp_path / "idx"), str(tmp_path / "db"), "-k", "1",
                                       "--json", *quiet])
    assert result.exit_code == 1, "a skipped input"
    answer = json.loads(result.stdout)  # nothing but the JSON answer on stdout
    assert len(answer["results"]) == 3 and [entry["path"] for entry in answer["skipped"]] == [str(locked)]
    assert "cannot list folder" not in result.stderr, "reported in the answer, not again as a warning"
