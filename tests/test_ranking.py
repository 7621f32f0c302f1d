"""Streaming exact search: top-k and positive ranks equal a brute-force sort, ties included."""

from __future__ import annotations

import numpy as np
import pytest

from benchmark.ranking import ap_from_ranks, exact_search, positive_ids
from retrieval.metrics import ap_full, rank_by_scores, relevance_matrix


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


def test_equal_scores_rank_smaller_index_first_even_across_chunks():
    db = np.ones((5, 2), dtype=np.float32) / np.sqrt(2)  # every score ties
    result = exact_search(db[:1], db, np.array([7]), np.array([-1, 7, -1, 7, -1]), k=5,
                          chunk=2)
    np.testing.assert_array_equal(result.top_ids, [[0, 1, 2, 3, 4]])
    np.testing.assert_array_equal(result.positive_ranks, [[2, 4]])
    assert ap_from_ranks(result.positive_ranks, result.num_positives)[0] == pytest.approx(
        (1 / 2 + 2 / 4) / 2)


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
