"""retrieval.train.embedding_stats: spread over directions, confusions, learned whitening."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.train.embedding_stats import (
    components_for,
    intra_class_whitening,
    participation_ratio,
    rank_confusions,
    variance_shares,
    whiten,
)


def test_points_on_a_line_span_one_direction():
    vectors = np.outer(np.arange(5.0), [3.0, 4.0, 0.0])
    shares = variance_shares(vectors)
    np.testing.assert_allclose(shares, [1.0, 0.0, 0.0], atol=1e-12)
    assert participation_ratio(shares) == pytest.approx(1.0)
    assert components_for(shares, 0.99) == 1


def test_variance_spread_evenly_over_four_axes_spans_four():
    vectors = np.concatenate([np.eye(4), -np.eye(4)])
    shares = variance_shares(vectors)
    np.testing.assert_allclose(shares, [0.25] * 4)
    assert participation_ratio(shares) == pytest.approx(4.0)
    assert components_for(shares, 0.5) == 2
    assert components_for(shares, 1.0) == 4


def test_uneven_spread_counts_fewer_directions_than_the_width():
    # variances 4 and 1 along two axes: shares 0.8, 0.2; ratio 1 / (0.64 + 0.04)
    vectors = np.array([[2.0, 0.0], [-2.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    shares = variance_shares(vectors)
    np.testing.assert_allclose(shares, [0.8, 0.2])
    assert participation_ratio(shares) == pytest.approx(1 / 0.68)


def test_spread_refuses_a_single_vector_and_a_bad_fraction():
    with pytest.raises(ValueError, match="N >= 2"):
        variance_shares(np.ones((1, 3)))
    with pytest.raises(ValueError, match="fraction"):
        components_for(np.array([1.0]), 0.0)


def test_confusions_count_who_outranks_the_best_positive():
    # database: instance 10 (category 1), 11 (category 1), 20 (category 2), 21 (category 2)
    database_labels = np.array([10, 11, 20, 21])
    database_groups = np.array([1, 1, 2, 2])
    scores = np.array([
        [0.5, 0.9, 0.7, 0.1],  # query of 10: 11 (same category) and 20 (other) above it
        [0.2, 0.1, 0.8, 0.9],  # query of 21: best positive first, best wrong (20) same category
        [0.9, 0.1, 0.1, 0.1],  # query of 99: no positive, not counted
    ])
    counts = rank_confusions(scores, np.array([10, 21, 99]), np.array([1, 2, 9]),
                             database_labels, database_groups)
    assert counts == {"same_group_above": 1, "other_group_above": 1,
                      "nearest_wrong_same_group": 1.0, "queries": 2}


def test_whitening_of_power_zero_only_centres_and_normalises():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(12, 3))
    labels = np.repeat(np.arange(4), 3)
    mean, matrix = intra_class_whitening(vectors, labels, power=0.0)
    np.testing.assert_allclose(matrix, np.eye(3), atol=1e-12)
    expected = (vectors - vectors.mean(axis=0))
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(whiten(vectors, mean, matrix), expected, rtol=1e-5, atol=1e-6)


def test_full_whitening_equalises_the_within_label_spread():
    # Pairs of one label differ by (+-2, 0) or (0, +-1): scatter diag(4, 1) up to the pair count.
    vectors = np.array([[0.0, 0.0], [2.0, 0.0], [5.0, 5.0], [5.0, 6.0]])
    labels = np.array([0, 0, 1, 1])
    _, matrix = intra_class_whitening(vectors, labels, power=0.5)
    differences = np.array([[2.0, 0.0], [0.0, 1.0]]) @ matrix.T
    lengths = np.linalg.norm(differences, axis=1)
    assert lengths[0] == pytest.approx(lengths[1])


def test_whitening_needs_a_label_with_two_vectors():
    with pytest.raises(ValueError, match="two vectors"):
        intra_class_whitening(np.eye(3), np.array([0, 1, 2]), power=0.5)
