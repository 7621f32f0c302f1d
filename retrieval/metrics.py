"""Ranking metrics over matrices of ranked database ids, one row per query (pure numpy).

Definitions: docs/method.md, "Metrics". rel_i = 1 when the item at rank i is a positive, m =
number of positives in the database for the query, P(i) = precision at rank i. A ranking is an
int64 matrix (Q, K) of database indices, best first; -1 marks padding (no result). Queries with no
positive in the database (m = 0) have no defined AP: they get NaN so that reports count them
instead of silently dropping them (see `summarise`). Equal scores are ordered by seeded
pseudo-random keys (`tie_break_keys`), never by where a row sits in the database.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

PADDING_ID = -1
TIE_SEED = 2024  # seed of the tie-break order; part of every benchmark report
_GOLDEN = 0x9E3779B97F4A7C15  # splitmix64 constants
_MIX = (0xBF58476D1CE4E5B9, 0x94D049BB133111EB)


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
    Two deliberate differences from the published code (docs/method.md, "Metrics"):
    - with num_positives, a query with no positive in the database (m = 0) is NaN, so reports
      count it; the published code averages in a 0 (which is what this returns without
      num_positives, and for m > 0 with nothing found);
    - a ranking shorter than k (k > N) must be padded with -1 up to k instead of being
      truncated; padding is never relevant, so the value is the same.
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


def tie_break_keys(ids: np.ndarray, seed: int = TIE_SEED) -> np.ndarray:
    """A seeded pseudo-random rank 0..N-1 per row id: the order of rows with equal scores.

    Breaking ties by database position lets whichever rows are stored first win every tie (the
    benchmark stores all positives before the distractors, which inflated mAP@100 of tied scores
    from about 0.03 to 0.17 on a toy set). The key is a hash (splitmix64) of the row's own id and
    the seed, so a row keeps its key wherever it sits; ids should be distinct (equal ids keep
    their relative position).
    """
    ids = np.asarray(ids)
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"ids must be a 1-D integer array, got {ids.dtype} {ids.shape}")
    x = ids.astype(np.int64).astype(np.uint64) + np.uint64((seed * _GOLDEN) % 2**64)
    for shift, factor in zip((30, 27), _MIX):
        x ^= x >> np.uint64(shift)
        x *= np.uint64(factor)
    x ^= x >> np.uint64(31)
    keys = np.empty(len(ids), dtype=np.int64)
    keys[np.argsort(x, kind="stable")] = np.arange(len(ids))
    return keys


def rank_by_scores(scores: np.ndarray, k: int, higher_is_better: bool = True,
                   tie_keys: np.ndarray | None = None) -> np.ndarray:
    """Top-k database ids per query, equal scores ordered by smaller tie key; -1 pads when k > N.

    `tie_keys`: one key per column (N,) or per entry (Q, N); default `tie_break_keys` of the
    column indices, so that ties never favour the first columns. Equal keys fall back to the
    column index.
    """
    _check_k(k)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError(f"scores must be a matrix (Q, N), got shape {scores.shape}")
    keys = tie_break_keys(np.arange(scores.shape[1])) if tie_keys is None else np.asarray(tie_keys)
    if keys.shape not in (scores.shape[1:], scores.shape):
        raise ValueError(f"tie_keys must have shape {scores.shape[1:]} or {scores.shape}, "
                         f"got {keys.shape}")
    order = np.argsort(keys, axis=-1, kind="stable")
    if order.ndim == 1:
        permuted, order = scores[:, order], np.broadcast_to(order, scores.shape)
    else:
        permuted = np.take_along_axis(scores, order, axis=1)
    ranked = _rank_by_position(permuted, k, higher_is_better)
    found = ranked != PADDING_ID
    ids = np.take_along_axis(order, np.where(found, ranked, 0), axis=1)
    return np.where(found, ids, PADDING_ID)


def _rank_by_position(scores: np.ndarray, k: int, higher_is_better: bool) -> np.ndarray:
    """Top-k column indices per row, ties broken by smaller column index.

    A partial partition finds each row's k-th best value t; everything strictly better than t is
    kept, then the tied-at-t items with the smallest indices fill the remaining slots, so a tie
    straddling the partition boundary cannot let a larger index win.
    """
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
