"""Exact search over a database too big for one score matrix: top-k and every positive's rank.

Scores are float32 inner products computed block by block (a block of queries against a chunk of
database rows), so memory stays bounded whatever the database size; the database may be a
memory-mapped array. Order: higher score first, equal scores by smaller tie key (one per database
row, by default `retrieval.metrics.tie_break_keys` of the row index), the rule of
`retrieval.metrics.rank_by_scores`, so results depend neither on block sizes nor, with keys that
follow the rows (e.g. of image ids), on the order of the database rows.

The rank of a positive p of query q is 1 + the positives ranked before p + the other items
ranked before p. Positives are compared with one another through the same directly computed
scores, which keeps their ranks a strict order even where a chunked product rounds a score
differently; the other items are counted chunk by chunk. Full-ranking AP needs nothing else.
The same counts tell which queries have a positive tied with a non-positive, where the tie-break
rather than the embedding decides the metric.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from retrieval.metrics import PADDING_ID, rank_by_scores, tie_break_keys

SCORE_BUDGET = 1 << 22  # floats in one (query block x database chunk) score matrix: 16 MB
QUERY_BLOCK = 1024
MIN_CHUNK = 256


@dataclass(frozen=True)
class ExactResult:
    top_ids: np.ndarray  # int64 (Q, k) database indices, best first; -1 pads
    top_scores: np.ndarray  # float32 (Q, k); -inf where padded
    positive_ranks: np.ndarray  # int64 (Q, P) 1-based ranks of the positives, ascending; 0 pads
    num_positives: np.ndarray  # int64 (Q,) m: positives among the valid database rows
    # bool (Q,): a positive shares its score with a non-positive, and that tie group holds rank k
    # (the tie-break decides what is in the top k) / starts within the top k (it decides ranks)
    tied_at_cutoff: np.ndarray
    tied_in_top_k: np.ndarray


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
                 query_block: int = QUERY_BLOCK, chunk: int | None = None,
                 tie_keys: np.ndarray | None = None) -> ExactResult:
    """Top-k of every query and the rank of each of its positives among all valid rows.

    `valid` (bool per database row) leaves rows out entirely: never returned, never counted,
    never positives (e.g. images that could not be embedded). Queries are taken `query_block`
    at a time against `chunk` database rows (default: a score matrix of SCORE_BUDGET floats).
    `tie_keys`: distinct integers, one per database row, ordering equal scores (smaller first);
    default `tie_break_keys` of the row indices.
    """
    queries = np.asarray(queries, dtype=np.float32)
    num_queries, num_database = len(queries), len(database)
    if queries.ndim != 2 or database.ndim != 2 or queries.shape[1] != database.shape[1]:
        raise ValueError(f"queries {queries.shape} and database {database.shape} must be "
                         "matrices of the same width")
    if k <= 0:
        raise ValueError(f"k must be a positive integer, got {k}")
    positives = positive_ids(query_labels, database_labels, valid)
    keys = _check_tie_keys(tie_keys, num_database)
    if query_block < 1 or (chunk is not None and chunk < 1):
        raise ValueError(f"query_block and chunk must be >= 1, got {query_block}, {chunk}")
    block = max(1, min(query_block, num_queries))
    chunk = chunk or max(MIN_CHUNK, SCORE_BUDGET // block)
    top_ids = np.full((num_queries, k), PADDING_ID, dtype=np.int64)
    top_scores = np.full((num_queries, k), -np.inf, dtype=np.float32)
    ranks = np.zeros(positives.shape, dtype=np.int64)
    tied_at_cutoff = np.zeros(num_queries, dtype=bool)
    tied_in_top_k = np.zeros(num_queries, dtype=bool)
    total = -(-num_queries // block) * num_database
    with tqdm(total=total, unit="vec", unit_scale=True, desc=desc, disable=not progress,
              dynamic_ncols=True) as bar:
        for start in range(0, num_queries, block):
            rows = slice(start, start + block)
            state = _BlockState(queries[rows], positives[rows], np.asarray(query_labels)[rows],
                                database, keys, k)
            for offset in range(0, num_database, chunk):
                stop = min(offset + chunk, num_database)
                scores = state.queries @ np.asarray(database[offset:stop], dtype=np.float32).T
                if valid is not None:
                    scores[:, ~np.asarray(valid[offset:stop], dtype=bool)] = -np.inf
                state.absorb(scores, offset, np.asarray(database_labels[offset:stop]),
                             keys[offset:stop])
                bar.update(stop - offset)
            top_ids[rows], top_scores[rows], ranks[rows] = state.result()
            tied_at_cutoff[rows], tied_in_top_k[rows] = state.ties(k)
    return ExactResult(top_ids, top_scores, ranks, (ranks > 0).sum(axis=1).astype(np.int64),
                       tied_at_cutoff, tied_in_top_k)


def _check_tie_keys(tie_keys: np.ndarray | None, num_database: int) -> np.ndarray:
    if tie_keys is None:
        return tie_break_keys(np.arange(num_database))
    keys = np.asarray(tie_keys)
    if keys.shape != (num_database,) or not np.issubdtype(keys.dtype, np.integer):
        raise ValueError(f"tie_keys must be {num_database} integers (one per database row), "
                         f"got {keys.dtype} {keys.shape}")
    if len(np.unique(keys)) != num_database:
        raise ValueError("tie_keys must be distinct: equal keys would leave ties unresolved")
    return keys.astype(np.int64)


class _BlockState:
    """Running top-k and, per positive, counts of the items around it, for one block of queries.

    Per positive p: `strict` items score higher, `ties_ahead` score the same with a smaller tie
    key (rank = strict + ties_ahead + 1), `tied_positives` / `tied_others` score the same. Its tie
    group spans ranks strict + 1 .. strict + 1 + tied_positives + tied_others.
    """

    def __init__(self, queries: np.ndarray, positives: np.ndarray, labels: np.ndarray,
                 database: np.ndarray, keys: np.ndarray, k: int) -> None:
        self.queries = np.ascontiguousarray(queries)
        self.labels = labels
        self.positives = positives
        self.present = positives != PADDING_ID
        rows = np.where(self.present, positives, 0)
        gathered = np.asarray(database[rows.reshape(-1)],
                              dtype=np.float32).reshape(*positives.shape, database.shape[1])
        scores = np.einsum("qd,qpd->qp", self.queries, gathered).astype(np.float32)
        self.positive_keys = np.where(self.present, keys[rows], np.iinfo(np.int64).max)
        self.positive_scores = np.where(self.present, scores, -np.inf).astype(np.float32)
        # +inf for padding: nothing is counted as beating a positive that does not exist.
        self.count_targets = np.where(self.present, scores, np.inf).astype(np.float32)
        self.threshold = self.count_targets.min(axis=1, initial=np.inf)
        self._compare_positives()
        self.tied_others = np.zeros(positives.shape, dtype=np.int64)
        self.best_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        self.best_ids = np.full((len(queries), k), PADDING_ID, dtype=np.int64)
        self.best_keys = np.full((len(queries), k), np.iinfo(np.int64).max, dtype=np.int64)

    def _compare_positives(self) -> None:
        score, keys = self.positive_scores, self.positive_keys
        other = self.present[:, None, :] & ~np.eye(score.shape[1], dtype=bool)
        equal = (score[:, None, :] == score[:, :, None]) & other
        self.strict = ((score[:, None, :] > score[:, :, None]) & other).sum(axis=2)
        self.ties_ahead = (equal & (keys[:, None, :] < keys[:, :, None])).sum(axis=2)
        self.tied_positives = equal.sum(axis=2)

    def absorb(self, scores: np.ndarray, offset: int, chunk_labels: np.ndarray,
               chunk_keys: np.ndarray) -> None:
        self._merge_top(scores, offset, chunk_keys)
        self._count_around(scores, chunk_labels, chunk_keys)

    def _merge_top(self, scores: np.ndarray, offset: int, chunk_keys: np.ndarray) -> None:
        """Merge the chunk items that beat their row's current k-th item into the top-k.

        An item beats it with a higher score, or an equal one and a smaller tie key; rows left
        out (score -inf) never enter.
        """
        kth_score, kth_key = self.best_scores[:, -1:], self.best_keys[:, -1:]
        wins = (scores > kth_score) | (
            (scores == kth_score) & (chunk_keys[None, :] < kth_key) & np.isfinite(scores))
        rows, columns = np.nonzero(wins)
        if not len(rows):
            return
        counts = np.bincount(rows, minlength=len(scores))
        slots = np.arange(len(rows)) - (np.cumsum(counts) - counts)[rows]
        width = (len(scores), int(counts.max()))
        entering = np.full(width, -np.inf, dtype=np.float32)
        entering_ids = np.full(width, PADDING_ID, dtype=np.int64)
        entering_keys = np.full(width, np.iinfo(np.int64).max, dtype=np.int64)
        entering[rows, slots] = scores[rows, columns]
        entering_ids[rows, slots] = offset + columns
        entering_keys[rows, slots] = chunk_keys[columns]
        merged = np.concatenate([self.best_scores, entering], axis=1)
        ids = np.concatenate([self.best_ids, entering_ids], axis=1)
        keys = np.concatenate([self.best_keys, entering_keys], axis=1)
        order = rank_by_scores(merged, self.best_ids.shape[1], tie_keys=keys)
        self.best_scores = np.take_along_axis(merged, order, axis=1)
        self.best_ids = np.take_along_axis(ids, order, axis=1)
        self.best_keys = np.take_along_axis(keys, order, axis=1)

    def _count_around(self, scores: np.ndarray, chunk_labels: np.ndarray,
                      chunk_keys: np.ndarray) -> None:
        """Add, per positive, the non-positive items of this chunk above it and tied with it."""
        others = np.where(chunk_labels[None, :] == self.labels[:, None], -np.inf, scores)
        reaching = np.flatnonzero((others >= self.threshold[:, None]).any(axis=0))
        if not len(reaching):
            return
        others, item_keys = others[:, reaching], chunk_keys[reaching]
        for p in range(self.positives.shape[1]):
            target = self.count_targets[:, p : p + 1]
            self.strict[:, p] += np.count_nonzero(others > target, axis=1)
            ties = others == target
            if ties.any():  # rare: equal scores, the smaller tie key goes first
                self.tied_others[:, p] += np.count_nonzero(ties, axis=1)
                earlier = item_keys[None, :] < self.positive_keys[:, p : p + 1]
                self.ties_ahead[:, p] += np.count_nonzero(ties & earlier, axis=1)

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ids = np.where(np.isneginf(self.best_scores), PADDING_ID, self.best_ids)
        ranks = np.where(self.present, self.strict + self.ties_ahead + 1, np.iinfo(np.int64).max)
        ranks = np.sort(ranks, axis=1)
        return ids, self.best_scores, np.where(ranks == np.iinfo(np.int64).max, 0, ranks)

    def ties(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Per query: a positive tied with a non-positive in a group holding rank k / starting
        within the top k."""
        first = self.strict + 1
        last = first + self.tied_positives + self.tied_others
        mixed = self.present & (self.tied_others > 0)
        at_cutoff = (mixed & (first <= k) & (k <= last)).any(axis=1)
        return at_cutoff, (mixed & (first <= k)).any(axis=1)


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
