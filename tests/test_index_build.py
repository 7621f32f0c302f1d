"""Build -> open -> search round trips over tiny PNG folders and the fake embedder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from fakes import FakeEmbedder, SimulatedCrash, virtual_source, write_pngs

from indexer.api import build_index, open_index, source_from_folder
from indexer.errors import (
    IndexExistsError,
    InvalidFactoryError,
    InvalidQueryError,
    SourceError,
)
from indexer.index import BUILD_DIR_NAME
from indexer.store import MANIFEST_NAME


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    write_pngs(tmp_path / "db", 30)
    return tmp_path / "db"


def test_every_database_image_finds_itself_at_rank_1(folder: Path, tmp_path: Path) -> None:
    embedder = FakeEmbedder()
    source = source_from_folder(folder)
    built, result = build_index(source, embedder, tmp_path / "idx", progress=False)
    assert result.errors == [] and len(result.ids) == 30

    index = open_index(tmp_path / "idx")
    scores, ids = index.search_vectors(embedder.vectors_of(source.items), k=5)
    assert ids.shape == scores.shape == (30, 5)
    np.testing.assert_array_equal(ids[:, 0], np.arange(30))
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    assert np.all(np.diff(scores, axis=1) <= 1e-6), "hits must come best first"

    found = index.search_images(source.items, embedder, k=3)
    assert found.errors == []
    assert [r.hits[0].path for r in found.results] == source.items
    assert [h.rank for h in found.results[0].hits] == [1, 2, 3]


def test_unreadable_files_are_reported_and_the_rest_indexed(folder: Path, tmp_path: Path) -> None:
    (folder / "broken.png").write_bytes(b"not an image at all")
    (folder / "empty.png").write_bytes(b"")
    index, result = build_index(source_from_folder(folder), FakeEmbedder(), tmp_path / "idx",
                                progress=False)
    assert index.count == 30
    messages = [message for _, message in result.errors]
    assert len(messages) == 2
    assert any("broken.png" in m for m in messages) and any("empty.png" in m for m in messages)
    assert all(index.rows(np.array([i]))[0]["path"].endswith(".png") for i in result.ids)


def test_metadata_keeps_source_columns_and_ids(tmp_path: Path) -> None:
    index, _ = build_index(virtual_source(12), FakeEmbedder(), tmp_path / "idx", progress=False)
    table = open_index(tmp_path / "idx").metadata
    assert table.column_names == ["id", "path", "label"]
    assert table.column("id").to_pylist() == list(range(12))
    assert table.column("label").to_pylist() == [n % 7 for n in range(12)]


def test_manifest_records_model_and_layout(tmp_path: Path) -> None:
    embedder = FakeEmbedder(dim=24)
    build_index(virtual_source(10), embedder, tmp_path / "idx", progress=False,
                model_name="my-model")
    manifest = json.loads((tmp_path / "idx" / MANIFEST_NAME).read_text())
    assert manifest["format_version"] == 1
    assert manifest["model"] == {"name": "my-model", "fingerprint": "fake-model-v1",
                                 "config": {"name": "fake", "dim": 24}}
    assert (manifest["dim"], manifest["count"], manifest["next_id"]) == (24, 10, 10)
    assert manifest["factory"] == "IDMap2,Flat" and manifest["metric"] == "inner_product"
    assert manifest["tuned"] == {}
    assert manifest["created"] and manifest["generation"] == 1
    assert sorted(p.name for p in (tmp_path / "idx").iterdir() if not p.name.startswith(".")) \
        == ["index.1.faiss", "manifest.json", "metadata.1.parquet"]
    assert not (tmp_path / "idx" / BUILD_DIR_NAME).exists(), "shards are dropped once saved"


def test_resumed_build_equals_uninterrupted_build(folder: Path, tmp_path: Path) -> None:
    source = source_from_folder(folder)
    build_index(source, FakeEmbedder(), tmp_path / "straight", shard_size=7, progress=False)

    with pytest.raises(SimulatedCrash):
        build_index(source, FakeEmbedder(crash_on_call=3), tmp_path / "resumed", shard_size=7,
                    progress=False)
    assert not (tmp_path / "resumed" / MANIFEST_NAME).exists()
    second = FakeEmbedder()
    build_index(source, second, tmp_path / "resumed", shard_size=7, progress=False)
    assert second.items_embedded == 30 - 2 * 7, "the two finished shards are not embedded again"

    straight = json.loads((tmp_path / "straight" / MANIFEST_NAME).read_text())["files"]
    resumed = json.loads((tmp_path / "resumed" / MANIFEST_NAME).read_text())["files"]
    assert straight["index"]["sha256"] == resumed["index"]["sha256"]
    assert open_index(tmp_path / "straight").metadata.equals(
        open_index(tmp_path / "resumed").metadata)


def test_existing_index_is_not_overwritten(tmp_path: Path) -> None:
    build_index(virtual_source(5), FakeEmbedder(), tmp_path / "idx", progress=False)
    with pytest.raises(IndexExistsError, match="idx"):
        build_index(virtual_source(5), FakeEmbedder(), tmp_path / "idx", progress=False)


def test_source_with_nothing_to_index_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no items"):
        build_index(source_from_folder(tmp_path / "empty"), FakeEmbedder(), tmp_path / "idx")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"junk")
    with pytest.raises(SourceError, match="x.png"):
        build_index(source_from_folder(tmp_path / "bad"), FakeEmbedder(), tmp_path / "idx2",
                    progress=False)


def test_bad_factory_string_is_named(tmp_path: Path) -> None:
    with pytest.raises(InvalidFactoryError, match="NotAnIndex"):
        build_index(virtual_source(5), FakeEmbedder(), tmp_path / "idx", factory="NotAnIndex",
                    progress=False)


@pytest.mark.parametrize("k", [0, -3, 11, True, 2.5])
def test_k_out_of_range_is_refused(tmp_path: Path, k: object) -> None:
    build_index(virtual_source(10), FakeEmbedder(), tmp_path / "idx", progress=False)
    index = open_index(tmp_path / "idx")
    with pytest.raises(InvalidQueryError, match="k"):
        index.search_vectors(np.ones((1, 16), np.float32) / 4.0, k=k)


def test_query_dimension_must_match(tmp_path: Path) -> None:
    build_index(virtual_source(10), FakeEmbedder(), tmp_path / "idx", progress=False)
    with pytest.raises(InvalidQueryError, match=r"\(n, 16\)"):
        open_index(tmp_path / "idx").search_vectors(np.ones((2, 8), np.float32), k=1)


def test_index_folder_can_be_moved(folder: Path, tmp_path: Path) -> None:
    build_index(source_from_folder(folder), FakeEmbedder(), tmp_path / "idx", progress=False)
    shutil.move(tmp_path / "idx", tmp_path / "moved")
    assert open_index(tmp_path / "moved").count == 30
