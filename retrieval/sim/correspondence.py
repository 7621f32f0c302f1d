"""Exact pixel correspondences between two renders of one object instance.

The renderer knows, for every pixel, which object-frame surface point its ray hits, so two
images of one instance (any trajectories, any exposures) correspond where they see the same
surface point. This is the training signal of blur-invariant dense pixel features: pixel a of
one image matches the pixel of the other whose surface point is nearest to a's, when that
point is within a tolerance (object units; objects have unit radius, one pixel is about
0.04-0.06 units at the default 96x128 image size).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from retrieval.sim.config import SimConfig
from retrieval.sim.objects import ObjectSpec, object_spec
from retrieval.sim.raycast import ObjectBatch, cast_rays
from retrieval.sim.trajectory import Trajectory, sample_trajectory

# Distance-matrix entries per chunk of `correspondences` (4 MB of float32).
_CHUNK_ELEMENTS = 1_000_000

# (category, local instance, trajectory, exposure) of one rendered image.
ImageKey = tuple[int, int, int, int]


class CorrespondenceError(ValueError):
    """Bad input to the correspondence functions."""


@dataclass(frozen=True)
class SurfaceMap:
    """The object-frame surface point seen at each pixel centre of the full image."""

    points: np.ndarray  # float32 (H, W, 3), NaN where the object is not hit
    hit: np.ndarray  # bool (H, W)


def surface_map_of(config: SimConfig, spec: ObjectSpec, motion: Trajectory, tau: float) -> SurfaceMap:
    """Surface map of object `spec` moving along `motion`, at instant `tau` (in motion steps).

    Casts the same rays as the renderer, so `hit` is exactly the coverage of the frame the
    renderer draws at that instant.
    """
    if not 0 <= tau <= config.steps:
        raise CorrespondenceError(f"tau must be within 0..{config.steps} motion steps, got {tau}")
    rays = cast_rays(ObjectBatch([spec], [motion], torch.device("cpu")), float(tau), config.steps,
                      config.crop_size)
    window_hit = rays.hit[0].numpy()
    window_points = np.where(window_hit[..., None], rays.point[0].numpy(), np.float32(np.nan))
    points = np.full((config.height, config.width, 3), np.nan, dtype=np.float32)
    hit = np.zeros((config.height, config.width), dtype=bool)
    # Window pixel (r, c) is image pixel (y0 + r, x0 + c); the window may stick out of the image.
    x0, y0 = rays.origin[0].tolist()
    crop = window_hit.shape[0]
    top, left = max(0, -y0), max(0, -x0)
    bottom, right = min(crop, config.height - y0), min(crop, config.width - x0)
    if bottom > top and right > left:
        image_rows = slice(y0 + top, y0 + bottom)
        image_cols = slice(x0 + left, x0 + right)
        points[image_rows, image_cols] = window_points[top:bottom, left:right]
        hit[image_rows, image_cols] = window_hit[top:bottom, left:right]
    return SurfaceMap(points, hit)


def surface_map(config: SimConfig, category: int, instance: int, trajectory: int, tau: float) -> SurfaceMap:
    """Surface map of `trajectory` of local `instance` of `category` at instant `tau`."""
    motion = sample_trajectory(config, category, instance, trajectory)
    return surface_map_of(config, object_spec(category, instance), motion, tau)


def reference_instant(exposure: int) -> float:
    """The instant whose pose stands for an image of `exposure` steps: e / 2.

    That image averages frames spread evenly over instants [0, e] of a linear motion, so its
    streak is symmetric about the pose at e / 2: that pose is the streak's centre of mass,
    and no integrated instant is more than e / 2 steps of motion away from it (any other
    choice moves the farther end of the streak farther away).
    """
    if exposure < 0:
        raise CorrespondenceError(f"exposure must be non-negative, got {exposure}")
    return exposure / 2


def exposure_surface_map(config: SimConfig, category: int, instance: int, trajectory: int,
                         exposure: int) -> SurfaceMap:
    """Surface map of the image of `exposure` steps, at its reference instant."""
    if not 0 <= exposure < config.exposures:
        raise CorrespondenceError(f"exposure {exposure} outside 0..{config.exposures - 1}")
    return surface_map(config, category, instance, trajectory, reference_instant(exposure))


def correspondences(a: SurfaceMap, b: SurfaceMap, tolerance: float = 0.05) -> np.ndarray:
    """Rows (xa, ya, xb, yb), float32 (M, 4), in pixel-centre coordinates (x = column + 0.5).

    For every hit pixel of `a`, in row-major order, the hit pixel of `b` whose surface point is
    nearest in the object frame, kept when that distance is below `tolerance` (object units).
    Distances are computed directly, not through a matrix product, so the nearest pixel does
    not depend on BLAS rounding or thread count.
    """
    if not (tolerance > 0 and math.isfinite(tolerance)):
        raise CorrespondenceError(f"tolerance must be a positive number of object units, got {tolerance}")
    if a.hit.shape != b.hit.shape:
        raise CorrespondenceError(f"surface maps differ in shape: {a.hit.shape} vs {b.hit.shape}")
    width = a.hit.shape[1]
    index_a, index_b = np.flatnonzero(a.hit), np.flatnonzero(b.hit)
    if index_a.size == 0 or index_b.size == 0:
        return np.zeros((0, 4), dtype=np.float32)
    points_a = torch.from_numpy(a.points.reshape(-1, 3)[index_a])
    points_b = torch.from_numpy(b.points.reshape(-1, 3)[index_b])
    chunk = max(1, _CHUNK_ELEMENTS // index_b.size)
    distance, nearest = zip(*(
        torch.cdist(points_a[start : start + chunk], points_b,
                    compute_mode="donot_use_mm_for_euclid_dist").min(dim=1)
        for start in range(0, index_a.size, chunk)
    ))
    keep = (torch.cat(distance) < tolerance).numpy()
    matched_a, matched_b = index_a[keep], index_b[torch.cat(nearest).numpy()[keep]]
    rows = np.stack([matched_a % width, matched_a // width, matched_b % width, matched_b // width], axis=1)
    return rows.astype(np.float32) + np.float32(0.5)


def correspondences_for_pair(config: SimConfig, a: ImageKey, b: ImageKey, tolerance: float = 0.05
                             ) -> np.ndarray:
    """`correspondences` between two images of one instance, each given by its `ImageKey`."""
    if a[:2] != b[:2]:
        raise CorrespondenceError(f"images show different objects (category, instance): {a[:2]} vs {b[:2]}")
    return correspondences(exposure_surface_map(config, *a), exposure_surface_map(config, *b), tolerance)
