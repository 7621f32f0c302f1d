"""Measure how much an approximate index misses, and tune IVF `nprobe` to a recall target.

Recall@k here is the fraction of the exact top-k (brute-force inner product over all database
vectors) that the index returns in its own top-k, averaged over held-out sample queries.
"""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np

RECALL_K = 100
TARGET_RECALL = 0.95
MAX_QUERIES = 1000
QUERY_SEED = 4321


def sample_queries(n: int, exclude: np.ndarray, count: int = MAX_QUERIES,
                   seed: int = QUERY_SEED) -> np.ndarray:
    """Positions of query vectors, taken outside `exclude` (the training sample) when possible."""
    held_out = np.setdiff1d(np.arange(n, dtype=np.int64), exclude)
    pool = held_out if len(held_out) >= min(count, n) else np.arange(n, dtype=np.int64)
    size = min(count, len(pool))
    return np.sort(np.random.default_rng(seed).choice(pool, size=size, replace=False))


TIE_TOLERANCE = 1e-6  # inner products this close to the k-th exact one are ties with it


def exact_top_k(vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """(scores, ids) of the exact top-k by inner product, best first."""
    scores, positions = faiss.knn(queries, vectors, k, metric=faiss.METRIC_INNER_PRODUCT)
    return scores, ids[positions]


def exact_neighbours(vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int
                     ) -> np.ndarray:
    """Ids of the exact top-k by inner product: the ground truth recall is measured against."""
    return exact_top_k(vectors, ids, queries, k)[1]


def recall_at_k(found: np.ndarray, truth: np.ndarray, found_scores: np.ndarray | None = None,
                cutoff_scores: np.ndarray | None = None) -> float:
    """Mean over rows of |found ∩ truth| / k; missing results (-1) count as misses.

    With `found_scores` and `cutoff_scores` (per row, the exact k-th score), a found result whose
    score ties the cutoff counts too: when equal scores straddle rank k, exact search keeps an
    arbitrary member of the tie, and an index that keeps another one has missed nothing.
    """
    if found.shape != truth.shape:
        raise ValueError(f"found {found.shape} and truth {truth.shape} must have the same shape")
    if (found_scores is None) != (cutoff_scores is None):
        raise ValueError("give both found_scores and cutoff_scores, or neither")
    hits = (found[:, :, None] == truth[:, None, :]).any(axis=2)
    if found_scores is not None:
        if found_scores.shape != found.shape or cutoff_scores.shape != (len(found),):
            raise ValueError(f"found_scores {found_scores.shape} must be {found.shape} and "
                             f"cutoff_scores {cutoff_scores.shape} ({len(found)},)")
        hits |= found_scores >= cutoff_scores[:, None] - TIE_TOLERANCE
    return float((hits & (found >= 0)).sum() / truth.size)


# A refine stage re-scores k_factor * k candidates exactly. nprobe is tuned at START_K_FACTOR;
# when even every list misses the target there (the codes rank too coarsely, as at 5,000,000
# vectors and more), the larger factors are tried in turn. Then the factor is lowered while the
# recall holds. Largest first.
K_FACTORS = (256, 64, 16, 8, 4, 2, 1)
START_K_FACTOR = 16


def set_nprobe(index: faiss.Index, nprobe: int) -> None:
    faiss.extract_index_ivf(index).nprobe = int(nprobe)


def refine_stage(index: faiss.Index) -> faiss.IndexRefine | None:
    """The refine stage of `index` (under an id map or transforms), or None."""
    node = faiss.downcast_index(index)
    while True:
        if isinstance(node, faiss.IndexRefine):
            return node
        if isinstance(node, faiss.IndexIDMap | faiss.IndexPreTransform):
            node = faiss.downcast_index(node.index)
        else:
            return None


def set_k_factor(index: faiss.Index, k_factor: int) -> None:
    refine_stage(index).k_factor = float(k_factor)


def nprobe_steps(nlist: int) -> list[int]:
    """1, 2, 3, 4, 6, 8, 12, 16, 24, ... up to and including `nlist`: steps of about 1.4x."""
    steps, power = [], 1
    while power < nlist:
        steps += [power] + ([power * 3 // 2] if power > 1 else [])
        power *= 2
    return sorted({step for step in steps if step < nlist} | {nlist})


def tune_nprobe(index: faiss.Index, truth: np.ndarray, queries: np.ndarray,
                target: float = TARGET_RECALL, cutoff_scores: np.ndarray | None = None
                ) -> tuple[int, float]:
    """Smallest nprobe of `nprobe_steps` whose recall reaches `target` (or all lists if none does).

    Leaves `index` set to the chosen nprobe and returns it with the recall measured there
    (tie-tolerant when the exact k-th scores `cutoff_scores` are given, see `recall_at_k`).
    """
    for nprobe in nprobe_steps(faiss.extract_index_ivf(index).nlist):
        recall = _recall_with(index, truth, queries, cutoff_scores, nprobe=nprobe)
        if recall >= target:
            break
    return nprobe, recall


def tune_nprobe_and_k_factor(index: faiss.Index, truth: np.ndarray, queries: np.ndarray,
                             target: float, cutoff_scores: np.ndarray | None
                             ) -> tuple[int, float]:
    """`tune_nprobe` at START_K_FACTOR, and at each larger factor of `K_FACTORS` while the target
    is missed; a larger factor is first tried with every list probed, so one that cannot reach
    the target costs one search, not a scan of every nprobe. Leaves the index at the last factor
    tried and returns the chosen nprobe and its recall."""
    set_k_factor(index, START_K_FACTOR)
    nprobe, recall = tune_nprobe(index, truth, queries, target, cutoff_scores)
    nlist = faiss.extract_index_ivf(index).nlist
    for k_factor in reversed(K_FACTORS[:K_FACTORS.index(START_K_FACTOR)]):
        if recall >= target:
            break
        set_k_factor(index, k_factor)
        everything = _recall_with(index, truth, queries, cutoff_scores, nprobe=nlist)
        if everything >= target:
            return tune_nprobe(index, truth, queries, target, cutoff_scores)
        nprobe, recall = nlist, everything
    return nprobe, recall


def tune_k_factor(index: faiss.Index, truth: np.ndarray, queries: np.ndarray, target: float,
                  cutoff_scores: np.ndarray | None, recall: float) -> tuple[int, float]:
    """The smallest of `K_FACTORS`, from the index's current factor down, that keeps recall >=
    `target` at its current nprobe (the current one when even that misses it); `recall` is the
    one measured at the current factor."""
    current = int(refine_stage(index).k_factor)
    chosen = current, recall
    for k_factor in K_FACTORS[K_FACTORS.index(current) + 1:]:
        lower = _recall_with(index, truth, queries, cutoff_scores, k_factor=k_factor)
        if lower < target:
            break
        chosen = k_factor, lower
    set_k_factor(index, chosen[0])
    return chosen


def _recall_with(index: faiss.Index, truth: np.ndarray, queries: np.ndarray,
                 cutoff_scores: np.ndarray | None, nprobe: int | None = None,
                 k_factor: int | None = None) -> float:
    if nprobe is not None:
        set_nprobe(index, nprobe)
    if k_factor is not None:
        set_k_factor(index, k_factor)
    scores, found = index.search(queries, truth.shape[1])
    return recall_at_k(found, truth, None if cutoff_scores is None else scores, cutoff_scores)


def tune_index(index: faiss.Index, vectors: np.ndarray, ids: np.ndarray,
               training: np.ndarray, k: int = RECALL_K, target: float = TARGET_RECALL
               ) -> dict[str, Any]:
    """Search parameters and measured recall to store with the index; {} for exact indexes."""
    if _is_exact(index) or len(vectors) == 0:
        return {}
    k = min(k, len(vectors))
    queries = vectors[sample_queries(len(vectors), training)]
    exact_scores, truth = exact_top_k(vectors, ids, queries, k)
    cutoff = exact_scores[:, -1]
    tuned: dict[str, Any] = {"recall_k": k, "queries": len(queries), "measured_on": len(vectors)}
    refines = refine_stage(index) is not None
    ivf = faiss.try_extract_index_ivf(index) is not None
    if ivf:
        tune = tune_nprobe_and_k_factor if refines else tune_nprobe
        nprobe, recall = tune(index, truth, queries, target, cutoff)
        tuned.update(nprobe=nprobe, target=target)
    else:
        if refines:
            set_k_factor(index, START_K_FACTOR)
        recall = _recall_with(index, truth, queries, cutoff)
    if refines:
        k_factor, recall = tune_k_factor(index, truth, queries, target, cutoff, recall)
        tuned.update(k_factor=k_factor, target=target)
    tuned["recall"] = recall
    return tuned


def _is_exact(index: faiss.Index) -> bool:
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap) else index
    return isinstance(inner, faiss.IndexFlat)
