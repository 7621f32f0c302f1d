"""Ranking metrics on hand-computed rankings; expected values are derived in the comments."""

import math

import numpy as np
import pytest

from retrieval.metrics import (
    ap_at_k_paper,
    ap_at_k_standard,
    ap_full,
    knn_recall,
    mean_by_group,
    rank_by_scores,
    recall_at_k,
    relevance_matrix,
    summarise,
    tie_break_keys,
)


def rel_from_ranks(ranks_per_query: list[list[int]], width: int) -> np.ndarray:
    """Bool relevance matrix with True at the given 1-based ranks."""
    rel = np.zeros((len(ranks_per_query), width), dtype=bool)
    for row, ranks in enumerate(ranks_per_query):
        rel[row, np.asarray(ranks, dtype=int) - 1] = True
    return rel


# Positives at ranks 1 and 3 of the top 5: sum P(i) rel_i = 1/1 + 2/3 = 5/3.
HITS_1_3 = rel_from_ranks([[1, 3]] * 3, 5)


def test_ap_standard_divides_by_min_m_k():
    # m=2: (5/3)/2 = 5/6; m=4 (only 2 of 4 found): (5/3)/4 = 5/12; m=10 > k: (5/3)/5 = 1/3.
    ap = ap_at_k_standard(HITS_1_3, np.array([2, 4, 10]), k=5)
    assert ap == pytest.approx([5 / 6, 5 / 12, 1 / 3])
    assert ap.dtype == np.float64


def test_ap_paper_divides_by_found():
    # Two found in every row: (5/3)/2 = 5/6 whatever m is.
    assert ap_at_k_paper(HITS_1_3, k=5) == pytest.approx([5 / 6] * 3)


def test_ap_at_k_ignores_ranks_beyond_k():
    # Ranks 1, 3 and 4; at k=3 only ranks 1 and 3 count: (1 + 2/3) / min(5, 3) = 5/9.
    rel = rel_from_ranks([[1, 3, 4]], 5)
    assert ap_at_k_standard(rel, np.array([5]), k=3) == pytest.approx([5 / 9])
    # Paper at k=3: (5/3) / 2 found = 5/6.
    assert ap_at_k_paper(rel, k=3) == pytest.approx([5 / 6])


def test_ap_full_divides_by_m():
    # Full ranking of 5 with hits at 1, 3: m=2 -> 5/6; m=4 -> 5/12; m=10 -> 1/6.
    assert ap_full(HITS_1_3, np.array([2, 4, 10])) == pytest.approx([5 / 6, 5 / 12, 1 / 6])


def test_k_larger_than_database_pads_and_scores():
    # db labels [7, 8, 7], query label 7, scores [0.1, 0.9, 0.5] -> ranking [1, 2, 0, -1, -1];
    # rel = [F, T, T, F, F], m = 2: (1/2 + 2/3) / 2 = 7/12 for both definitions.
    ranked = rank_by_scores(np.array([[0.1, 0.9, 0.5]]), k=5)
    assert ranked.tolist() == [[1, 2, 0, -1, -1]]
    rel = relevance_matrix(ranked, np.array([7]), np.array([7, 8, 7]))
    assert rel.tolist() == [[False, True, True, False, False]]
    assert ap_at_k_standard(rel, np.array([2]), k=5) == pytest.approx([7 / 12])
    assert ap_at_k_paper(rel, k=5) == pytest.approx([7 / 12])


def test_two_map_at_100_definitions_differ_only_when_positives_are_missed():
    rel = rel_from_ranks([[2, 5, 50], [1, 4], [1], []], 100)
    m = np.array([3, 150, 5, 0])
    standard = ap_at_k_standard(rel, m, k=100)
    paper = ap_at_k_paper(rel, k=100, num_positives=m)
    # Row 0, all 3 positives found: (1/2 + 2/5 + 3/50) / 3 = 0.96 / 3 = 0.32 in both.
    assert standard[0] == pytest.approx(0.32) and paper[0] == pytest.approx(0.32)
    # Row 1, m=150 > k: (1 + 2/4) = 1.5; standard 1.5/100 = 0.015, paper 1.5/2 = 0.75.
    assert standard[1] == pytest.approx(0.015) and paper[1] == pytest.approx(0.75)
    # Row 2, one of 5 found at rank 1: standard 1/5, paper 1.
    assert standard[2] == pytest.approx(0.2) and paper[2] == pytest.approx(1.0)
    # Row 3, no positive in the database: undefined in both.
    assert math.isnan(standard[3]) and math.isnan(paper[3])


def test_paper_ap_is_zero_when_nothing_found_and_m_unknown():
    assert ap_at_k_paper(rel_from_ranks([[]], 4), k=4).tolist() == [0.0]


