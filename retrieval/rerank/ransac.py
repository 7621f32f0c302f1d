"""RANSAC fits of affine maps and homographies between matched points (numpy, vectorised).

Re-ranking runs one fit per retrieval candidate, so every hypothesis of a call is handled as
stacked arrays: all minimal sets are drawn at once, their small linear systems are solved
together and the residuals form one (M, hypotheses) array.

Procedure of `ransac_affine` / `ransac_homography`:
1. Both point sets are Hartley-normalised (centroid at the origin, mean distance sqrt(2)) by
   one similarity per side, computed from all M points, so the stacked systems are well
   conditioned whatever the pixel scale.
2. `iterations` minimal sets (3 points for an affine map, 4 for a homography) of distinct
   indices are drawn with `np.random.default_rng(seed)`. A set is skipped when three of its
   source or destination points are (nearly) collinear or coincide, or when its system is
   singular: such a set does not determine an invertible transform.
3. A point is an inlier of a hypothesis when its reprojection error, the Euclidean distance
   in dst pixels between T(src) and dst, is < threshold (evaluated in float32 on the
   normalised points, so it is exact to ~1e-6 of the points' spread). The best hypothesis has
   the most inliers (the first drawn on ties).
4. The best hypothesis is refitted by least squares on its inliers and the inliers are
   recomputed once with the refit. The refit is kept only when it keeps at least as many
   inliers: a least-squares fit over inliers that include near-threshold outliers can drift,
   and then the minimal model is the better answer.
Transforms are 3x3 float64 matrices on homogeneous pixel coordinates [x, y, 1]; a homography
is scaled to H[2, 2] = 1 (when that entry is not ~0), an affine map has last row [0, 0, 1].
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# |e1 x e2| / (|e1|^2 + |e2|^2) of a point triple: the sine of its angle at the first point,
# shrunk further when two points nearly coincide; below this the triple counts as collinear.
_COLLINEAR_TOL = 1e-6
_ZERO_TOL = 1e-12  # H[2, 2] below this fraction of the largest entry counts as 0
_RANK_TOL = 1e-10  # singular-value ratio below which a least-squares system is rank deficient


@dataclass(frozen=True)
class RansacResult:
    """Best transform (None when no minimal set determined one) and its inlier mask over the M pairs."""

    transform: np.ndarray | None  # float64 (3, 3)
    inliers: np.ndarray  # bool (M,)

    @property
    def inlier_count(self) -> int:
        return int(self.inliers.sum())

    @property
    def inlier_ratio(self) -> float:
        return self.inlier_count / self.inliers.size if self.inliers.size else 0.0


@dataclass(frozen=True)
class _Model:
    name: str
    sample_size: int
    # stacked minimal sets (K, n, 2), src and dst, normalised -> (transforms of the valid sets, valid (K,))
    solve_minimal: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
    # least squares over all given pairs (it normalises them itself) -> (3, 3), None when undetermined
    fit: Callable[[np.ndarray, np.ndarray], np.ndarray | None]


def _as_points(name: str, points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"{name} must have shape (M, 2), got {points.shape}")
    if not np.isfinite(points).all():
        raise ValueError(f"{name} contains NaN or infinite coordinates")
    return points


def _as_pairs(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    src, dst = _as_points("src", src), _as_points("dst", dst)
    if src.shape != dst.shape:
        raise ValueError(f"src and dst must hold the same number of points, got {src.shape} and {dst.shape}")
    return src, dst


def _check_settings(threshold: float, iterations: int) -> None:
    if not (math.isfinite(threshold) and threshold > 0):
        raise ValueError(f"threshold must be a positive finite number of pixels, got {threshold}")
    if isinstance(iterations, bool) or not isinstance(iterations, numbers.Integral) or iterations < 1:
        raise ValueError(f"iterations must be an integer >= 1, got {iterations!r}")


def _normaliser(points: np.ndarray) -> np.ndarray:
    """Similarity taking the centroid to the origin and the mean distance to it to sqrt(2)."""
    centroid = points.mean(axis=0)
    spread = np.linalg.norm(points - centroid, axis=1).mean()
    scale = math.sqrt(2.0) / spread if spread > 0 else 1.0
    return np.array([[scale, 0.0, -scale * centroid[0]], [0.0, scale, -scale * centroid[1]], [0.0, 0.0, 1.0]])


def _denormalise(transforms: np.ndarray, to_src: np.ndarray, to_dst: np.ndarray) -> np.ndarray:
    """Pixel-space transforms from ones fitted between normalised points: to_dst^-1 @ T @ to_src."""
    scale = to_dst[0, 0]
    from_dst = np.array(
        [[1 / scale, 0.0, -to_dst[0, 2] / scale], [0.0, 1 / scale, -to_dst[1, 2] / scale], [0, 0, 1]]
    )
    return from_dst @ transforms @ to_src


def _apply_similarity(similarity: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points * similarity[0, 0] + similarity[:2, 2]


def _homogeneous(points: np.ndarray) -> np.ndarray:
    return np.concatenate([points, np.ones(points.shape[:-1] + (1,))], axis=-1)


def _inlier_masks(
    transforms: np.ndarray, dlt_rows: np.ndarray, src_homogeneous: np.ndarray, threshold: float
) -> np.ndarray:
    """(M, K) mask, column k: reprojection error under transforms[k] < threshold.

    With w = h3.p, the error vector is (h1.p - u w, h2.p - v w) / w, whose numerators are the
    DLT equations applied to h: error < threshold <=> |numerators|^2 < threshold^2 w^2. Two
    matrix products thus score every hypothesis on every point, with no division, and a
    point sent to infinity (w = 0) is an outlier. RANSAC passes float32 rows of normalised
    coordinates (values near 1): half the memory traffic of float64, ample precision.
    """
    count = dlt_rows.shape[0] // 2
    transforms = transforms.astype(dlt_rows.dtype)
    numerators = dlt_rows @ transforms.reshape(-1, 9).T  # (2M, K): u rows, then v rows
    w = src_homogeneous @ transforms[:, 2].T  # (M, K)
    with np.errstate(over="ignore", invalid="ignore"):  # wild hypotheses overflow: they fail the test
        squared = np.square(numerators, out=numerators)  # in place: fresh large arrays cost page faults
        np.add(squared[:count], squared[count:], out=squared[:count])
        w *= threshold
        return np.less(squared[:count], np.square(w, out=w))


def _scaled(transform: np.ndarray) -> np.ndarray:
    """Fix the free scale of a homogeneous transform: H[2, 2] = 1 unless that entry is ~0."""
    if abs(transform[2, 2]) > _ZERO_TOL * np.abs(transform).max():
        return transform / transform[2, 2]
    return transform / np.abs(transform).max()


def _well_spread(points: np.ndarray) -> np.ndarray:
    """(..., n, 2) -> (...): True when no three of the n points are (nearly) collinear or coincide."""
    first, second, third = np.array(list(itertools.combinations(range(points.shape[-2]), 3))).T
    e1 = points[..., second, :] - points[..., first, :]  # (..., triples, 2)
    e2 = points[..., third, :] - points[..., first, :]
    cross = e1[..., 0] * e2[..., 1] - e1[..., 1] * e2[..., 0]
    spread = (e1**2).sum(axis=-1) + (e2**2).sum(axis=-1)
    return (np.abs(cross) > _COLLINEAR_TOL * spread).all(axis=-1)


def _affine_matrix(params: np.ndarray) -> np.ndarray:
    """(..., 3, 2) solution of [x, y, 1] @ P = [u, v] -> (..., 3, 3) matrix acting on columns."""
    matrix = np.zeros(params.shape[:-2] + (3, 3))
    matrix[..., :2, :] = np.swapaxes(params, -1, -2)
    matrix[..., 2, 2] = 1.0
    return matrix


def _affine_minimal(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    valid = _well_spread(np.stack([src, dst])).all(axis=0)
    return _affine_matrix(np.linalg.solve(_homogeneous(src[valid]), dst[valid])), valid


def _fit_affine(src: np.ndarray, dst: np.ndarray) -> np.ndarray | None:
    to_src, to_dst = _normaliser(src), _normaliser(dst)
    design = _homogeneous(_apply_similarity(to_src, src))
    params, _, rank, _ = np.linalg.lstsq(design, _apply_similarity(to_dst, dst), rcond=_RANK_TOL)
    if rank < 3:
        return None
    return _denormalise(_affine_matrix(params), to_src, to_dst)


def _dlt_rows(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """(..., n, 2) pairs -> (..., 2n, 9) DLT equations A h = 0 for h = H.ravel(): u rows, then v rows.

    For p = [x, y, 1]: [p, 0, -u p] . h = 0 and [0, p, -v p] . h = 0.
    """
    p = _homogeneous(src)
    rows = np.zeros(src.shape[:-2] + (2, src.shape[-2], 9))
    rows[..., 0, :, :3] = p
    rows[..., 1, :, 3:6] = p
    rows[..., 6:] = -np.swapaxes(dst, -1, -2)[..., None] * p[..., None, :, :]
    return rows.reshape(src.shape[:-2] + (2 * src.shape[-2], 9))


def _homography_minimal(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Four pairs fix H with h33 = 1 by one 8x8 solve each (cheaper than stacked SVDs).

    With the points normalised, h33 = 0 would mean the centroid of all source points maps to
    infinity; such a set has a singular system and is skipped like a collinear one.
    """
    rows = _dlt_rows(src, dst)
    system, rhs = rows[..., :8], -rows[..., 8:]
    valid = _well_spread(np.stack([src, dst])).all(axis=0)
    try:
        h = np.linalg.solve(system[valid], rhs[valid])[..., 0]
    except np.linalg.LinAlgError:  # some system is exactly singular: find those (rare, so det only here)
        valid[valid] = np.linalg.det(system[valid]) != 0
        h = np.linalg.solve(system[valid], rhs[valid])[..., 0]
    return np.concatenate([h, np.ones((h.shape[0], 1))], axis=1).reshape(-1, 3, 3), valid


