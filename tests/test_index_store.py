"""On-disk safety: atomic generations, checksums, format versions, read-only shared opens."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
from fakes import FakeEmbedder, SimulatedCrash, random_unit_vectors, virtual_source

from indexer import store
from indexer.api import build_index, open_index
from indexer.errors import (
    ConcurrentUpdateError,
    IndexChecksumError,
    IndexFormatError,
    ReadOnlyIndexError,
)
from retrieval.fileio import file_sha256

DIM = 16


@pytest.fixture()
def index_dir(tmp_path: Path) -> Path:
    build_index(virtual_source(20), FakeEmbedder(dim=DIM), tmp_path / "idx", progress=False)
    return tmp_path / "idx"


def _add_three(index_dir: Path) -> None:
    index = open_index(index_dir, mmap=False)
    rows = pa.table({"path": ["new/0", "new/1", "new/2"]})
    index.add_vectors(random_unit_vectors(3, DIM, seed=5), rows, "fake-model-v1")
    index.save()


def _crash(*args: object, **kwargs: object) -> None:
    raise SimulatedCrash("power cut")


def _assert_intact(index_dir: Path, count: int) -> None:
    index = open_index(index_dir)
    assert index.count == count
    probe = FakeEmbedder(dim=DIM).vectors_of([{"row": 4}])
    _, ids = index.search_vectors(probe, k=1)
    assert ids[0, 0] == 4


def test_crash_before_the_manifest_commit_keeps_the_old_index(index_dir: Path,
                                                              monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    monkeypatch.setattr(store, "write_json_atomic", _crash)
    with pytest.raises(SimulatedCrash):
        _add_three(index_dir)
    monkeypatch.undo()
    _assert_intact(index_dir, count=20)

    _add_three(index_dir)  # the next save reuses the abandoned generation number cleanly
    assert open_index(index_dir).count == 23
    names = sorted(p.name for p in index_dir.iterdir() if not p.name.startswith("."))
    assert names == ["index.2.faiss", "manifest.json", "metadata.2.parquet"]


def test_crash_while_writing_the_index_file_keeps_the_old_index(
        index_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def half_written(index: object, path: str) -> None:
        Path(path).write_bytes(b"partial")
        raise SimulatedCrash("killed mid-write")

    monkeypatch.setattr(store.faiss, "write_index", half_written)
    with pytest.raises(SimulatedCrash):
        _add_three(index_dir)
    monkeypatch.undo()
    _assert_intact(index_dir, count=20)
    assert not list(index_dir.glob(".*.tmp")), "temporary files are cleaned up"


def test_corrupted_index_file_is_named(index_dir: Path) -> None:
    target = index_dir / "index.1.faiss"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(IndexChecksumError, match=r"index\.1\.faiss"):
        open_index(index_dir)


def test_corrupted_metadata_file_is_named(index_dir: Path) -> None:
    with open(index_dir / "metadata.1.parquet", "ab") as handle:
        handle.write(b"trailing garbage")
    with pytest.raises(IndexChecksumError, match=r"metadata\.1\.parquet"):
        open_index(index_dir)


def test_other_format_version_is_refused(index_dir: Path) -> None:
    manifest_path = index_dir / store.MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    manifest["format_version"] = 99
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match=r"manifest\.json.*version 99"):
        open_index(index_dir)


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"format_version": 1}'])
def test_malformed_manifest_is_refused(index_dir: Path, content: str) -> None:
    (index_dir / store.MANIFEST_NAME).write_text(content)
    with pytest.raises(IndexFormatError, match=r"manifest\.json"):
        open_index(index_dir)


def test_folder_without_manifest_is_not_an_index(tmp_path: Path) -> None:
    with pytest.raises(IndexFormatError, match="not an index folder"):
        open_index(tmp_path)


def test_missing_generation_file_is_named(index_dir: Path) -> None:
    (index_dir / "index.1.faiss").unlink()
    with pytest.raises(IndexFormatError, match=r"index\.1\.faiss.*missing"):
        open_index(index_dir)


def test_second_writer_cannot_overwrite_the_first(index_dir: Path) -> None:
    first = open_index(index_dir, mmap=False)
    second = open_index(index_dir, mmap=False)
    first.remove(ids=[1])
    first.save()
    second.remove(ids=[2])
    with pytest.raises(ConcurrentUpdateError, match="generation 2"):
        second.save()
    assert 1 not in open_index(index_dir).metadata.column("id").to_pylist()
    assert 2 in open_index(index_dir).metadata.column("id").to_pylist()


def test_memory_mapped_open_is_read_only(index_dir: Path) -> None:
    index = open_index(index_dir, mmap=True)
    assert index.info()["memory_mapped"] is True
    with pytest.raises(ReadOnlyIndexError, match="mmap=False"):
        index.add_vectors(random_unit_vectors(1, DIM), pa.table({"path": ["x"]}), "fake-model-v1")
    with pytest.raises(ReadOnlyIndexError):
        index.remove(ids=[0])
    with pytest.raises(ReadOnlyIndexError):
        index.save()
    assert open_index(index_dir, mmap=False).info()["memory_mapped"] is False


def test_open_reader_survives_a_save_by_a_writer(index_dir: Path) -> None:
    reader = open_index(index_dir, mmap=True)
    probe = FakeEmbedder(dim=DIM).vectors_of([{"row": 7}])
    _add_three(index_dir)  # deletes generation 1, which the reader still maps
    assert not (index_dir / "index.1.faiss").exists()
    scores, ids = reader.search_vectors(probe, k=3)
    assert ids[0, 0] == 7 and scores[0, 0] == pytest.approx(1.0, abs=1e-5)
    assert open_index(index_dir).count == 23


def test_file_sha256_matches_the_known_digest(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(b"abc")
    assert file_sha256(path) == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")


def test_manifest_round_trips_through_json(index_dir: Path) -> None:
    manifest = store.read_manifest(index_dir)
    again = store.Manifest.from_json(json.loads(json.dumps(manifest.to_json())), Path("m.json"))
    assert again == manifest
    assert manifest.files["index"].size == (index_dir / "index.1.faiss").stat().st_size


def test_open_retries_when_a_save_swaps_generations_underneath(
        index_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stale = store.read_manifest(index_dir)  # names generation 1
    _add_three(index_dir)  # commits generation 2 and deletes generation 1's files
    real_read = store.read_manifest
    answers = iter([stale])
    monkeypatch.setattr(store, "read_manifest", lambda d: next(answers, None) or real_read(d))
    index = open_index(index_dir)
    assert index.count == 23 and index.manifest.generation == 2


_KILLED_MID_SAVE = """
import os, signal, sys
from indexer.api import open_index
from retrieval import fileio

