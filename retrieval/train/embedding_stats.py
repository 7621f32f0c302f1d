"""How an embedding uses its dimensions, whom it confuses, and what re-weighting its directions
would change: the statistics `scripts/diagnose_embedding_rank.py` prints.

Why: among distractors the models lose most of their accuracy. If their vectors vary along only a
few directions, every added image crowds the same small space, and a wider vector helps only if
the network learns to fill it; if the confusions are with look-alikes (the query's own
category), the training should show them more of those. These numbers tell the two apart.
"""

from __future__ import annotations

import numpy as np


def variance_shares(vectors: np.ndarray) -> np.ndarray:
    """The covariance's eigenvalues of `vectors` ([N, D], N >= 2), largest first, as shares of
    their sum (all zero if the vectors do not vary)."""
    vectors = np.asarray(vectors, dtype=np.float64)
    if vectors.ndim != 2 or len(vectors) < 2:
        raise ValueError(f"need [N, D] vectors with N >= 2, got shape {vectors.shape}")
    centred = vectors - vectors.mean(axis=0)
    values = np.linalg.svd(centred, compute_uv=False) ** 2
    total = values.sum()
    shares = values / total if total > 0 else values
    return np.sort(shares)[::-1]


def participation_ratio(shares: np.ndarray) -> float:
    """1 / sum(share^2): the number of directions the variance effectively spreads over (d for
    variance spread evenly over d directions, 1 for a single direction)."""
    shares = np.asarray(shares, dtype=np.float64)
    squared = float(np.sum(shares ** 2))
    return 1.0 / squared if squared > 0 else 0.0


def components_for(shares: np.ndarray, fraction: float) -> int:
    """How many of the largest directions hold `fraction` (0..1] of the variance."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    cumulative = np.cumsum(shares)
    return int(min(np.searchsorted(cumulative, fraction - 1e-12) + 1, len(shares)))


def rank_confusions(scores: np.ndarray, query_labels: np.ndarray, query_groups: np.ndarray,
                    database_labels: np.ndarray, database_groups: np.ndarray) -> dict[str, float]:
    """Who outranks the right answer: for each query with a positive in the database, the images
    scored above its best-scored positive, split by whether they share the query's group (its
    category) or not, and whether its best-scored wrong image shares it.

    Returns the counts summed over queries ("same_group_above", "other_group_above"), the share
    of queries whose best wrong image is of their group ("nearest_wrong_same_group"), and the
    number of queries counted ("queries")."""
    scores = np.asarray(scores, dtype=np.float64)
    same_above = other_above = nearest_same = counted = 0
    for row, label, group in zip(scores, query_labels, query_groups):
        positive = database_labels == label
        wrong = ~positive
        if not positive.any() or not wrong.any():
            continue
        above = wrong & (row > row[positive].max())
        in_group = database_groups == group
        same_above += int(np.sum(above & in_group))
        other_above += int(np.sum(above & ~in_group))
        wrong_indices = np.flatnonzero(wrong)
        nearest_same += bool(in_group[wrong_indices[np.argmax(row[wrong_indices])]])
        counted += 1
    return {"same_group_above": same_above, "other_group_above": other_above,
            "nearest_wrong_same_group": nearest_same / counted if counted else float("nan"),
            "queries": counted}


def intra_class_whitening(vectors: np.ndarray, labels: np.ndarray, power: float,
                          floor: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """(mean [D], matrix [D, D]) that scales the directions along which images of one label
    differ by their spread to the power -`power` (0: unchanged, 0.5: whitened), eigenvalues
    floored at `floor` x the largest. Learned whitening as in image retrieval, without the
    rotation, which changes no cosine when every direction is kept."""
    vectors = np.asarray(vectors, dtype=np.float64)
    labels = np.asarray(labels)
    differences = []
    for label in np.unique(labels):
        members = vectors[labels == label]
        if len(members) >= 2:
            pairs = members[:, None, :] - members[None, :, :]
            upper = np.triu_indices(len(members), k=1)
            differences.append(pairs[upper])
    if not differences:
        raise ValueError("no label has two vectors: nothing to learn the within-label spread from")
    stacked = np.concatenate(differences)
    scatter = stacked.T @ stacked / len(stacked)
    values, directions = np.linalg.eigh(scatter)
    values = np.maximum(values, floor * values.max())
    matrix = (directions * values ** -power) @ directions.T
    return vectors.mean(axis=0), matrix


def whiten(vectors: np.ndarray, mean: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Centred, transformed and L2-normalised again, ready for cosine search."""
    transformed = (np.asarray(vectors, dtype=np.float64) - mean) @ matrix.T
    norms = np.linalg.norm(transformed, axis=1, keepdims=True)
    return (transformed / np.maximum(norms, 1e-12)).astype(np.float32)