def _fit_homography(src: np.ndarray, dst: np.ndarray) -> np.ndarray | None:
    to_src, to_dst = _normaliser(src), _normaliser(dst)
    rows = _dlt_rows(_apply_similarity(to_src, src), _apply_similarity(to_dst, dst))
    rows = np.pad(rows, ((0, max(0, 9 - rows.shape[0])), (0, 0)))  # 4 pairs give 8 equations: add 0 = 0
    _, singular, vt = np.linalg.svd(rows, full_matrices=False)
    if singular[7] <= _RANK_TOL * singular[0]:  # null space wider than one line: H is not determined
        return None
    return _scaled(_denormalise(vt[8].reshape(3, 3), to_src, to_dst))


_AFFINE = _Model("affine", 3, _affine_minimal, _fit_affine)
_HOMOGRAPHY = _Model("homography", 4, _homography_minimal, _fit_homography)


def _sample_indices(rng: np.random.Generator, m: int, size: int, iterations: int) -> np.ndarray:
    """(iterations, size) indices into m points, distinct within each row, uniform over such sets.

    Pick j is drawn from the m - j indices not picked yet: a draw r in [0, m - j) is moved past
    each earlier pick <= it, taken in ascending order.
    """
    picks = np.empty((iterations, size), dtype=np.int64)
    for j in range(size):
        draw = rng.integers(0, m - j, size=iterations)
        for earlier in np.sort(picks[:, :j], axis=1).T:
            draw += draw >= earlier
        picks[:, j] = draw
    return picks


