"""Checks and bulk insertion for the float32 unit vectors an index holds."""

from __future__ import annotations

import faiss
import numpy as np
from tqdm.auto import tqdm

from indexer.errors import InvalidVectorsError

NORM_TOLERANCE = 1e-3
ADD_CHUNK = 65_536


def validated_vectors(vectors: np.ndarray, dim: int, origin: str) -> np.ndarray:
    """C-contiguous float32 (n, dim) unit rows, or a clear error: inner product needs unit rows."""
    array = np.ascontiguousarray(vectors, dtype=np.float32)
    if array.ndim != 2 or array.shape[1] != dim:
        raise InvalidVectorsError(
            f"{origin}: vectors must have shape (n, {dim}), got {array.shape}"
        )
    deviation = np.nan_to_num(np.abs(np.linalg.norm(array, axis=1) - 1.0), nan=np.inf)
    if len(array) and deviation.max() > NORM_TOLERANCE:
        worst = int(np.argmax(deviation))
        norm = float(np.linalg.norm(array[worst]))
        raise InvalidVectorsError(
            f"{origin}: vectors must be L2-normalised; row {worst} has norm {norm:.4f}"
        )
    return array


def add_in_chunks(index: faiss.Index, vectors: np.ndarray, ids: np.ndarray,
                  progress: bool = False) -> None:
    """Add with ids in chunks so that a progress bar can follow a million-vector insertion."""
    with tqdm(total=len(vectors), unit="vec", desc="indexing", disable=not progress,
              dynamic_ncols=True) as bar:
        for start in range(0, len(vectors), ADD_CHUNK):
            stop = min(start + ADD_CHUNK, len(vectors))
            index.add_with_ids(vectors[start:stop], ids[start:stop])
            bar.update(stop - start)
