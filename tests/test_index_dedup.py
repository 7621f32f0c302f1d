"""`index add` skips files the index already holds; a manifest whose next_id would reuse ids is
refused."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from fakes import FakeEmbedder, write_pngs
from PIL import Image

from benchmark.commands import index as cli
from indexer import store
from indexer.api import build_index, open_index, source_from_folder
from indexer.dedup import CONTENT_COLUMN
from indexer.errors import IndexFormatError
from retrieval.fileio import file_sha256


@pytest.fixture(autouse=True)
def fake_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "load_embedder", lambda *args: FakeEmbedder())


@pytest.fixture
def built(tmp_path: Path) -> Path:
    write_pngs(tmp_path / "db", 4)
    result = CliRunner().invoke(cli.index_group, ["build", str(tmp_path / "db"), "--out",
                                                  str(tmp_path / "idx"), "-q"])
    assert result.exit_code == 0, result.output
    return tmp_path / "idx"


def _add(index_dir: Path, folder: Path, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli.index_group, ["add", str(index_dir), str(folder), "-q", *extra])
    return result.exit_code, result.output


def test_adding_the_same_folder_again_adds_nothing_and_says_so(built: Path, tmp_path: Path) -> None:
    code, output = _add(built, tmp_path / "db")
    assert code == 0
    assert "added 0 of 4 items" in output and "4 already in the index" in output
    assert open_index(built).count == 4


def test_allow_duplicates_adds_them_again(built: Path, tmp_path: Path) -> None:
    code, output = _add(built, tmp_path / "db", "--allow-duplicates")
    assert code == 0 and "added 4 of 4 items" in output
    assert open_index(built).count == 8


def test_a_file_changed_in_place_is_added_and_new_files_beside_old_ones_too(
        built: Path, tmp_path: Path) -> None:
    changed = sorted((tmp_path / "db").rglob("*.png"))[0]
    Image.new("RGB", (8, 8), (1, 2, 3)).save(changed)
    write_pngs(tmp_path / "db" / "c", 1, seed=5)
    code, output = _add(built, tmp_path / "db")
    assert code == 0 and "added 2 of 5 items" in output and "3 already in the index" in output
    assert open_index(built).count == 6


def test_an_index_without_content_hashes_falls_back_to_the_path(built: Path, tmp_path: Path) -> None:
    """Indexes made before the hash column: a file whose path is indexed counts as present."""
    table = built / store.read_manifest(built).files["metadata"].name
    pq.write_table(open_index(built).metadata.drop_columns([CONTENT_COLUMN]), table)
    raw = json.loads((built / store.MANIFEST_NAME).read_text())
    raw["files"]["metadata"].update(sha256=file_sha256(table), size=table.stat().st_size)
    (built / store.MANIFEST_NAME).write_text(json.dumps(raw))
    Image.new("RGB", (8, 8), (1, 2, 3)).save(sorted((tmp_path / "db").rglob("*.png"))[0])
    code, output = _add(built, tmp_path / "db")
    assert code == 0 and "added 0 of 4 items" in output


def test_the_api_reports_duplicates_by_source_position(tmp_path: Path) -> None:
    write_pngs(tmp_path / "db", 3)
    source = source_from_folder(tmp_path / "db")
    index, _ = build_index(source, FakeEmbedder(), tmp_path / "idx", progress=False)
    write_pngs(tmp_path / "db" / "z", 1, seed=4)  # sorts after the others: position 3
    result = index.add(source_from_folder(tmp_path / "db"), FakeEmbedder(), progress=False)
    assert result.duplicates.tolist() == [0, 1, 2]
    assert result.ordinals.tolist() == [3] and result.ids.tolist() == [3]


def test_a_next_id_below_an_id_in_use_is_refused_on_open(built: Path) -> None:
    raw = json.loads((built / store.MANIFEST_NAME).read_text())
    raw["next_id"] = 2
    (built / store.MANIFEST_NAME).write_text(json.dumps(raw))
    with pytest.raises(IndexFormatError, match="next_id 2 is not above the largest id in use"):
        open_index(built)
    result = CliRunner().invoke(cli.index_group, ["info", str(built)])
    assert result.exit_code == 2 and "next_id 2" in result.output
