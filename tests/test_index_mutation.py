"""Adding and removing keep ids stable; vectors of another model are refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from fakes import FakeEmbedder, random_unit_vectors, virtual_source, write_pngs

from indexer.api import build_index, open_index, source_from_folder
from indexer.errors import (
    FingerprintMismatchError,
    InvalidQueryError,
    InvalidVectorsError,
    SourceError,
    UnknownItemError,
    UnsupportedOperationError,
)

DIM = 16
MODEL = "fake-model-v1"


@pytest.fixture()
def index_dir(tmp_path: Path) -> Path:
    build_index(virtual_source(10), FakeEmbedder(dim=DIM), tmp_path / "idx", progress=False)
    return tmp_path / "idx"


def _self_ids(index, embedder: FakeEmbedder, rows: list[int]) -> list[int]:
    _, ids = index.search_vectors(embedder.vectors_of([{"row": r} for r in rows]), k=1)
    return ids[:, 0].tolist()


def test_add_and_remove_keep_ids_stable_and_never_reuse_them(index_dir: Path) -> None:
    embedder = FakeEmbedder(dim=DIM)
    index = open_index(index_dir, mmap=False)
    removed = index.remove(ids=[3, 9])
    assert removed.tolist() == [3, 9]
    result = index.add(virtual_source(4, start=100), embedder, progress=False)
    assert result.ids.tolist() == [10, 11, 12, 13], "ids continue after the highest ever given"
    index.save()

    reopened = open_index(index_dir)
    assert reopened.count == 12
    assert reopened.metadata.column("id").to_pylist() == [0, 1, 2, 4, 5, 6, 7, 8, 10, 11, 12, 13]
    assert _self_ids(reopened, embedder, [0, 4, 8, 100, 103]) == [0, 4, 8, 10, 13]
    _, ids = reopened.search_vectors(embedder.vectors_of([{"row": 3}, {"row": 9}]), k=12)
    assert not {3, 9} & set(ids.ravel().tolist()), "removed vectors are never returned"
    assert reopened.info()["next_id"] == 14


def test_remove_by_path(index_dir: Path) -> None:
    index = open_index(index_dir, mmap=False)
    assert index.remove(paths=["virtual/2", "virtual/5"]).tolist() == [2, 5]
    assert index.rows(np.array([2, 5, 6])) == [None, None, {"id": 6, "path": "virtual/6",
                                                            "label": 6}]


def test_remove_of_unknown_items_removes_nothing(index_dir: Path) -> None:
    index = open_index(index_dir, mmap=False)
    with pytest.raises(UnknownItemError, match=r"id 42.*virtual/nope"):
        index.remove(ids=[1, 42], paths=["virtual/nope"])
    assert index.count == 10
    with pytest.raises(InvalidQueryError, match="nothing to remove"):
        index.remove()


def test_remove_by_relative_or_absolute_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                             ) -> None:
    paths = write_pngs(tmp_path / "db", 4)
    build_index(source_from_folder(tmp_path / "db"), FakeEmbedder(), tmp_path / "idx",
                progress=False)
    monkeypatch.chdir(tmp_path)
    index = open_index(tmp_path / "idx", mmap=False)
    stored = index.metadata.column("path").to_pylist()
    assert stored == sorted(stored) and all(Path(p).is_absolute() for p in stored)
    expected_id = stored.index(str(paths[1].resolve()))
    relative = str(paths[1].relative_to(tmp_path))
    assert index.remove(paths=[relative]).tolist() == [expected_id]
    assert index.count == 3
    assert str(paths[1].resolve()) not in index.metadata.column("path").to_pylist()


def test_added_metadata_columns_are_merged_with_nulls(index_dir: Path) -> None:
    index = open_index(index_dir, mmap=False)
    rows = pa.table({"path": ["extra/0"], "camera": ["cam-7"]})
    (new_id,) = index.add_vectors(random_unit_vectors(1, DIM, seed=3), rows, MODEL).tolist()
    assert index.rows(np.array([0, new_id])) == [
        {"id": 0, "path": "virtual/0", "label": 0, "camera": None},
        {"id": 10, "path": "extra/0", "label": None, "camera": "cam-7"},
    ]


def test_clashing_metadata_types_are_refused_before_any_change(index_dir: Path) -> None:
    index = open_index(index_dir, mmap=False)
    rows = pa.table({"path": ["x"], "label": ["seven"]})
    with pytest.raises(SourceError, match="label|clash"):
        index.add_vectors(random_unit_vectors(1, DIM), rows, MODEL)
    assert index.count == 10 and index.metadata.num_rows == 10


def test_vectors_of_another_model_are_refused(index_dir: Path) -> None:
    index = open_index(index_dir, mmap=False)
    other = FakeEmbedder(dim=DIM, fingerprint="other-model")
    with pytest.raises(FingerprintMismatchError, match="other-model"):
        index.add_vectors(random_unit_vectors(1, DIM), pa.table({"path": ["x"]}), "other-model")
    with pytest.raises(FingerprintMismatchError):
        index.add(virtual_source(2, start=50), other, progress=False)
    assert other.calls == 0, "refused before any embedding work"
    with pytest.raises(FingerprintMismatchError):
        open_index(index_dir).search_images([{"row": 1}], other, k=1)
    assert index.count == 10


def test_refusal_names_the_model_that_built_the_index_and_the_way_out(tmp_path: Path) -> None:
    """After an upgrade a shipped name resolves to new weights: the name alone matches, so the
    message must say which model built the index and what to do."""
    build_index(virtual_source(4), FakeEmbedder(dim=DIM), tmp_path / "idx", progress=False,
                model_name="blur-aware")
    upgraded = FakeEmbedder(dim=DIM, fingerprint="blur-aware-v2")
    with pytest.raises(FingerprintMismatchError,
                       match=r"'blur-aware-v2'.*\(model 'blur-aware'\).*build the index again"):
        open_index(tmp_path / "idx").search_images([{"row": 1}], upgraded, k=1)


@pytest.mark.parametrize(("vectors", "problem"), [
    (np.ones((2, DIM), np.float32), "L2-normalised"),
    (np.full((1, DIM), np.nan, np.float32), "L2-normalised"),
    (random_unit_vectors(2, DIM + 1), r"\(n, 16\)"),
])
def test_bad_vectors_are_refused(index_dir: Path, vectors: np.ndarray, problem: str) -> None:
    index = open_index(index_dir, mmap=False)
    rows = pa.table({"path": [f"p{i}" for i in range(len(vectors))]})
    with pytest.raises(InvalidVectorsError, match=problem):
        index.add_vectors(vectors, rows, MODEL)


def test_row_count_must_match_vectors(index_dir: Path) -> None:
    index = open_index(index_dir, mmap=False)
    with pytest.raises(InvalidVectorsError, match="2 vectors but 1 metadata rows"):
        index.add_vectors(random_unit_vectors(2, DIM), pa.table({"path": ["a"]}), MODEL)


def test_index_type_without_removal_says_so(tmp_path: Path) -> None:
    build_index(virtual_source(50), FakeEmbedder(dim=DIM), tmp_path / "idx", factory="HNSW8",
                progress=False)
    index = open_index(tmp_path / "idx", mmap=False)
    assert index.manifest.factory == "IDMap2,HNSW8"
    with pytest.raises(UnsupportedOperationError, match="remove_ids not implemented"):
        index.remove(ids=[0])
    assert index.count == 50
