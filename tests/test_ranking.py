"""Streaming exact search: top-k and positive ranks equal a brute-force sort, ties included."""

from __future__ import annotations

import numpy as np
import pytest

from benchmark.ranking import ap_from_ranks, exact_search, positive_ids
from retrieval.metrics import (
    ap_at_k_standard,
    ap_full,
    rank_by_scores,
    relevance_matrix,
    tie_break_keys,
)


def tied_problem(seed: int, queries: int = 9, items: int = 70, dim: int = 4):
    """Vectors with entries in {-1, -0.5, 0, 0.5, 1}: exact float sums, many tied scores."""
    rng = np.random.default_rng(seed)
    q = (rng.integers(-2, 3, (queries, dim)) / 2).astype(np.float32)
    db = (rng.integers(-2, 3, (items, dim)) / 2).astype(np.float32)
    query_labels = rng.integers(0, 5, queries)
    database_labels = rng.integers(-1, 6, items)  # -1: distractors, never a query's label
    valid = rng.random(items) > 0.15
    return q, db, query_labels, database_labels, valid


def brute_force(q, db, query_labels, database_labels, valid):
    """Full ranking by one score matrix: invalid rows last, then dropped."""
    scores = (q @ db.T).astype(np.float64)
    scores[:, ~valid] = -np.inf
    order = rank_by_scores(scores, db.shape[0])
    order = np.where(np.isneginf(np.take_along_axis(scores, order, 1)), -1, order)
    rel = relevance_matrix(order, query_labels, database_labels)
    m = np.array([(valid & (database_labels == label)).sum() for label in query_labels])
    return order, rel, m


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(("query_block", "chunk"), [(1, 1), (4, 7), (1024, None)])
def test_matches_brute_force_sort_with_ties(seed, query_block, chunk):
    q, db, query_labels, database_labels, valid = tied_problem(seed)
    order, rel, m = brute_force(q, db, query_labels, database_labels, valid)
    result = exact_search(q, db, query_labels, database_labels, k=12, valid=valid,
                          query_block=query_block, chunk=chunk)
    np.testing.assert_array_equal(result.top_ids, order[:, :12])
    np.testing.assert_array_equal(result.num_positives, m)
    for row in range(len(q)):
        expected = np.flatnonzero(rel[row]) + 1
        got = result.positive_ranks[row]
        np.testing.assert_array_equal(got[got > 0], expected)
        assert (got[len(expected):] == 0).all()
    np.testing.assert_allclose(ap_from_ranks(result.positive_ranks, result.num_positives),
                               ap_full(rel, m), equal_nan=True)


def test_k_beyond_valid_rows_pads_with_minus_one():
    db = np.eye(3, dtype=np.float32)
    result = exact_search(db[:1], db, np.array([0]), np.array([0, 1, 2]), k=5,
                          valid=np.array([True, False, True]))
    np.testing.assert_array_equal(result.top_ids, [[0, 2, -1, -1, -1]])
    assert np.isneginf(result.top_scores[0, 2:]).all()


def test_equal_scores_follow_the_tie_keys_even_across_chunks():
    db = np.ones((5, 2), dtype=np.float32) / np.sqrt(2)  # every score ties
    result = exact_search(db[:1], db, np.array([7]), np.array([-1, 7, -1, 7, -1]), k=5,
                          chunk=2, tie_keys=np.array([4, 0, 3, 2, 1]))
    np.testing.assert_array_equal(result.top_ids, [[1, 4, 3, 2, 0]])
    np.testing.assert_array_equal(result.positive_ranks, [[1, 3]])
    assert ap_from_ranks(result.positive_ranks, result.num_positives)[0] == pytest.approx(
        (1 / 1 + 2 / 3) / 2)
    assert result.tied_at_cutoff.tolist() == [True] and result.tied_in_top_k.tolist() == [True]


def protocol_layout(instances: int = 10, rows: int = 6, distractors: int = 200):
    """The benchmark's order: every database row (all positives) first, then the distractors;
    one query per database row of each instance."""
    database_labels = np.concatenate([np.repeat(np.arange(instances), rows),
                                      np.full(distractors, -1)])
    return np.repeat(np.arange(instances), rows), database_labels


def chance_map(m: int, n: int, k: int) -> float:
    """Expected AP@k of a uniformly random ranking: E[rel_i * hits_i] / i summed over i <= k,
    with P(rel_i) = m/n and P(rel_i, rel_j) = m(m-1) / (n(n-1)), divided by min(m, k)."""
    i = np.arange(1, k + 1)
    return float(np.sum((m / n + (i - 1) * m * (m - 1) / (n * (n - 1))) / i) / min(m, k))


def map_at_100(result, query_labels, database_labels) -> float:
    rel = relevance_matrix(result.top_ids, query_labels, database_labels)
    return float(np.mean(ap_at_k_standard(rel, result.num_positives, 100)))


