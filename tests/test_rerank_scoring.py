"""The re-ranking score: the verified bonus and verified query expansion, on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.rerank.scoring import expanded_scores, rerank_order, rerank_scores, verified_scores
from retrieval.rerank.verify import RerankParams

# Three unit vectors: candidate 2 is the same direction as candidate 0, candidate 1 orthogonal.
VECTORS = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
GLOBAL = np.array([0.9, 0.8, 0.7])


def test_verified_score_adds_the_bounded_inlier_bonus():
    params = RerankParams(weight=0.5, cap=10)
    np.testing.assert_allclose(verified_scores(GLOBAL, np.array([0, 20, 4]), params),
                               [0.9, 0.8 + 0.5, 0.7 + 0.5 * 0.4])


def test_appearance_blends_with_the_global_score_before_the_bonus():
    params = RerankParams(weight=0.5, cap=10, appearance=0.25)
    appearance = np.array([0.5, 0.9, 0.7])
    np.testing.assert_allclose(verified_scores(GLOBAL, np.array([0, 20, 4]), params, appearance),
                               [0.75 * 0.9 + 0.25 * 0.5, 0.75 * 0.8 + 0.25 * 0.9 + 0.5,
                                0.7 + 0.5 * 0.4])
    # the blend reorders: candidate 1 (0.85) passes candidate 0, which ties with 2 (0.7, global order)
    blend = RerankParams(weight=0.0, appearance=0.5)
    assert rerank_order(GLOBAL, np.zeros(3), blend, appearance=appearance).tolist() == [1, 0, 2]
    assert rerank_order(GLOBAL, np.zeros(3), blend).tolist() == [0, 1, 2], "none given: no blend"
    with pytest.raises(ValueError, match="one appearance similarity per candidate"):
        verified_scores(GLOBAL, np.zeros(3), blend, appearance[:2])


def test_mirror_similarity_blends_into_the_global_score_before_the_appearance():
    params = RerankParams(weight=0.0, appearance=0.5, mirror=0.5)
    mirrored = np.array([0.5, 0.9, 0.7])
    appearance = np.array([0.6, 0.6, 1.0])
    # g' = 0.5 g + 0.5 m = [0.7, 0.85, 0.7]; s = 0.5 g' + 0.5 a
    np.testing.assert_allclose(verified_scores(GLOBAL, np.zeros(3), params, appearance, mirrored),
                               [0.65, 0.725, 0.85])
    alone = RerankParams(weight=0.0, mirror=0.5)
    assert rerank_order(GLOBAL, np.zeros(3), alone, mirrored=mirrored).tolist() == [1, 0, 2]
    assert rerank_order(GLOBAL, np.zeros(3), RerankParams(weight=0.0), mirrored=mirrored).tolist() \
        == [0, 1, 2], "share 0: no blend"
    with pytest.raises(ValueError, match="one mirror similarity per candidate"):
        verified_scores(GLOBAL, np.zeros(3), alone, mirrored=mirrored[:2])


def test_expansion_by_the_best_verified_candidate_lifts_its_look_alikes():
    params = RerankParams(weight=0.0, expansion=0.5, expansion_top=1)
    inliers = np.array([5, 0, 0])
    # the best (candidate 0) expands: 0.5 * s + 0.5 * (v0 . v_c)
    np.testing.assert_allclose(rerank_scores(GLOBAL, inliers, params, VECTORS),
                               [0.5 * 0.9 + 0.5, 0.5 * 0.8 + 0.0, 0.5 * 0.7 + 0.5])
    assert rerank_order(GLOBAL, inliers, params, VECTORS).tolist() == [0, 2, 1]
    assert rerank_order(GLOBAL, inliers, params).tolist() == [0, 1, 2], "no vectors: no expansion"


def test_expansion_weights_its_candidates_by_their_verified_score():
    params = RerankParams(weight=0.0, expansion=1.0, expansion_top=2)
    # candidates 0 and 1 expand with weights 0.9 and 0.8
    expected = (0.9 * VECTORS[0] @ VECTORS.T + 0.8 * VECTORS[1] @ VECTORS.T) / 1.7
    np.testing.assert_allclose(rerank_scores(GLOBAL, np.zeros(3), params, VECTORS), expected)


def test_candidates_with_too_few_inliers_do_not_expand():
    params = RerankParams(weight=0.0, expansion=0.5, expansion_top=2, expansion_min_inliers=4)
    # only candidate 1 has 4 inliers: it alone expands
    np.testing.assert_allclose(rerank_scores(GLOBAL, np.array([3, 4, 0]), params, VECTORS),
                               0.5 * GLOBAL + 0.5 * (VECTORS[1] @ VECTORS.T))
    # none qualifies: the verified score stands
    np.testing.assert_allclose(rerank_scores(GLOBAL, np.array([3, 3, 0]), params, VECTORS), GLOBAL)


def test_no_expansion_keeps_the_verified_score_and_ties_keep_the_global_order():
    params = RerankParams(weight=0.5, cap=10)
    inliers = np.array([0, 20, 4])
    np.testing.assert_allclose(rerank_scores(GLOBAL, inliers, params, VECTORS),
                               verified_scores(GLOBAL, inliers, params))
    assert rerank_order(GLOBAL, inliers, params).tolist() == [1, 0, 2]
    assert rerank_order(np.full(3, 0.5), np.zeros(3), params).tolist() == [0, 1, 2]


def test_expansion_is_a_permutation_of_the_candidates_given():
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((50, 8))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    params = RerankParams(weight=0.1, cap=16, expansion=0.75, expansion_top=3)
    order = rerank_order(np.sort(rng.random(50))[::-1], rng.integers(0, 30, 50), params, vectors)
    assert sorted(order.tolist()) == list(range(50))


def test_bad_vectors_and_parameters_are_refused():
    params = RerankParams(expansion=0.5)
    with pytest.raises(ValueError, match="one global vector per candidate"):
        expanded_scores(GLOBAL, np.zeros(3), VECTORS[:2], params)
    broken = VECTORS.copy()
    broken[1, 0] = np.nan
    with pytest.raises(ValueError, match="candidate 1's global vector is not finite"):
        expanded_scores(GLOBAL, np.zeros(3), broken, params)
    for bad in ({"expansion": 1.5}, {"expansion": -0.1}, {"expansion_top": 0},
                {"expansion_min_inliers": -1}, {"cap": 0}, {"appearance": 1.5},
                {"appearance": -0.5}, {"appearance_cells": 0.0}, {"appearance_cells": 1.2},
                {"mirror": -0.1}, {"mirror": 1.5}):
        with pytest.raises(ValueError, match="invalid"):
            RerankParams(**bad)