def _ransac(
    model: _Model, src: np.ndarray, dst: np.ndarray, threshold: float, iterations: int, seed: int
) -> RansacResult:
    src, dst = _as_pairs(src, dst)
    _check_settings(threshold, iterations)
    no_model = RansacResult(None, np.zeros(src.shape[0], dtype=bool))
    if src.shape[0] < model.sample_size:
        return no_model
    to_src, to_dst = _normaliser(src), _normaliser(dst)
    src, dst = _apply_similarity(to_src, src), _apply_similarity(to_dst, dst)
    threshold = float(threshold * to_dst[0, 0])  # normalising scales dst distances isotropically
    picks = _sample_indices(np.random.default_rng(seed), src.shape[0], model.sample_size, iterations)
    hypotheses, valid = model.solve_minimal(src[picks], dst[picks])
    if not valid.any():
        return no_model
    dlt_rows, src_homogeneous = _dlt_rows(src, dst).astype(np.float32), _homogeneous(src).astype(np.float32)
    masks = _inlier_masks(hypotheses, dlt_rows, src_homogeneous, threshold)
    best = int(masks.sum(axis=0).argmax())  # argmax returns the first maximum: earliest hypothesis wins ties
    transform, inliers = hypotheses[best], masks[:, best]
    refit = model.fit(src[inliers], dst[inliers])
    if refit is not None:
        refit_inliers = _inlier_masks(refit[None], dlt_rows, src_homogeneous, threshold)[:, 0]
        if refit_inliers.sum() >= inliers.sum():
            transform, inliers = refit, refit_inliers
    return RansacResult(_scaled(_denormalise(transform, to_src, to_dst)), inliers)


def ransac_affine(
    src: np.ndarray, dst: np.ndarray, threshold: float, iterations: int = 256, seed: int = 0
) -> RansacResult:
    """Robust affine dst ~ A @ [x, y, 1] from 3-point minimal sets (procedure: module docstring)."""
    return _ransac(_AFFINE, src, dst, threshold, iterations, seed)


def ransac_homography(
    src: np.ndarray, dst: np.ndarray, threshold: float, iterations: int = 256, seed: int = 0
) -> RansacResult:
    """Robust homography from 4-point normalised-DLT minimal sets (procedure: module docstring)."""
    return _ransac(_HOMOGRAPHY, src, dst, threshold, iterations, seed)


def _fit_or_raise(model: _Model, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    src, dst = _as_pairs(src, dst)
    if src.shape[0] < model.sample_size:
        raise ValueError(
            f"{model.name} fit needs at least {model.sample_size} point pairs, got {src.shape[0]}"
        )
    transform = model.fit(src, dst)
    if transform is None:
        raise ValueError(f"{model.name} fit: the points do not determine it (collinear or coincident points)")
    return transform


def fit_affine(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares affine map (3, 3) over all pairs (at least 3, not all collinear)."""
    return _fit_or_raise(_AFFINE, src, dst)


def fit_homography(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Normalised-DLT least-squares homography (3, 3) over all pairs (at least 4, well spread)."""
    return _fit_or_raise(_HOMOGRAPHY, src, dst)


def apply_transform(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map (M, 2) points by a (3, 3) transform; points sent to infinity come back inf/NaN."""
    transform = np.asarray(transform, dtype=np.float64)
    if transform.shape != (3, 3) or not np.isfinite(transform).all():
        raise ValueError(f"transform must be a finite (3, 3) matrix, got shape {transform.shape}")
    mapped = _homogeneous(_as_points("points", points)) @ transform.T
    with np.errstate(divide="ignore", invalid="ignore"):
        return mapped[:, :2] / mapped[:, 2:]
