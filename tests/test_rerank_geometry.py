"""Mutual nearest-neighbour matching and RANSAC fits on hand-made and synthetic data with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.rerank.matching import mutual_nearest_neighbours
from retrieval.rerank.ransac import (
    apply_transform,
    fit_affine,
    fit_homography,
    ransac_affine,
    ransac_homography,
)

ANGLE = np.deg2rad(30.0)
ROTATION = np.array([[np.cos(ANGLE), -np.sin(ANGLE)], [np.sin(ANGLE), np.cos(ANGLE)]])
AFFINE = np.eye(3)
AFFINE[:2, :2] = 1.3 * ROTATION @ np.array([[1.0, 0.2], [0.0, 1.0]])  # rotation, scale, shear
AFFINE[:2, 2] = [15.0, -7.0]
HOMOGRAPHY = np.array([[1.1, 0.05, 10.0], [-0.08, 0.95, 20.0], [3e-4, -2e-4, 1.0]])
SIDE = 200.0  # points live in [0, SIDE]^2 pixels
THRESHOLD = 3.0
GRID = np.stack(np.meshgrid(np.linspace(0, SIDE, 11), np.linspace(0, SIDE, 11)), axis=-1).reshape(-1, 2)


def _contaminated(transform: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """40 inliers with 0.3 px noise, 60 outliers 30-100 px off the truth, shuffled; returns the truth mask."""
    rng = np.random.default_rng(seed)
    inlier_count, outlier_count = 40, 60
    src = rng.uniform(0, SIDE, (inlier_count + outlier_count, 2))
    dst = apply_transform(transform, src)
    dst[:inlier_count] += rng.normal(0.0, 0.3, (inlier_count, 2))
    direction = rng.uniform(0, 2 * np.pi, outlier_count)
    dst[inlier_count:] += rng.uniform(30, 100, (outlier_count, 1)) * np.stack(
        [np.cos(direction), np.sin(direction)], axis=1
    )
    order = rng.permutation(inlier_count + outlier_count)
    return src[order], dst[order], (np.arange(inlier_count + outlier_count) < inlier_count)[order]


def _max_map_error(estimate: np.ndarray, truth: np.ndarray) -> float:
    """Largest distance between the two transforms' images of a grid over the point area."""
    return float(np.linalg.norm(apply_transform(estimate, GRID) - apply_transform(truth, GRID), axis=1).max())


# ---- mutual nearest neighbours ----

A_ROWS = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
B_ROWS = np.array([[0.8, 0.6], [0.0, 1.0]])
# cosines a.b:  a0: (0.80, 0.0)  a1: (0.96, 0.8)  a2: (0.60, 1.0)
# a0 -> b0 but b0 -> a1 (0.96 > 0.80): dropped; a1 <-> b0 and a2 <-> b1 are mutual.


def test_mutual_nn_drops_one_way_pairs():
    matches = mutual_nearest_neighbours(A_ROWS, B_ROWS)
    assert matches.index_a.tolist() == [1, 2]
    assert matches.index_b.tolist() == [0, 1]
    np.testing.assert_allclose(matches.similarity, [0.96, 1.0], rtol=1e-6)
    assert matches.index_a.dtype == np.int64 and matches.index_b.dtype == np.int64
    assert matches.similarity.dtype == np.float32


@pytest.mark.parametrize(("minimum", "kept"), [(0.97, [2]), (1.0, [2]), (1.01, []), (-1.0, [1, 2])])
def test_mutual_nn_min_similarity_keeps_pairs_at_or_above(minimum, kept):
    assert mutual_nearest_neighbours(A_ROWS, B_ROWS, min_similarity=minimum).index_a.tolist() == kept


def test_mutual_nn_recovers_a_permutation():
    rng = np.random.default_rng(3)
    desc_b = rng.normal(size=(50, 16)).astype(np.float32)
    desc_b /= np.linalg.norm(desc_b, axis=1, keepdims=True)
    perm = rng.permutation(50)
    matches = mutual_nearest_neighbours(desc_b[perm], desc_b)
    assert matches.index_a.tolist() == list(range(50))
    assert (matches.index_b == perm).all()