def test_all_tied_scores_score_chance_not_the_positives_first_order():
    query_labels, database_labels = protocol_layout()
    n = len(database_labels)
    queries = np.ones((len(query_labels), 2), dtype=np.float32)
    database = np.ones((n, 2), dtype=np.float32)  # every score ties
    chance = chance_map(6, n, 100)  # 0.027
    by_index = exact_search(queries, database, query_labels, database_labels, k=100,
                            tie_keys=np.arange(n))
    assert map_at_100(by_index, query_labels, database_labels) > 0.2  # the old, inflated rule
    seeded = exact_search(queries, database, query_labels, database_labels, k=100)
    assert map_at_100(seeded, query_labels, database_labels) == pytest.approx(chance, abs=0.01)
    assert seeded.tied_at_cutoff.all() and seeded.tied_in_top_k.all()
    # Averaged over tie-break seeds, the result is the expectation of a random ranking.
    means = [map_at_100(exact_search(queries, database, query_labels, database_labels, k=100,
                                     tie_keys=tie_break_keys(np.arange(n), seed)),
                        query_labels, database_labels) for seed in range(30)]
    assert np.mean(means) == pytest.approx(chance, abs=0.004)


@pytest.mark.parametrize("seed", range(3))
def test_results_do_not_change_when_the_database_rows_are_reordered(seed):
    q, db, query_labels, database_labels, valid = tied_problem(seed, items=120)
    row_ids = np.arange(1000, 1120)  # image ids: they travel with the rows
    moved = np.random.default_rng(seed).permutation(len(db))
    before = exact_search(q, db, query_labels, database_labels, k=15, valid=valid,
                          tie_keys=tie_break_keys(row_ids))
    after = exact_search(q, db[moved], query_labels, database_labels[moved], k=15,
                         valid=valid[moved], tie_keys=tie_break_keys(row_ids[moved]), chunk=17)
    assert before.tied_in_top_k.any()  # the ties are there to be broken
    np.testing.assert_array_equal(np.where(after.top_ids >= 0, moved[after.top_ids], -1),
                                  before.top_ids)
    np.testing.assert_array_equal(after.positive_ranks, before.positive_ranks)
    np.testing.assert_array_equal(after.tied_at_cutoff, before.tied_at_cutoff)


def test_tie_flags_on_a_hand_made_case():
    # Scores of query 0: 1, 1, 0, ...: its positive (row 0) ties distractor 1 at ranks 1-2.
    # Query 1: 1, 1, 0.9, 0.5, 0.5, 0.27, 0.27: its positive (row 3) ties row 4 at ranks 4-5.
    # Query 2: 0, 0, 1, 0, 0, 0.3, 0.3: its positives (rows 5, 6) tie only each other.
    db = np.array([[1, 0], [1, 0], [0, 1], [0.5, 0], [0.5, 0], [0, 0.3], [0, 0.3]],
                  dtype=np.float32)
    q = np.array([[1, 0], [1, 0.9], [0, 1]], dtype=np.float32)
    labels = np.array([0, -1, -1, 1, -1, 2, 2])
    narrow = exact_search(q, db, np.array([0, 1, 2]), labels, k=1)
    assert narrow.tied_at_cutoff.tolist() == [True, False, False]
    assert narrow.tied_in_top_k.tolist() == [True, False, False]
    wide = exact_search(q, db, np.array([0, 1, 2]), labels, k=4)
    assert wide.tied_at_cutoff.tolist() == [False, True, False]
    assert wide.tied_in_top_k.tolist() == [True, True, False]


def test_bad_tie_keys_are_refused():
    db = np.eye(3, dtype=np.float32)
    with pytest.raises(ValueError, match="distinct"):
        exact_search(db, db, np.arange(3), np.arange(3), k=1, tie_keys=np.array([0, 1, 1]))
    with pytest.raises(ValueError, match="one per database row"):
        exact_search(db, db, np.arange(3), np.arange(3), k=1, tie_keys=np.arange(2))


def test_query_without_positive_has_no_ranks_and_nan_ap():
    db = np.eye(3, dtype=np.float32)
    result = exact_search(db, db, np.array([0, 9, 2]), np.array([0, 1, 2]), k=2)
    np.testing.assert_array_equal(result.num_positives, [1, 0, 1])
    np.testing.assert_array_equal(result.positive_ranks, [[1], [0], [1]])
    ap = ap_from_ranks(result.positive_ranks, result.num_positives)
    assert ap[0] == 1.0 and np.isnan(ap[1]) and ap[2] == 1.0


def test_positive_ids_are_sorted_per_query_and_skip_invalid_rows():
    ids = positive_ids(np.array([5, 6, 8]), np.array([6, 5, 6, -1, 6]),
                       valid=np.array([True, True, False, True, True]))
    np.testing.assert_array_equal(ids, [[1, -1], [0, 4], [-1, -1]])


def test_ap_from_ranks_refuses_missing_ranks():
    with pytest.raises(ValueError, match="every positive needs a rank"):
        ap_from_ranks(np.array([[1, 0]]), np.array([2]))


def test_mismatched_widths_are_refused():
    with pytest.raises(ValueError, match="same width"):
        exact_search(np.zeros((1, 3), np.float32), np.zeros((4, 2), np.float32),
                     np.array([0]), np.zeros(4, int), k=1)
