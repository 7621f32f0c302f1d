"""Ranking metrics over matrices of ranked database ids, one row per query (pure numpy).

Definitions follow DESIGN.md §3: rel_i = 1 when the item at rank i is a positive, m = number
of positives in the database for the query, P(i) = precision at rank i. A ranking is an int64
matrix (Q, K) of database indices, best first; -1 marks padding (no result). Queries with no
positive in the database (m = 0) have no defined AP: they get NaN so that reports count them
instead of silently dropping them (see `summarise`).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

PADDING_ID = -1


def _check_k(k: int) -> None:
    if k <= 0:
        raise ValueError(f"k must be a positive integer, got {k}")


def _require_shape(name: str, array: np.ndarray, shape: tuple[int, ...]) -> None:
    if array.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {array.shape}")


def _as_relevance(rel: np.ndarray) -> np.ndarray:
    rel = np.asarray(rel)
    if rel.ndim != 2 or rel.dtype != bool:
        raise ValueError(f"relevance must be a bool matrix (Q, K), got {rel.dtype} {rel.shape}")
    return rel


def _relevance_top_k(rel: np.ndarray, k: int) -> np.ndarray:
    """Return the first k columns; a ranking shorter than k cannot be scored at k."""
    _check_k(k)
    rel = _as_relevance(rel)
    if rel.shape[1] < k:
        raise ValueError(f"ranking holds {rel.shape[1]} columns, fewer than k={k}; pad with -1")
    return rel[:, :k]


def _positive_counts(num_positives: np.ndarray, rel: np.ndarray) -> np.ndarray:
    """Validate m per query: it can never be smaller than the positives actually retrieved."""
    m = np.asarray(num_positives)
    _require_shape("num_positives", m, (rel.shape[0],))
    if np.any(m < 0):
        raise ValueError("num_positives must be non-negative")
    if np.any(rel.sum(axis=1) > m):
        raise ValueError("a ranking holds more positives than num_positives says exist")
    return m.astype(np.float64)


def _precision_weighted_hits(rel: np.ndarray) -> np.ndarray:
    """Sum over ranks i of P(i) * rel_i, per query."""
    ranks = np.arange(1, rel.shape[1] + 1, dtype=np.float64)
    precision = np.cumsum(rel, axis=1, dtype=np.float64) / ranks
    return (precision * rel).sum(axis=1)


def _nan_where_no_positive(values: np.ndarray, num_positives: np.ndarray | None,
                           rel: np.ndarray) -> np.ndarray:
    if num_positives is None:
        return values
    m = _positive_counts(num_positives, rel)
    return np.where(m == 0, np.nan, values)


def relevance_matrix(ranked_ids: np.ndarray, query_labels: np.ndarray,
                     db_labels: np.ndarray) -> np.ndarray:
    """rel[q, i]: ranked_ids[q, i] shares the query's label (padding is never relevant)."""
    ids = np.asarray(ranked_ids)
    query_labels, db_labels = np.asarray(query_labels), np.asarray(db_labels)
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"ranked_ids must be an int matrix (Q, K), got {ids.dtype} {ids.shape}")
    _require_shape("query_labels", query_labels, (ids.shape[0],))
    if db_labels.ndim != 1:
        raise ValueError(f"db_labels must be 1-D, got shape {db_labels.shape}")
    if ids.size and (ids.min() < PADDING_ID or ids.max() >= len(db_labels)):
        raise ValueError(f"ranked_ids must lie in [-1, {len(db_labels)})")
    valid = ids != PADDING_ID
    if not len(db_labels):
        return valid  # every id is padding
    return valid & (db_labels[np.where(valid, ids, 0)] == query_labels[:, None])


def ap_at_k_standard(rel: np.ndarray, num_positives: np.ndarray, k: int) -> np.ndarray:
    """AP@k = (1/min(m, k)) * sum_{i<=k} P(i) rel_i (Google Landmarks); NaN where m = 0.

    Dividing by min(m, k) penalises positives that exist but were not retrieved: the headline.
    """
    top = _relevance_top_k(rel, k)
    m = _positive_counts(num_positives, top)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(m == 0, np.nan, _precision_weighted_hits(top) / np.minimum(m, k))


def ap_at_k_paper(rel: np.ndarray, k: int,
                  num_positives: np.ndarray | None = None) -> np.ndarray:
    """AP@k divided by the positives *found* in the top k, as the paper's code does; 0 if none.

    Kept only to compare with the paper's table: one hit at rank 1 already gives AP = 1.
    Pass num_positives to mark queries with no positive in the database as NaN.
    """
    top = _relevance_top_k(rel, k)
    found = top.sum(axis=1).astype(np.float64)
    ap = _precision_weighted_hits(top) / np.maximum(found, 1.0)
    return _nan_where_no_positive(ap, num_positives, top)