@pytest.mark.parametrize("empty_side", ["a", "b"])
def test_mutual_nn_empty_input_gives_empty_matches(empty_side):
    empty = np.zeros((0, 2))
    a, b = (empty, B_ROWS) if empty_side == "a" else (A_ROWS, empty)
    matches = mutual_nearest_neighbours(a, b)
    assert matches.index_a.shape == matches.index_b.shape == matches.similarity.shape == (0,)
    assert matches.index_a.dtype == np.int64 and matches.similarity.dtype == np.float32


def test_mutual_nn_ties_go_to_the_lowest_index():
    x = [1.0, 0.0]
    assert mutual_nearest_neighbours(np.array([x]), np.array([x, x])).index_b.tolist() == [0]
    matches = mutual_nearest_neighbours(np.array([x, x]), np.array([x]))
    assert matches.index_a.tolist() == [0]  # a1 also picks b0, but b0 picks a0


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        (np.ones((3, 4)), np.ones((2, 5)), "dimensions differ"),
        (np.ones(4), np.ones((2, 4)), "desc_a must be a 2-D"),
        (np.ones((3, 4)), np.ones((2, 4, 1)), "desc_b must be a 2-D"),
        (np.full((3, 4), np.nan), np.ones((2, 4)), "NaN"),
    ],
)
def test_mutual_nn_rejects_bad_input(a, b, message):
    with pytest.raises(ValueError, match=message):
        mutual_nearest_neighbours(a, b)


# ---- least-squares helpers ----


def test_fits_recover_exact_transforms():
    src = np.random.default_rng(1).uniform(0, SIDE, (10, 2))
    np.testing.assert_allclose(fit_affine(src, apply_transform(AFFINE, src)), AFFINE, atol=1e-9)
    np.testing.assert_allclose(fit_homography(src, apply_transform(HOMOGRAPHY, src)), HOMOGRAPHY, atol=1e-9)


def test_apply_transform_round_trips_through_the_inverse():
    back = apply_transform(np.linalg.inv(HOMOGRAPHY), apply_transform(HOMOGRAPHY, GRID))
    np.testing.assert_allclose(back, GRID, atol=1e-9)


@pytest.mark.parametrize("fit", [fit_affine, fit_homography])
def test_fits_reject_collinear_points(fit):
    src = np.stack([np.arange(6.0), 2 * np.arange(6.0) + 1], axis=1)
    with pytest.raises(ValueError, match="do not determine"):
        fit(src, src + 5.0)


def test_fit_rejects_too_few_points():
    with pytest.raises(ValueError, match="at least 4"):
        fit_homography(np.ones((3, 2)), np.ones((3, 2)))


# ---- RANSAC ----

# A 3-point set is all inliers with probability 0.4^3, a 4-point one 0.4^4: 256 draws miss every
# clean affine set with probability 5e-8 and 512 draws every clean homography set with 2e-6.
CASES = [(ransac_affine, AFFINE, 256), (ransac_homography, HOMOGRAPHY, 512)]


