"""Mutual nearest-neighbour matching of L2-normalised descriptors (numpy).

A pair (i, j) survives only when each side is the other's best match: one-way nearest
neighbours of a textureless or repeated region all pile onto one partner, and mutuality
keeps the geometric stage from drowning in those many-to-one matches. Rows are assumed
unit-length, so the dot product is the cosine similarity. Ties (exactly equal computed
similarities) go to the lowest index on both sides, which makes the result deterministic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Matches:
    """Matched row pairs, ascending in index_a."""

    index_a: np.ndarray  # int64 (M,)
    index_b: np.ndarray  # int64 (M,)
    similarity: np.ndarray  # float32 (M,)


def _as_descriptors(name: str, desc: np.ndarray) -> np.ndarray:
    desc = np.asarray(desc)
    if desc.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (N, D), got shape {desc.shape}")
    if not np.issubdtype(desc.dtype, np.floating):
        desc = desc.astype(np.float32)
    if not np.isfinite(desc).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return desc


def similarity_matrix(desc_a: np.ndarray, desc_b: np.ndarray) -> np.ndarray:
    """(N, M) cosine similarities of two checked descriptor sets (unit rows)."""
    desc_a = _as_descriptors("desc_a", desc_a)
    desc_b = _as_descriptors("desc_b", desc_b)
    if desc_a.shape[1] != desc_b.shape[1]:
        raise ValueError(
            f"descriptor dimensions differ: desc_a has {desc_a.shape[1]}, desc_b has {desc_b.shape[1]}"
        )
    return desc_a @ desc_b.T


def mutual_nearest_neighbours(
    desc_a: np.ndarray, desc_b: np.ndarray, min_similarity: float = -1.0
) -> Matches:
    """Pairs (i, j) with j = argmax_j a_i.b_j, i = argmax_i a_i.b_j and a_i.b_j >= min_similarity."""
    return mutual_matches(similarity_matrix(desc_a, desc_b), min_similarity)


def mutual_matches(similarity: np.ndarray, min_similarity: float = -1.0) -> Matches:
    """The mutual pairs of an (N, M) similarity matrix already computed (as verification does,
    which reads the same matrix for its appearance similarity)."""
    if math.isnan(min_similarity):
        raise ValueError("min_similarity must be a number, got NaN")
    if similarity.shape[0] == 0 or similarity.shape[1] == 0:
        empty = np.empty(0, dtype=np.int64)
        return Matches(empty, empty.copy(), np.empty(0, dtype=np.float32))
    best_b = similarity.argmax(axis=1)  # argmax returns the first maximum: lowest index wins ties
    best_a = similarity.argmax(axis=0)
    index_a = np.arange(similarity.shape[0])
    best_similarity = similarity[index_a, best_b]
    keep = (best_a[best_b] == index_a) & (best_similarity >= min_similarity)
    return Matches(
        index_a=index_a[keep].astype(np.int64),
        index_b=best_b[keep].astype(np.int64),
        similarity=best_similarity[keep].astype(np.float32),
    )