def test_queries_without_positive_are_nan_and_counted():
    rel = rel_from_ranks([[1], [], [2]], 3)
    ap = ap_at_k_standard(rel, np.array([1, 0, 1]), k=3)
    # Row 0: 1/1 = 1; row 1: NaN; row 2: (1/2)/1 = 0.5.
    assert ap[0] == 1.0 and math.isnan(ap[1]) and ap[2] == 0.5
    assert math.isnan(ap_full(rel, np.array([1, 0, 1]))[1])
    assert summarise(ap) == {"mean": 0.75, "count": 2, "no_positive_count": 1}
    assert summarise([math.nan, math.nan]) == {"mean": None, "count": 0, "no_positive_count": 2}


def test_recall_at_1_and_10_is_hit_rate():
    # Rows: hit at rank 1; hit at rank 5; hits at 11 and 12 only; no positive in the database.
    rel = rel_from_ranks([[1], [5], [11, 12], []], 12)
    m = np.array([1, 3, 2, 0])
    assert recall_at_k(rel, 1, m)[:3].tolist() == [1.0, 0.0, 0.0]
    assert recall_at_k(rel, 10, m)[:3].tolist() == [1.0, 1.0, 0.0]
    assert math.isnan(recall_at_k(rel, 10, m)[3])
    assert recall_at_k(rel, 12).tolist() == [1.0, 1.0, 1.0, 0.0]


def test_knn_recall_partial_overlap():
    approx = np.array([[0, 1, 2, 3], [5, 6, 7, 8], [9, -1, -1, -1], [3, 3, 4, -1], [1, 2, 3, 4]])
    exact = np.array([[0, 2, 4, 6], [8, 7, 6, 5], [9, 10, -1, -1], [3, 4, 5, 6], [-1] * 4])
    # Per query: 2/4, 4/4 (order irrelevant), 1/2 (padding ignored), 2/4 (duplicate 3 counted
    # once); the last query has no exact neighbour and is excluded: mean = 2.5 / 4 = 0.625.
    assert knn_recall(approx, exact) == pytest.approx(0.625)
    assert math.isnan(knn_recall(np.array([[1, -1]]), np.array([[-1, -1]])))


def test_relevance_matrix_marks_padding_irrelevant():
    ranked = np.array([[0, 2, -1], [1, 0, 2]])
    rel = relevance_matrix(ranked, np.array([5, 6]), np.array([5, 6, 5]))
    assert rel.tolist() == [[True, True, False], [True, False, False]]


def test_rank_ties_follow_the_given_keys():
    scores = np.array([[0.5, 0.9, 0.5, 0.5, 0.1], [0.2, 0.2, 0.2, 0.2, 0.2]])
    by_index = np.arange(5)
    assert rank_by_scores(scores, 2, tie_keys=by_index).tolist() == [[1, 0], [0, 1]]
    assert rank_by_scores(scores, 5, tie_keys=by_index).tolist() == [[1, 0, 2, 3, 4],
                                                                      [0, 1, 2, 3, 4]]
    # Keys 4..0 reverse every tie; per-row keys order each row on its own.
    assert rank_by_scores(scores, 5, tie_keys=by_index[::-1]).tolist() == [[1, 3, 2, 0, 4],
                                                                            [4, 3, 2, 1, 0]]
    per_row = np.array([[0, 0, 0, 0, 0], [3, 1, 4, 0, 2]])
    assert rank_by_scores(scores, 3, tie_keys=per_row).tolist() == [[1, 0, 2], [3, 1, 4]]
    # Lower is better (distances): 0.1 first, then the 0.5 tie by key.
    assert rank_by_scores(scores[:1], 3, higher_is_better=False,
                          tie_keys=by_index).tolist() == [[4, 0, 2]]


def test_default_ties_do_not_follow_the_column_order():
    # Every score tied: the default order is tie_break_keys of the columns, not 0, 1, 2, ...
    ranked = rank_by_scores(np.zeros((1, 50)), 50)[0]
    assert sorted(ranked.tolist()) == list(range(50))
    np.testing.assert_array_equal(ranked, np.argsort(tie_break_keys(np.arange(50))))
    assert ranked[:10].tolist() != list(range(10))


def test_tie_break_keys_are_a_seeded_permutation_that_follows_the_ids():
    ids = np.array([10, 3, 77, 5, 1_000_000, 42])
    keys = tie_break_keys(ids)
    assert sorted(keys.tolist()) == list(range(6))
    np.testing.assert_array_equal(keys, tie_break_keys(ids))
    # Reordered ids carry their order with them: the relative order of any two ids is kept.
    order = np.array([4, 0, 5, 1, 3, 2])
    moved = tie_break_keys(ids[order])
    np.testing.assert_array_equal(np.argsort(moved), np.argsort(keys[order]))
    many = np.arange(1_000)
    assert not np.array_equal(tie_break_keys(many, seed=1), tie_break_keys(many, seed=2))


