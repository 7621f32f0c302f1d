"""Exact search over a database too big for one score matrix: top-k and every positive's rank.

Scores are float32 inner products computed block by block (a block of queries against a chunk of
database rows), so memory stays bounded whatever the database size; the database may be a
memory-mapped array. Order: higher score first, ties broken by smaller database index, the rule
of `retrieval.metrics.rank_by_scores`, so results do not depend on block sizes.

The rank of a positive p of query q is 1 + the positives ranked before p + the other items
ranked before p. Positives are compared with one another through the same directly computed
scores, which keeps their ranks a strict order even where a chunked product rounds a score
differently; the other items are counted chunk by chunk. Full-ranking AP needs nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from retrieval.metrics import PADDING_ID, rank_by_scores

SCORE_BUDGET = 1 << 22  # floats in one (query block x database chunk) score matrix: 16 MB
QUERY_BLOCK = 1024
MIN_CHUNK = 256


@dataclass(frozen=True)
class ExactResult:
    top_ids: np.ndarray  # int64 (Q, k) database indices, best first; -1 pads
    top_scores: np.ndarray  # float32 (Q, k); -inf where padded
    positive_ranks: np.ndarray  # int64 (Q, P) 1-based ranks of the positives, ascending; 0 pads
    num_positives: np.ndarray  # int64 (Q,) m: positives among the valid database rows


def positive_ids(query_labels: np.ndarray, database_labels: np.ndarray,
                 valid: np.ndarray | None = None) -> np.ndarray:
    """(Q, P) ascending database indices sharing each query's label, -1 padded."""
    query_labels = np.asarray(query_labels, dtype=np.int64)
    database_labels = np.asarray(database_labels, dtype=np.int64)
    usable = np.arange(len(database_labels)) if valid is None else np.flatnonzero(valid)
    order = usable[np.argsort(database_labels[usable], kind="stable")]
    labels, starts, counts = np.unique(database_labels[order], return_index=True,
                                       return_counts=True)
    if not len(labels):
        return np.full((len(query_labels), 0), PADDING_ID, dtype=np.int64)
    where = np.clip(np.searchsorted(labels, query_labels), 0, len(labels) - 1)
    per_query = np.where(labels[where] == query_labels, counts[where], 0)
    width = int(per_query.max(initial=0))
    offsets = np.arange(width)
    present = offsets[None, :] < per_query[:, None]
    positions = starts[where][:, None] + offsets
    ids = np.full((len(query_labels), width), PADDING_ID, dtype=np.int64)
    ids[present] = order[positions[present]]
    return ids


