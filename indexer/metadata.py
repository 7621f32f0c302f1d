"""The metadata table: one row per indexed vector, keyed by its int64 id.

Rows are kept in increasing id order (ids are handed out increasingly and removal keeps the
order), so an id is found by binary search instead of a hash map over a million rows.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from indexer.errors import SourceError
from indexer.sources import ID_COLUMN, PATH_COLUMN, printable


def attach_ids(table: pa.Table, ids: np.ndarray) -> pa.Table:
    """`table` with the index ids as its first column."""
    return table.add_column(0, ID_COLUMN, pa.array(np.asarray(ids, dtype=np.int64)))


def append_rows(table: pa.Table, new_rows: pa.Table, origin: str) -> pa.Table:
    """Rows of both tables; a column missing on one side is filled with nulls."""
    try:
        return pa.concat_tables([table, new_rows], promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise SourceError(f"{origin}: metadata columns clash with the index's ({error})") from error


def ids_column(table: pa.Table) -> np.ndarray:
    return table.column(ID_COLUMN).to_numpy().astype(np.int64, copy=False)


def drop_ids(table: pa.Table, ids: np.ndarray) -> pa.Table:
    return table.filter(pa.array(~np.isin(ids_column(table), ids)))


def ids_of_paths(table: pa.Table, paths: Sequence[str | os.PathLike]
                 ) -> tuple[np.ndarray, list[str]]:
    """Ids of rows whose path is one of `paths` (as stored, or resolved), and paths not found."""
    stored = table.column(PATH_COLUMN)
    found: list[np.ndarray] = []
    missing: list[str] = []
    for path in paths:
        for candidate in dict.fromkeys([printable(str(path)), printable(str(Path(path).resolve()))]):
            mask = pc.fill_null(pc.equal(stored, candidate), False)
            if pc.any(mask).as_py():
                found.append(ids_column(table.filter(mask)))
                break
        else:
            missing.append(str(path))
    ids = np.unique(np.concatenate(found)) if found else np.zeros(0, dtype=np.int64)
    return ids, missing


def rows_for_ids(table: pa.Table, ids: np.ndarray) -> list[dict[str, Any] | None]:
    """The metadata row of each id (None for ids not in the table, e.g. FAISS's -1 padding)."""
    known = ids_column(table)
    flat = np.asarray(ids, dtype=np.int64).ravel()
    if len(known) == 0:
        return [None] * len(flat)
    positions = np.minimum(np.searchsorted(known, flat), len(known) - 1)
    present = known[positions] == flat
    rows = table.take(pa.array(positions[present])).to_pylist() if present.any() else []
    answer: list[dict[str, Any] | None] = [None] * len(flat)
    for slot, row in zip(np.flatnonzero(present), rows, strict=True):
        answer[slot] = row
    return answer