@pytest.mark.parametrize(("ransac", "truth", "iterations"), CASES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ransac_recovers_the_transform_and_exactly_the_inliers(ransac, truth, iterations, seed):
    src, dst, true_inliers = _contaminated(truth, seed)
    result = ransac(src, dst, THRESHOLD, iterations=iterations, seed=seed)
    assert (result.inliers == true_inliers).all()
    assert result.inlier_count == 40 and result.inlier_ratio == pytest.approx(0.4)
    assert _max_map_error(result.transform, truth) < 0.5
    assert result.transform.dtype == np.float64 and result.transform[2, 2] == 1.0


@pytest.mark.parametrize(("ransac", "truth", "iterations"), CASES)
def test_ransac_same_seed_same_result(ransac, truth, iterations):
    src, dst, _ = _contaminated(truth)
    first, second = (ransac(src, dst, THRESHOLD, iterations=iterations, seed=7) for _ in range(2))
    assert np.array_equal(first.transform, second.transform)
    assert np.array_equal(first.inliers, second.inliers)


def test_ransac_affine_keeps_the_affine_form():
    src, dst, _ = _contaminated(AFFINE)
    assert ransac_affine(src, dst, THRESHOLD).transform[2].tolist() == [0.0, 0.0, 1.0]


@pytest.mark.parametrize(("ransac", "sample_size"), [(ransac_affine, 3), (ransac_homography, 4)])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_ransac_on_pure_outliers_finds_few_inliers(ransac, sample_size, seed):
    # src and dst are independent and uniform over 200^2 px: whatever a hypothesis is, a point
    # outside its minimal set lands within 2 px of its prediction with probability
    # <= pi * 2^2 / 200^2 = 3.1e-4, so 3 chance inliers beyond the minimal set among ~96 points
    # in any of 256 hypotheses has probability ~256 * C(96, 3) * (3.1e-4)^3 = 1e-3.
    rng = np.random.default_rng(seed)
    src, dst = rng.uniform(0, SIDE, (100, 2)), rng.uniform(0, SIDE, (100, 2))
    result = ransac(src, dst, 2.0, seed=seed)
    assert sample_size <= result.inlier_count < sample_size + 3


@pytest.mark.parametrize("ransac", [ransac_affine, ransac_homography])
def test_ransac_on_collinear_points_finds_no_model(ransac):
    src = np.stack([np.arange(20.0), 0.5 * np.arange(20.0) + 3], axis=1)
    result = ransac(src, apply_transform(AFFINE, src), THRESHOLD)
    assert result.transform is None and not result.inliers.any() and result.inliers.shape == (20,)


def test_ransac_homography_skips_singular_minimal_systems():
    # Corners of a square, mapped by (x, y) -> (1/x, y/x): the homography sends the centroid to
    # infinity, so with h33 fixed to 1 every minimal system is exactly singular.
    src = np.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    dst = np.array([[1.0, 1.0], [1.0, -1.0], [-1.0, -1.0], [-1.0, 1.0]])
    assert ransac_homography(src, dst, 0.1).transform is None


@pytest.mark.parametrize(("ransac", "sample_size"), [(ransac_affine, 3), (ransac_homography, 4)])
def test_ransac_below_the_minimal_size_finds_no_model(ransac, sample_size):
    for count in range(sample_size):
        src = np.random.default_rng(count).uniform(0, SIDE, (count, 2))
        result = ransac(src, src, THRESHOLD)
        assert result.transform is None and result.inliers.shape == (count,) and result.inlier_count == 0
    assert ransac(np.zeros((0, 2)), np.zeros((0, 2)), THRESHOLD).inlier_ratio == 0.0


@pytest.mark.parametrize(
    ("ransac", "truth", "sample_size"), [(ransac_affine, AFFINE, 3), (ransac_homography, HOMOGRAPHY, 4)]
)
def test_ransac_on_exactly_the_minimal_size_fits_it(ransac, truth, sample_size):
    src = np.array([[0.0, 0.0], [SIDE, 0.0], [0.0, SIDE], [SIDE, SIDE]])[:sample_size]
    result = ransac(src, apply_transform(truth, src), THRESHOLD)
    assert result.inliers.all()
    assert _max_map_error(result.transform, truth) < 1e-6


GOOD = np.zeros((5, 2))


@pytest.mark.parametrize("ransac", [ransac_affine, ransac_homography])
@pytest.mark.parametrize(
    ("src", "dst", "settings", "message"),
    [
        (GOOD, np.zeros((4, 2)), {}, "same number of points"),
        (np.zeros((5, 3)), np.zeros((5, 3)), {}, r"src must have shape \(M, 2\)"),
        (GOOD, np.zeros(10), {}, r"dst must have shape \(M, 2\)"),
        (np.full((5, 2), np.nan), GOOD, {}, "src contains NaN"),
        (GOOD, np.full((5, 2), np.inf), {}, "dst contains NaN or infinite"),
        (GOOD, GOOD, {"threshold": 0.0}, "threshold"),
        (GOOD, GOOD, {"threshold": float("nan")}, "threshold"),
        (GOOD, GOOD, {"iterations": 0}, "iterations"),
        (GOOD, GOOD, {"iterations": 2.5}, "iterations"),
    ],
)
def test_ransac_rejects_bad_input(ransac, src, dst, settings, message):
    with pytest.raises(ValueError, match=message):
        ransac(src, dst, **{"threshold": THRESHOLD, **settings})


def test_apply_transform_rejects_bad_matrix():
    with pytest.raises(ValueError, match=r"\(3, 3\)"):
        apply_transform(np.eye(2), GRID)
