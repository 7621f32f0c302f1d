"""The on-disk format of an index folder, and crash-safe saving of it.

INDEX_DIR holds generation-numbered files (`index.<gen>.faiss`, `metadata.<gen>.parquet`) and
`manifest.json`, which names the current generation's files with their sha256. A save writes the
new generation's files first and replaces the manifest last, in one atomic rename: that rename
is the commit point, so a crash at any moment leaves a manifest naming complete files. Older
generations are deleted only after the commit. A save killed mid-write (kill -9) leaves its
temporaries behind; the next save, or the next open while no save runs, deletes them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import faiss
import pyarrow as pa
import pyarrow.parquet as pq

from indexer.errors import (
    ConcurrentUpdateError,
    IndexChecksumError,
    IndexFormatError,
    OutputPathError,
)
from retrieval import fileio
from retrieval.fileio import atomic_path, write_json_atomic, write_parquet_atomic

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
LOCK_NAME = ".lock"
METRIC = "inner_product"
# Zero-copy mmap of flat codes and inverted lists; READ_ONLY keeps on-disk lists unmodifiable.
MMAP_FLAGS = faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY
GENERATION_FILE = re.compile(r"^(index\.\d+\.faiss|metadata\.\d+\.parquet)$")
_LOAD_ATTEMPTS = 3

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileRecord:
    name: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Manifest:
    """Everything needed to trust and use the files of one index generation."""

    model: dict[str, Any]  # {"name": str | None, "fingerprint": str, "config": dict}
    dim: int
    factory: str
    count: int
    next_id: int
    tuned: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    updated: str = ""
    generation: int = 0  # 0: never saved
    files: dict[str, FileRecord] = field(default_factory=dict)  # "index", "metadata"
    metric: str = METRIC
    format_version: int = FORMAT_VERSION

    @property
    def fingerprint(self) -> str:
        return str(self.model["fingerprint"])

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Any, path: Path) -> Manifest:
        if not isinstance(data, dict):
            raise IndexFormatError(f"{path}: manifest is not a JSON object")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise IndexFormatError(
                f"{path}: index format version {version!r}, this program reads version "
                f"{FORMAT_VERSION}; rebuild the index with this version"
            )
        try:
            files = {role: FileRecord(**record) for role, record in data["files"].items()}
            manifest = cls(**{**data, "files": files})
        except (KeyError, TypeError, AttributeError) as error:
            raise IndexFormatError(f"{path}: malformed manifest ({error})") from error
        if set(files) != {"index", "metadata"} or "fingerprint" not in manifest.model:
            raise IndexFormatError(f"{path}: manifest lacks its file records or model fingerprint")
        return manifest


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_manifest(directory: str | Path) -> Manifest:
    path = Path(directory) / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise IndexFormatError(f"{path}: no manifest, not an index folder") from error
    except (OSError, ValueError) as error:
        raise IndexFormatError(f"{path}: unreadable manifest ({error})") from error
    return Manifest.from_json(data, path)


def saved_generation(directory: Path) -> int:
    return read_manifest(directory).generation if (directory / MANIFEST_NAME).exists() else 0


def check_writable_folder(folder: str | Path) -> None:
    """`retrieval.fileio.check_writable_folder`, failing as an index error (`OutputPathError`)."""
    try:
        fileio.check_writable_folder(folder)
    except fileio.UnwritablePathError as error:
        raise OutputPathError(str(error)) from error


def commit_generation(
    directory: str | Path,
    index: faiss.Index,
    metadata: pa.Table,
    manifest: Manifest,
    before_commit: Callable[[], None] = lambda: None,
) -> Manifest:
    """Save `index` and `metadata` as the next generation and return the committed manifest.

    `manifest.generation` must be the generation on disk (0 for a new folder): if another
    process saved in between, its work would be lost, so this refuses instead.
    `before_commit` runs after the new files are complete and before the commit point.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(directory):
        _remove_temporaries(directory)
        on_disk = saved_generation(directory)
        if on_disk != manifest.generation:
            raise ConcurrentUpdateError(
                f"{directory / MANIFEST_NAME}: generation {on_disk} was saved by another "
                f"process after this one loaded generation {manifest.generation}; reopen the "
                "index and redo the change"
            )
        generation = on_disk + 1
        files = {
            "index": _write_index(directory / f"index.{generation}.faiss", index),
            "metadata": _write_metadata(directory / f"metadata.{generation}.parquet", metadata),
        }
        stamp = now_iso()
        committed = dataclasses.replace(
            manifest, generation=generation, files=files, updated=stamp,
            created=manifest.created or stamp,
        )
        before_commit()
        write_json_atomic(directory / MANIFEST_NAME, committed.to_json())
        _remove_other_generations(directory, {record.name for record in files.values()})
    return committed


