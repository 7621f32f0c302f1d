"""Sources (folder, manifest, in-memory rows) and metadata lookups by id and path."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from fakes import write_pngs

from indexer import metadata
from indexer.errors import SourceError
from indexer.sources import Source, source_from, source_from_folder


def test_folder_source_lists_images_recursively_with_absolute_paths(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_pngs(tmp_path / "db", 4)
    (tmp_path / "db" / "notes.txt").write_text("not an image")
    monkeypatch.chdir(tmp_path)
    source = source_from_folder("db")
    expected = [str((tmp_path / "db" / sub / f"img-{i:04d}.png").resolve())
                for sub, i in [("a", 1), ("a", 3), ("b", 0), ("b", 2)]]
    assert source.items == expected
    assert source.metadata.column("path").to_pylist() == expected
    assert source.origin == "db"


def test_folder_source_needs_a_folder(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="not a folder"):
        source_from_folder(tmp_path / "missing")


@pytest.mark.parametrize(("table", "problem"), [
    (pa.table({"path": ["a"], "id": [1]}), "reserved"),
    (pa.table({"file": ["a"]}), "no 'path' column"),
    (pa.table({"path": ["a", "b"]}), "1 items but 2 metadata rows"),
])
def test_source_validates_its_metadata(table: pa.Table, problem: str) -> None:
    with pytest.raises(SourceError, match=problem):
        Source(items=["a"], metadata=table, origin="src.parquet")


@dataclass
class _Row:
    path: Path | None


def _fake_manifest(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    def manifest_items(path):
        items = [_Row(root / "x.png"), _Row(None)]
        return items, pa.table({"image_id": [5, 6], "path": ["x.png", None], "role": ["db", "db"]})

    import retrieval.manifest

    monkeypatch.setattr(retrieval.manifest, "manifest_items", manifest_items)


def test_manifest_source_keeps_labels_and_makes_paths_absolute(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_manifest(monkeypatch, tmp_path)
    (tmp_path / "manifest.parquet").write_bytes(b"stand-in")
    for location in (tmp_path / "manifest.parquet", tmp_path):
        source = source_from(location)
        assert source.metadata.to_pylist() == [
            {"image_id": 5, "path": str(tmp_path / "x.png"), "role": "db"},
            {"image_id": 6, "path": None, "role": "db"},
        ]
        assert len(source.items) == 2


def test_source_from_rejects_other_files(tmp_path: Path) -> None:
    (tmp_path / "list.txt").write_text("a.png\n")
    with pytest.raises(SourceError, match=r"list\.txt"):
        source_from(tmp_path / "list.txt")
    with pytest.raises(SourceError, match="no such manifest"):
        source_from(tmp_path / "absent.parquet")


def _table() -> pa.Table:
    rows = pa.table({"path": ["a.png", "b.png", None, "a.png"], "label": [1, 2, 3, 4]})
    return metadata.attach_ids(rows, np.array([0, 3, 7, 9]))


def test_rows_for_ids_marks_unknown_and_padding_ids() -> None:
    rows = metadata.rows_for_ids(_table(), np.array([[9, -1], [4, 0]]))
    assert rows == [{"id": 9, "path": "a.png", "label": 4}, None, None,
                    {"id": 0, "path": "a.png", "label": 1}]
    assert metadata.rows_for_ids(_table().slice(0, 0), np.array([1])) == [None]


def test_ids_of_paths_finds_every_row_of_a_path() -> None:
    ids, missing = metadata.ids_of_paths(_table(), ["a.png", "zzz.png"])
    assert ids.tolist() == [0, 9] and missing == ["zzz.png"]


def test_drop_ids_keeps_order() -> None:
    assert metadata.ids_column(metadata.drop_ids(_table(), np.array([3, 9]))).tolist() == [0, 7]
