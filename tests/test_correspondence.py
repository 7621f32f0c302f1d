"""Exact pixel correspondences: known flows, identity, coverage agreement, bad input."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from retrieval.sim import RenderRequest, SimConfig, render_trajectories
from retrieval.sim.correspondence import (
    SurfaceMap,
    correspondences,
    correspondences_for_pair,
    exposure_surface_map,
    reference_instant,
    surface_map,
    surface_map_of,
)
from retrieval.sim.objects import object_spec
from retrieval.sim.trajectory import sample_trajectory

SMALL = SimConfig(height=48, width=64)
CATEGORY, INSTANCE = 3, 1


def _pixels(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer (row, column) indices of the a side and the b side of correspondence rows."""
    cells = (rows - 0.5).astype(int)
    return cells[:, [1, 0]], cells[:, [3, 2]]


@pytest.mark.parametrize("dx, dy", [(5, -3), (10, 25), (-45, -10)])  # the last two leave the image
def test_shifted_start_gives_exact_flow_for_every_pixel_seen_twice(dx, dy):
    spec = object_spec(CATEGORY, INSTANCE)
    motion = sample_trajectory(SMALL, CATEGORY, INSTANCE, 0)
    shifted = dataclasses.replace(motion, start=(motion.start[0] + dx, motion.start[1] + dy))
    a = surface_map_of(SMALL, spec, motion, 2.5)
    b = surface_map_of(SMALL, spec, shifted, 2.5)
    rows = correspondences(a, b)
    height, width = a.hit.shape
    # a pixel (i, j) sees what b pixel (i + dy, j + dx) sees, where both are in the image
    in_a = a.hit[max(0, -dy) : height - max(0, dy), max(0, -dx) : width - max(0, dx)]
    in_b = b.hit[max(0, dy) : height - max(0, -dy), max(0, dx) : width - max(0, -dx)]
    seen_twice = (in_a & in_b).sum()
    assert seen_twice > 50
    assert len(rows) == seen_twice
    np.testing.assert_array_equal(rows[:, 2:] - rows[:, :2], np.tile([float(dx), float(dy)], (len(rows), 1)))
    assert np.all(np.diff(rows[:, 1] * width + rows[:, 0]) > 0)  # row-major over a


def test_image_against_itself_is_the_identity_on_every_hit_pixel():
    a = surface_map(SMALL, CATEGORY, INSTANCE, 1, 4.0)
    rows = correspondences(a, a)
    ys, xs = np.nonzero(a.hit)
    assert rows.dtype == np.float32 and rows.shape == (a.hit.sum(), 4)
    np.testing.assert_array_equal(rows, np.stack([xs, ys, xs, ys], axis=1) + 0.5)


def test_points_are_nan_exactly_off_the_object_and_hit_is_the_sharp_coverage():
    sharp = surface_map(SMALL, CATEGORY, INSTANCE, 2, 0.0)
    assert sharp.points.shape == (SMALL.height, SMALL.width, 3) and sharp.points.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(sharp.points).any(axis=-1), ~sharp.hit)
    np.testing.assert_array_equal(np.isnan(sharp.points).all(axis=-1), ~sharp.hit)
    image = render_trajectories(SMALL, [RenderRequest(CATEGORY, INSTANCE, 2, (0,))])[0][0]
    np.testing.assert_array_equal(sharp.hit, image.alpha > 0)
    reference = exposure_surface_map(SMALL, CATEGORY, INSTANCE, 2, 0)
    np.testing.assert_array_equal(reference.hit, sharp.hit)


def test_reference_instant_is_the_middle_of_the_exposure():
    assert reference_instant(0) == 0.0
    assert reference_instant(7) == 3.5
    blurred = exposure_surface_map(SMALL, CATEGORY, INSTANCE, 0, 7)
    middle = surface_map(SMALL, CATEGORY, INSTANCE, 0, 3.5)
    np.testing.assert_array_equal(blurred.points, middle.points)


def test_different_trajectories_match_where_their_points_agree():
    config, tolerance = SimConfig(), 0.05  # full size: a pixel is about the tolerance, as in training
    rows = correspondences_for_pair(config, (CATEGORY, INSTANCE, 0, 0), (CATEGORY, INSTANCE, 2, 6), tolerance)
    a = exposure_surface_map(config, CATEGORY, INSTANCE, 0, 0)
    b = exposure_surface_map(config, CATEGORY, INSTANCE, 2, 6)
    assert 20 < len(rows) < a.hit.sum()
    pixel_a, pixel_b = _pixels(rows)
    assert a.hit[tuple(pixel_a.T)].all() and b.hit[tuple(pixel_b.T)].all()
    gap = np.linalg.norm(a.points[tuple(pixel_a.T)] - b.points[tuple(pixel_b.T)], axis=1)
    assert gap.max() < tolerance
    np.testing.assert_array_equal(rows, correspondences(a, b, tolerance))


@pytest.mark.parametrize("tolerance", [0.0, -0.1, float("nan")])
def test_non_positive_tolerance_is_refused(tolerance):
    a = surface_map(SMALL, CATEGORY, INSTANCE, 0, 0.0)
    with pytest.raises(ValueError, match="tolerance"):
        correspondences(a, a, tolerance)


def test_bad_instants_shapes_and_pairs_are_refused():
    with pytest.raises(ValueError, match="tau"):
        surface_map(SMALL, CATEGORY, INSTANCE, 0, -0.5)
    with pytest.raises(ValueError, match="exposure"):
        exposure_surface_map(SMALL, CATEGORY, INSTANCE, 0, SMALL.exposures)
    with pytest.raises(ValueError, match="exposure"):
        reference_instant(-1)
    small = SurfaceMap(np.zeros((4, 5, 3), np.float32), np.ones((4, 5), bool))
    other = SurfaceMap(np.zeros((5, 4, 3), np.float32), np.ones((5, 4), bool))
    with pytest.raises(ValueError, match="shape"):
        correspondences(small, other)
    with pytest.raises(ValueError, match="different objects"):
        correspondences_for_pair(SMALL, (CATEGORY, INSTANCE, 0, 0), (CATEGORY, INSTANCE + 1, 0, 0))