def ap_full(rel_full_ranking: np.ndarray, num_positives: np.ndarray) -> np.ndarray:
    """AP over the whole ranking, divided by m: positives never ranked count as misses."""
    rel = _as_relevance(rel_full_ranking)
    m = _positive_counts(num_positives, rel)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(m == 0, np.nan, _precision_weighted_hits(rel) / m)


def recall_at_k(rel: np.ndarray, k: int, num_positives: np.ndarray | None = None) -> np.ndarray:
    """Hit rate: 1.0 when at least one positive is in the top k, else 0.0 (not |found| / m).

    Pass num_positives to mark queries with no positive in the database as NaN.
    """
    top = _relevance_top_k(rel, k)
    return _nan_where_no_positive(top.any(axis=1).astype(np.float64), num_positives, top)


def knn_recall(approx_ids: np.ndarray, exact_ids: np.ndarray) -> float:
    """Recall@K of an approximate index against exact search.

    Per query: |valid approx ids ∩ valid exact ids| / |valid exact ids|, padding (-1) ignored on
    both sides and duplicates counted once; the mean is taken over queries whose exact list is
    not empty (NaN when there is none). Order inside the top K does not matter.
    """
    approx, exact = np.asarray(approx_ids), np.asarray(exact_ids)
    if approx.shape != exact.shape or approx.ndim != 2:
        raise ValueError(f"approx_ids and exact_ids must be equal (Q, K), got "
                         f"{approx.shape} and {exact.shape}")
    num_queries = approx.shape[0]
    stride = int(max(approx.max(initial=0), exact.max(initial=0))) + 1
    rows = np.broadcast_to(np.arange(num_queries)[:, None], approx.shape)

    def unique_keys(ids: np.ndarray) -> np.ndarray:
        valid = ids != PADDING_ID
        return np.unique(rows[valid].astype(np.int64) * stride + ids[valid])

    exact_keys, approx_keys = unique_keys(exact), unique_keys(approx)
    hits = approx_keys[np.isin(approx_keys, exact_keys)] // stride
    hit_counts = np.bincount(hits, minlength=num_queries).astype(np.float64)
    exact_counts = np.bincount(exact_keys // stride, minlength=num_queries)
    scored = exact_counts > 0
    if not scored.any():
        return float("nan")
    return float(np.mean(hit_counts[scored] / exact_counts[scored]))


def summarise(values: Iterable[float]) -> dict:
    """Mean over defined values plus how many were undefined (NaN, i.e. no positive)."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    undefined = np.isnan(values)
    count = int((~undefined).sum())
    mean = float(values[~undefined].mean()) if count else None
    return {"mean": mean, "count": count, "no_positive_count": int(undefined.sum())}


def mean_by_group(values: np.ndarray, groups: np.ndarray,
                  group_values: Iterable[int] = range(1, 7)) -> dict[int, dict]:
    """`summarise` per group (e.g. blur level); a group with no query reports mean None.

    Queries whose group is not listed in group_values are left out of every group.
    """
    values, groups = np.asarray(values, dtype=np.float64), np.asarray(groups)
    if values.ndim != 1 or values.shape != groups.shape:
        raise ValueError(f"values and groups must be equal 1-D arrays, got "
                         f"{values.shape} and {groups.shape}")
    return {int(g): summarise(values[groups == g]) for g in group_values}


def rank_by_scores(scores: np.ndarray, k: int, higher_is_better: bool = True) -> np.ndarray:
    """Top-k database ids per query, ties broken by smaller database index; -1 pads when k > N.

    A partial partition finds each row's k-th best value t; everything strictly better than t is
    kept, then the tied-at-t items with the smallest indices fill the remaining slots, so a tie
    straddling the partition boundary cannot let a larger index win.
    """
    _check_k(k)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError(f"scores must be a matrix (Q, N), got shape {scores.shape}")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN, which has no rank")
    num_queries, num_db = scores.shape
    keys = -scores if higher_is_better else scores
    kept = min(k, num_db)
    ranked = np.full((num_queries, k), PADDING_ID, dtype=np.int64)
    if kept == 0:
        return ranked
    if kept < num_db:
        threshold = np.partition(keys, kept - 1, axis=1)[:, kept - 1 : kept]
        better = keys < threshold
        tied = keys == threshold
        free_slots = kept - better.sum(axis=1, keepdims=True)
        selected = better | (tied & (np.cumsum(tied, axis=1) <= free_slots))
        candidates = np.nonzero(selected)[1].reshape(num_queries, kept)
    else:
        candidates = np.broadcast_to(np.arange(num_db), (num_queries, num_db))
    order = np.argsort(np.take_along_axis(keys, candidates, axis=1), axis=1, kind="stable")
    ranked[:, :kept] = np.take_along_axis(candidates, order, axis=1)
    return ranked
