"""Atomic file writes: a crash mid-write must never leave a half-written file behind.

Also the one check every command runs on its output locations before any long work.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

_TEMP_SUFFIX = ".tmp"
# `atomic_path` names its temporary `.<target name>.<random, no dot>.tmp` (see tempfile.mkstemp).
_TEMPORARY = re.compile(rf"^\.(?P<target>.+)\.[^.]+{re.escape(_TEMP_SUFFIX)}$")


class UnwritablePathError(Exception):
    """An output location that cannot be written: an existing file where a folder is wanted, a
    file among its parents, or a folder without write permission. The message names the path."""


def check_writable_folder(folder: str | os.PathLike) -> None:
    """Refuse, before any long work, a folder that cannot be created or written in.

    The nearest existing folder on the way decides: it must be a folder (not a file) and
    writable by this process.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UnwritablePathError(f"{folder}: exists and is not a folder")
    existing = next(path for path in (folder, *folder.absolute().parents) if path.exists())
    if not existing.is_dir():
        raise UnwritablePathError(f"{folder}: cannot be created, {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UnwritablePathError(f"{folder}: no permission to write in {existing}")


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates 0600 files; finished files get the permissions a plain open() would give.
_FILE_MODE = 0o666 & ~_current_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it replaces `path` in one rename.

    The temp file lives in the same directory so the final `os.replace` is atomic on POSIX.
    On error the temp file is removed and the previous `path` (if any) is untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=_TEMP_SUFFIX, dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def temporaries(folder: str | os.PathLike, of: Callable[[str], bool]) -> list[Path]:
    """The temporaries of `atomic_path` in `folder` whose target's name `of` accepts.

    A process killed mid-write (kill -9, power loss) never reaches the clean-up in
    `atomic_path`, so its temporary stays; the owner of the targets deletes these when it knows
    no other process is writing them.
    """
    found = []
    for path in Path(folder).iterdir():
        match = _TEMPORARY.match(path.name)
        if match is not None and of(match.group("target")) and path.is_file():
            found.append(path)
    return found


def remove_temporaries(folder: str | os.PathLike, of: Callable[[str], bool]) -> list[Path]:
    """Delete `temporaries(folder, of)`, and return them."""
    found = temporaries(folder, of)
    for path in found:
        path.unlink(missing_ok=True)
    return found


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_parquet_atomic(path: str | os.PathLike, table: Any) -> None:
    """Write a pyarrow Table atomically."""
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def file_sha256(path: str | os.PathLike) -> str:
    """Hash of a file, read in chunks: names the exact bytes something was made from (a model's
    training manifest, a layer bank's photographs)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