def exact_search(queries: np.ndarray, database: np.ndarray, query_labels: np.ndarray,
                 database_labels: np.ndarray, k: int, valid: np.ndarray | None = None,
                 progress: bool = False, desc: str = "exact search",
                 query_block: int = QUERY_BLOCK, chunk: int | None = None) -> ExactResult:
    """Top-k of every query and the rank of each of its positives among all valid rows.

    `valid` (bool per database row) leaves rows out entirely: never returned, never counted,
    never positives (e.g. images that could not be embedded). Queries are taken `query_block`
    at a time against `chunk` database rows (default: a score matrix of SCORE_BUDGET floats).
    """
    queries = np.asarray(queries, dtype=np.float32)
    num_queries, num_database = len(queries), len(database)
    if queries.ndim != 2 or database.ndim != 2 or queries.shape[1] != database.shape[1]:
        raise ValueError(f"queries {queries.shape} and database {database.shape} must be "
                         "matrices of the same width")
    if k <= 0:
        raise ValueError(f"k must be a positive integer, got {k}")
    positives = positive_ids(query_labels, database_labels, valid)
    if query_block < 1 or (chunk is not None and chunk < 1):
        raise ValueError(f"query_block and chunk must be >= 1, got {query_block}, {chunk}")
    block = max(1, min(query_block, num_queries))
    chunk = chunk or max(MIN_CHUNK, SCORE_BUDGET // block)
    top_ids = np.full((num_queries, k), PADDING_ID, dtype=np.int64)
    top_scores = np.full((num_queries, k), -np.inf, dtype=np.float32)
    ranks = np.zeros(positives.shape, dtype=np.int64)
    total = -(-num_queries // block) * num_database
    with tqdm(total=total, unit="vec", unit_scale=True, desc=desc, disable=not progress,
              dynamic_ncols=True) as bar:
        for start in range(0, num_queries, block):
            rows = slice(start, start + block)
            state = _BlockState(queries[rows], positives[rows], np.asarray(query_labels)[rows],
                                database, k)
            for offset in range(0, num_database, chunk):
                stop = min(offset + chunk, num_database)
                scores = state.queries @ np.asarray(database[offset:stop], dtype=np.float32).T
                if valid is not None:
                    scores[:, ~np.asarray(valid[offset:stop], dtype=bool)] = -np.inf
                state.absorb(scores, offset, np.asarray(database_labels[offset:stop]))
                bar.update(stop - offset)
            top_ids[rows], top_scores[rows], ranks[rows] = state.result()
    return ExactResult(top_ids, top_scores, ranks, (ranks > 0).sum(axis=1).astype(np.int64))


class _BlockState:
    """Running top-k and counts of items beating each positive, for one block of queries."""

    def __init__(self, queries: np.ndarray, positives: np.ndarray, labels: np.ndarray,
                 database: np.ndarray, k: int) -> None:
        self.queries = np.ascontiguousarray(queries)
        self.labels = labels
        self.positives = positives
        self.present = positives != PADDING_ID
        gathered = np.asarray(database[np.where(self.present, positives, 0).reshape(-1)],
                              dtype=np.float32).reshape(*positives.shape, database.shape[1])
        scores = np.einsum("qd,qpd->qp", self.queries, gathered).astype(np.float32)
        self.positive_scores = np.where(self.present, scores, -np.inf).astype(np.float32)
        # +inf for padding: nothing is counted as beating a positive that does not exist.
        self.count_targets = np.where(self.present, scores, np.inf).astype(np.float32)
        self.threshold = self.count_targets.min(axis=1, initial=np.inf)
        self.beaten = self._positives_ahead()
        self.best_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        self.best_ids = np.full((len(queries), k), PADDING_ID, dtype=np.int64)

    def _positives_ahead(self) -> np.ndarray:
        score, ids = self.positive_scores, self.positives
        ahead = (score[:, None, :] > score[:, :, None]) | (
            (score[:, None, :] == score[:, :, None]) & (ids[:, None, :] < ids[:, :, None]))
        return (ahead & self.present[:, None, :]).sum(axis=2).astype(np.int64)

    def absorb(self, scores: np.ndarray, offset: int, chunk_labels: np.ndarray) -> None:
        self._merge_top(scores, offset)
        self._count_beating(scores, offset, chunk_labels)

    def _merge_top(self, scores: np.ndarray, offset: int) -> None:
        """Merge the chunk items that beat their row's current k-th score into the top-k.

        An item tying the k-th score cannot enter: every kept id is smaller. Per row, entering
        items follow the kept ones in ascending id order, so the position tie-break of
        `rank_by_scores` below is the database-index tie-break.
        """
        rows, columns = np.nonzero(scores > self.best_scores[:, -1:])
        if not len(rows):
            return
        counts = np.bincount(rows, minlength=len(scores))
        slots = np.arange(len(rows)) - (np.cumsum(counts) - counts)[rows]
        entering = np.full((len(scores), int(counts.max())), -np.inf, dtype=np.float32)
        entering_ids = np.full(entering.shape, PADDING_ID, dtype=np.int64)
        entering[rows, slots] = scores[rows, columns]
        entering_ids[rows, slots] = offset + columns
        merged = np.concatenate([self.best_scores, entering], axis=1)
        ids = np.concatenate([self.best_ids, entering_ids], axis=1)
        order = rank_by_scores(merged, self.best_ids.shape[1])
        self.best_scores = np.take_along_axis(merged, order, axis=1)
        self.best_ids = np.take_along_axis(ids, order, axis=1)

    def _count_beating(self, scores: np.ndarray, offset: int, chunk_labels: np.ndarray) -> None:
        """Add, per positive, the non-positive items of this chunk ranked before it."""
        others = np.where(chunk_labels[None, :] == self.labels[:, None], -np.inf, scores)
        reaching = np.flatnonzero((others >= self.threshold[:, None]).any(axis=0))
        if not len(reaching):
            return
        others, items = others[:, reaching], offset + reaching
        for p in range(self.positives.shape[1]):
            target = self.count_targets[:, p : p + 1]
            self.beaten[:, p] += np.count_nonzero(others > target, axis=1)
            ties = others == target
            if ties.any():  # rare: equal scores, the smaller database index goes first
                earlier = items[None, :] < self.positives[:, p : p + 1]
                self.beaten[:, p] += np.count_nonzero(ties & earlier, axis=1)

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ids = np.where(np.isneginf(self.best_scores), PADDING_ID, self.best_ids)
        ranks = np.where(self.present, self.beaten + 1, np.iinfo(np.int64).max)
        ranks = np.sort(ranks, axis=1)
        return ids, self.best_scores, np.where(ranks == np.iinfo(np.int64).max, 0, ranks)


def ap_from_ranks(positive_ranks: np.ndarray, num_positives: np.ndarray) -> np.ndarray:
    """Full-ranking AP from the ranks of all positives: (1/m) * sum_i i / rank_i; NaN if m = 0.

    Equal to `retrieval.metrics.ap_full` on the whole relevance matrix, which a million-item
    database cannot afford to build.
    """
    ranks = np.asarray(positive_ranks, dtype=np.int64)
    m = np.asarray(num_positives, dtype=np.float64)
    found = ranks > 0
    if np.any(found.sum(axis=1) != m):
        raise ValueError("every positive needs a rank: counts of ranks and num_positives differ")
    nth = np.cumsum(found, axis=1)
    precision = np.where(found, nth / np.where(found, ranks, 1), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(m == 0, np.nan, precision.sum(axis=1) / m)
