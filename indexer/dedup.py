"""Which items of a source the index already holds, so adding a folder twice adds nothing.

An item is already indexed when a row has its file path and the same content: the sha256 of
the file, kept in the metadata column `content_sha256` by every build and add. Rows without a
hash (indexes made before the column existed, or rows given through `add_vectors`) cannot say
what content they were made from; for them the path alone decides, since hashing the file now
would only describe the file as it is today. Virtual rows (no file) are never duplicates.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from indexer.sources import Source, file_paths
from retrieval.fileio import file_sha256

CONTENT_COLUMN = "content_sha256"


def with_content_hashes(source: Source, progress: bool = False) -> Source:
    """`source` with the sha256 of each item's file in `content_sha256` (null for virtual rows and
    files that cannot be read: those are reported when embedding fails); unchanged when no item
    has a readable file."""
    if CONTENT_COLUMN in source.metadata.column_names:
        return source
    hashes = [None if path is None else _sha256_or_none(path)
              for path in tqdm(file_paths(source.metadata), desc="hashing", unit="file",
                               disable=not progress, dynamic_ncols=True)]
    if all(digest is None for digest in hashes):
        return source
    metadata = source.metadata.append_column(CONTENT_COLUMN, pa.array(hashes, pa.string()))
    return Source(items=source.items, metadata=metadata, origin=source.origin)


def already_indexed(indexed: pa.Table, new_rows: pa.Table) -> np.ndarray:
    """Positions (int64, increasing) of `new_rows` whose file the `indexed` table already holds."""
    stored_hashes = _hashes(indexed)
    with_content: set[tuple[str, str]] = set()
    path_only: set[str] = set()
    for path, digest in zip(file_paths(indexed), stored_hashes):
        if path is None:
            continue
        if digest is None:
            path_only.add(path)
        else:
            with_content.add((path, digest))
    positions = [
        position
        for position, (path, digest) in enumerate(zip(file_paths(new_rows), _hashes(new_rows)))
        if path is not None and (path in path_only or (path, digest) in with_content)
    ]
    return np.array(positions, dtype=np.int64)


def _hashes(table: pa.Table) -> list[str | None]:
    if CONTENT_COLUMN not in table.column_names:
        return [None] * table.num_rows
    return table.column(CONTENT_COLUMN).to_pylist()


def _sha256_or_none(path: str) -> str | None:
    try:
        return file_sha256(path)
    except OSError:
        return None