def load_generation(directory: str | Path, mmap: bool
                    ) -> tuple[Manifest, faiss.Index, pa.Table, bool]:
    """The current manifest, index, metadata and whether the index is memory-mapped.

    A concurrent save may delete the generation named by the manifest just read; then the new
    manifest is read and loading starts over.
    """
    directory = Path(directory)
    missing: FileNotFoundError | None = None
    for _ in range(_LOAD_ATTEMPTS):
        manifest = read_manifest(directory)
        try:
            metadata = _read_metadata(directory, manifest.files["metadata"])
            index, mapped = _read_index(directory, manifest.files["index"], mmap)
        except FileNotFoundError as error:
            missing = error
            continue
        remove_stale_temporaries(directory)
        return manifest, index, metadata, mapped
    raise IndexFormatError(f"{missing.filename}: a file the manifest names is missing") from missing


def remove_stale_temporaries(directory: str | Path) -> None:
    """Delete the temporaries of a save that was killed mid-write, unless a save is running now
    (it holds the lock, and its temporaries are not stale) or the folder is not ours to write
    (a read-only copy keeps them)."""
    directory = Path(directory)
    if fileio.temporaries(directory, _written_by_save):
        with contextlib.suppress(OSError), _exclusive_lock(directory, blocking=False):
            _remove_temporaries(directory)


def _written_by_save(name: str) -> bool:
    return name == MANIFEST_NAME or GENERATION_FILE.match(name) is not None


def _remove_temporaries(directory: Path) -> None:
    """Delete every save temporary; only while holding the lock, so none is a running save's."""
    for path in fileio.remove_temporaries(directory, _written_by_save):
        LOG.info("%s: removed, left by a save that was interrupted", path)


def _write_index(path: Path, index: faiss.Index) -> FileRecord:
    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))
        record = FileRecord(name=path.name, sha256=fileio.file_sha256(tmp), size=tmp.stat().st_size)
    return record


def _write_metadata(path: Path, table: pa.Table) -> FileRecord:
    write_parquet_atomic(path, table)
    return FileRecord(name=path.name, sha256=fileio.file_sha256(path), size=path.stat().st_size)


def _verified(directory: Path, record: FileRecord) -> Path:
    path = directory / record.name
    if fileio.file_sha256(path) != record.sha256:
        raise IndexChecksumError(
            f"{path}: sha256 does not match the manifest; the file is corrupted"
        )
    return path


def _read_index(directory: Path, record: FileRecord, mmap: bool) -> tuple[faiss.Index, bool]:
    path = str(_verified(directory, record))
    if mmap:
        try:
            return faiss.read_index(path, MMAP_FLAGS), True
        except RuntimeError:
            pass  # this index type cannot be mapped: read it into memory instead
    try:
        return faiss.read_index(path), False
    except RuntimeError as error:
        raise IndexFormatError(f"{path}: FAISS cannot read this index ({error})") from error


def _read_metadata(directory: Path, record: FileRecord) -> pa.Table:
    path = _verified(directory, record)
    try:
        return pq.read_table(path)
    except (OSError, pa.ArrowException) as error:
        raise IndexFormatError(f"{path}: unreadable metadata ({error})") from error


def _remove_other_generations(directory: Path, keep: set[str]) -> None:
    for path in directory.iterdir():
        if GENERATION_FILE.match(path.name) and path.name not in keep:
            path.unlink(missing_ok=True)


@contextlib.contextmanager
def _exclusive_lock(directory: Path, blocking: bool = True) -> Iterator[None]:
    """Serialise writers of one folder (POSIX advisory lock; readers take it only to delete stale
    temporaries, and never wait for it). Not blocking: BlockingIOError while another holds it."""
    with open(directory / LOCK_NAME, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