def test_rank_tie_at_partition_boundary():
    # Index 0 is best; the 2nd place is a 40-way tie at 0.5 straddling the k=3 boundary, laid
    # out so the tied items appear after worse ones: the winners must be indices 2 and 4.
    scores = np.array([0.9] + [0.1, 0.5, 0.1, 0.5] + [0.5] * 38 + [0.1])
    by_index = np.arange(len(scores))
    assert rank_by_scores(scores[None, :], 3, tie_keys=by_index).tolist() == [[0, 2, 4]]
    assert rank_by_scores(-scores[None, :], 3, higher_is_better=False,
                          tie_keys=by_index).tolist() == [[0, 2, 4]]


@pytest.mark.parametrize("keys", [None, "per_row"])
def test_rank_matches_full_lexsort_on_heavily_tied_scores(keys):
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(20, 300)).astype(np.float64)
    tie_keys = None if keys is None else rng.permuted(np.tile(np.arange(300), (20, 1)), axis=1)
    expected_keys = (np.broadcast_to(tie_break_keys(np.arange(300)), scores.shape)
                     if tie_keys is None else tie_keys)
    for k in (1, 7, 150, 299):
        expected = np.array([np.lexsort((key, -row))[:k]
                             for key, row in zip(expected_keys, scores)])
        assert np.array_equal(rank_by_scores(scores, k, tie_keys=tie_keys), expected)


def paper_ap_by_loop(ranked_labels: list[int], query_label: int, k: int) -> float:
    """The published evaluation, written out: precision at each hit in the top k, summed and
    divided by the number of hits (0 when there is none)."""
    hits, total = 0, 0.0
    for rank, label in enumerate(ranked_labels[:k], start=1):
        if label == query_label:
            hits += 1
            total += hits / rank
    return total / hits if hits else 0.0


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("k", [1, 5, 20, 60])  # 60 > N = 40: the ranking is padded
def test_paper_ap_matches_the_published_formula_on_random_tied_rankings(seed, k):
    rng = np.random.default_rng(seed)
    num_database, num_queries = 40, 30
    db_labels = rng.integers(0, 6, num_database)  # m around 7: above k = 1 and 5
    query_labels = rng.integers(0, 8, num_queries)  # labels 6, 7: m = 0
    scores = rng.integers(0, 3, (num_queries, num_database)).astype(np.float64)  # many ties
    ranked = rank_by_scores(scores, k)
    rel = relevance_matrix(ranked, query_labels, db_labels)
    m = (query_labels[:, None] == db_labels[None, :]).sum(axis=1)
    assert (m == 0).any() and (k >= 20 or (m > k).any())  # the edge cases are present
    expected = [paper_ap_by_loop([int(db_labels[i]) for i in row if i >= 0], int(label), k)
                for row, label in zip(ranked, query_labels)]
    np.testing.assert_allclose(ap_at_k_paper(rel, k), expected)  # the published code: m = 0 -> 0
    ours = ap_at_k_paper(rel, k, num_positives=m)
    np.testing.assert_allclose(ours[m > 0], np.asarray(expected)[m > 0])
    assert np.isnan(ours[m == 0]).all()


def test_mean_by_group_reports_empty_level_as_none():
    values = np.array([1.0, 0.5, math.nan, 0.25, 0.0, 0.9])
    levels = np.array([1, 1, 2, 3, 3, 9])
    summary = mean_by_group(values, levels, group_values=range(1, 5))
    assert summary == {
        1: {"mean": 0.75, "count": 2, "no_positive_count": 0},
        2: {"mean": None, "count": 0, "no_positive_count": 1},
        3: {"mean": 0.125, "count": 2, "no_positive_count": 0},
        4: {"mean": None, "count": 0, "no_positive_count": 0},
    }
    assert list(mean_by_group(values, levels)) == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize(
    "call",
    [
        lambda: ap_at_k_standard(HITS_1_3, np.array([2, 2, 2]), k=0),
        lambda: ap_at_k_paper(HITS_1_3, k=-1),
        lambda: recall_at_k(HITS_1_3, k=6),  # ranking shorter than k
        lambda: ap_at_k_standard(HITS_1_3, np.array([2, 2]), k=5),  # one count per query
        lambda: ap_at_k_standard(HITS_1_3, np.array([2, 1, 2]), k=5),  # 2 found but m = 1
        lambda: ap_full(HITS_1_3.astype(int), np.array([2, 2, 2])),  # not bool
        lambda: relevance_matrix(np.array([[0, 3]]), np.array([1]), np.array([1, 1, 1])),
        lambda: relevance_matrix(np.array([[0, 1]]), np.array([1, 2]), np.array([1, 1])),
        lambda: knn_recall(np.zeros((2, 3), int), np.zeros((2, 4), int)),
        lambda: rank_by_scores(np.array([[0.1, math.nan]]), 1),
        lambda: rank_by_scores(np.array([0.1, 0.2]), 1),
        lambda: rank_by_scores(np.zeros((2, 3)), 1, tie_keys=np.arange(2)),
        lambda: tie_break_keys(np.array([0.5, 1.5])),
        lambda: mean_by_group(np.zeros(3), np.zeros(2, int)),
    ],
)
def test_bad_inputs_raise(call):
    with pytest.raises(ValueError):
        call()