def die(path):  # the index file is written, its temporary not yet renamed
    os.kill(os.getpid(), signal.SIGKILL)

index = open_index(sys.argv[1], mmap=False)
index.remove(ids=[1])
fileio.file_sha256 = die
index.save()
"""


def _save_temporaries(index_dir: Path) -> list[str]:
    return sorted(path.name for path in index_dir.glob(".*.tmp"))


def test_a_save_killed_mid_write_leaves_a_temporary_the_next_open_deletes(index_dir: Path) -> None:
    killed = subprocess.run([sys.executable, "-c", _KILLED_MID_SAVE, str(index_dir)], check=False)
    assert killed.returncode == -signal.SIGKILL
    (left,) = _save_temporaries(index_dir)
    assert left.startswith(".index.2.faiss.")
    _assert_intact(index_dir, count=20)
    assert _save_temporaries(index_dir) == []


def test_temporaries_of_a_running_save_are_kept_and_others_files_never_touched(index_dir: Path) -> None:
    running = index_dir / ".metadata.2.parquet.k2x9_abc.tmp"
    running.write_bytes(b"being written")
    (index_dir / ".notes.txt.abc.tmp").write_text("not ours")
    with store._exclusive_lock(index_dir):  # what a save holds while it writes
        open_index(index_dir)
    assert running.exists(), "a reader never deletes what a running save writes"
    open_index(index_dir)
    assert _save_temporaries(index_dir) == [".notes.txt.abc.tmp"]


def test_the_next_save_deletes_temporaries_of_a_killed_save(index_dir: Path) -> None:
    (index_dir / ".manifest.json.abc12345.tmp").write_text("{")
    (index_dir / ".index.7.faiss.abc12345.tmp").write_bytes(b"partial")
    with store._exclusive_lock(index_dir):  # the open ran while a save held the lock: kept
        index = open_index(index_dir, mmap=False)
    assert len(_save_temporaries(index_dir)) == 2
    index.remove(ids=[3])
    index.save()
    assert _save_temporaries(index_dir) == []


@pytest.mark.parametrize(("factory", "problem"), [
    ("Bogus!!", "invalid FAISS factory string 'Bogus!!'"),
    ("IVF4,Flat", "factory 'IVF4,Flat' builds IndexIVFFlat[nlist=4](IndexFlat), not IndexIDMap2(IndexFlat)"),
    ("IDMap2,HNSW32", "builds IndexIDMap2(IndexHNSWFlat), not IndexIDMap2(IndexFlat)"),
])
def test_a_manifest_factory_that_does_not_describe_the_index_file_is_refused(
        index_dir: Path, factory: str, problem: str) -> None:
    manifest_path = index_dir / store.MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    assert manifest["factory"] == "IDMap2,Flat"
    manifest["factory"] = factory
    manifest_path.write_text(json.dumps(manifest))
    for mmap in (True, False):  # queries and changes alike: a wrong factory is never saved again
        with pytest.raises(IndexFormatError) as refused:
            open_index(index_dir, mmap=mmap)
        message = str(refused.value)
        assert message.startswith(f"{manifest_path}: damaged manifest") and problem in message
        assert f"does not describe {index_dir / 'index.1.faiss'}" in message
