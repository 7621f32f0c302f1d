"""File names that are not UTF-8 are indexed, stored losslessly and found again."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from fakes import FakeEmbedder, write_pngs

from benchmark.commands import index as cli
from indexer.api import build_index, open_index, source_from_folder
from indexer.sources import file_path, printable

ODD_NAME = b"x_\xff.png"


@pytest.fixture
def odd_folder(tmp_path: Path) -> tuple[Path, str]:
    """One good PNG and a copy of it whose name holds the byte 0xff (not UTF-8)."""
    (good,) = write_pngs(tmp_path / "db", 1)
    odd = os.fsdecode(os.fsencode(tmp_path / "db") + b"/" + ODD_NAME)
    shutil.copyfile(good, odd)
    return tmp_path / "db", odd


@pytest.fixture(autouse=True)
def fake_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "load_embedder", lambda *args: FakeEmbedder())


def test_printable_escapes_only_bytes_that_are_not_utf8() -> None:
    assert printable("caf\u00e9.png") == "caf\u00e9.png"
    assert printable(os.fsdecode(ODD_NAME)) == "x_\\xff.png"


def test_a_non_utf8_name_is_indexed_and_reads_back_to_the_same_file(
        odd_folder: tuple[Path, str], tmp_path: Path) -> None:
    folder, odd = odd_folder
    index, result = build_index(source_from_folder(folder), FakeEmbedder(), tmp_path / "idx",
                                progress=False)
    assert len(result.ids) == 2 and result.errors == []
    rows = open_index(tmp_path / "idx").metadata.to_pylist()
    (odd_row,) = [row for row in rows if row["path_bytes"] is not None]
    assert odd_row["path"] == printable(odd) and odd_row["path"].endswith("x_\\xff.png")
    assert file_path(odd_row) == odd and Path(file_path(odd_row)).is_file()
    good_row = next(row for row in rows if row["path_bytes"] is None)
    assert file_path(good_row) == good_row["path"]


def test_build_add_query_and_remove_with_a_non_utf8_name_through_the_cli(
        odd_folder: tuple[Path, str], tmp_path: Path) -> None:
    folder, odd = odd_folder
    runner = CliRunner()
    built = runner.invoke(cli.index_group, ["build", str(folder), "--out", str(tmp_path / "idx"), "-q"])
    assert built.exit_code == 0, built.output
    assert "indexed 2 of 2 items" in built.output

    (tmp_path / "more").mkdir()
    shutil.copyfile(odd, os.fsencode(tmp_path / "more") + b"/" + ODD_NAME)
    added = runner.invoke(cli.index_group, ["add", str(tmp_path / "idx"), str(tmp_path / "more"), "-q"])
    assert added.exit_code == 0 and "added 1 of 1 items" in added.output

    found = runner.invoke(cli.query_command, [str(tmp_path / "idx"), odd, "-k", "3", "--json",
                                              "--grid", str(tmp_path / "grid.png")])
    assert found.exit_code == 0, found.output
    (answer,) = json.loads(found.stdout)["results"]
    assert answer["query"] == printable(odd)
    assert printable(odd) in [hit["path"] for hit in answer["hits"]]
    assert (tmp_path / "grid.png").is_file()

    removed = runner.invoke(cli.index_group, ["remove", str(tmp_path / "idx"), "--path", odd])
    assert removed.exit_code == 0 and "removed 1 vectors; 2 remain" in removed.output
