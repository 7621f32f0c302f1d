"""Random object motions, one per (instance, trajectory), that keep the object in view.

Parameters are drawn with scalar `math` functions from a generator seeded by
(seed, category, instance, trajectory) alone, so a trajectory never depends on which
other rows share its batch: rendering a row on demand gives the stored pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from retrieval.sim.config import SimConfig

NUM_CAMERA_CURVES = 4


@dataclass(frozen=True)
class Trajectory:
    start: tuple[float, float]  # object centre at step 0, pixels (x, y)
    velocity: tuple[float, float]  # pixels per step
    radius: float  # pixels per object unit at step 0
    scale_rate: float  # relative scale change per step (depth)
    quat_start: tuple[float, float, float, float]
    quat_end: tuple[float, float, float, float]  # orientation after `steps` steps
    light: tuple[float, float, float]  # unit vector towards the light, camera looks along +z
    ambient: float
    camera_curve: int
    read_noise: float
    shot_noise: float
    background_seed: int
    noise_seed: int


def _quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    w1, x1, y1, z1 = a
    w2, x2, y2, z2 = b
    return np.array([
        w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
        w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
        w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
        w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
    ])


def _axis_quat(axis: int, angle: float) -> np.ndarray:
    q = np.zeros(4)
    q[0] = math.cos(angle / 2)
    q[1 + axis] = math.sin(angle / 2)
    return q


def _fit_path(rng: np.random.Generator, extent: float, margin: float, delta: float) -> float:
    """Start coordinate so both path ends stay within [margin, extent - margin]."""
    low = margin - min(0.0, delta)
    high = extent - margin - max(0.0, delta)
    return float(rng.uniform(low, high)) if high > low else (extent - delta) / 2


def sample_trajectory(config: SimConfig, category: int, instance: int, trajectory: int) -> Trajectory:
    """The motion of `trajectory` of local `instance` of `category` under `config`."""
    rng = np.random.default_rng([config.seed, 2, category, instance, trajectory])
    side = min(config.height, config.width)
    radius = float(rng.uniform(*config.object_radius)) * side
    scale_rate = float(rng.uniform(-config.depth_change, config.depth_change)) / config.steps
    max_step = config.exposures - 1
    largest = radius * max(1.0, 1 + scale_rate * max_step)
    # Streak length over the longest exposure; favouring long streaks keeps every blur level
    # up to 6 well represented.
    low, high = config.streak_ratio
    draw = float(rng.random())
    ratio = low + (high - low) * (config.fast_bias * math.sqrt(draw) + (1 - config.fast_bias) * draw)
    length = ratio * 2 * radius
    angle = float(rng.uniform(0, 2 * math.pi))
    margin = largest * 1.02 + 1
    room_x = max(0.0, config.width - 2 * margin)
    room_y = max(0.0, config.height - 2 * margin)
    dx, dy = math.cos(angle), math.sin(angle)
    fit = min(room_x / max(abs(dx), 1e-9), room_y / max(abs(dy), 1e-9))
    length = min(length, fit)
    start_x = _fit_path(rng, config.width, margin, length * dx)
    start_y = _fit_path(rng, config.height, margin, length * dy)
    per_step = length / max(max_step, 1)

    q0 = rng.normal(size=4)
    q0 /= np.linalg.norm(q0)
    turn = np.radians(rng.uniform(-config.max_rotation_deg, config.max_rotation_deg, 3))
    delta = _quat_mul(_quat_mul(_axis_quat(0, turn[0]), _axis_quat(1, turn[1])), _axis_quat(2, turn[2]))
    q1 = _quat_mul(q0, delta)
    light = np.array([rng.uniform(-1, 1), rng.uniform(-1, 1), -rng.uniform(0.8, 1.6)])
    light /= np.linalg.norm(light)
    return Trajectory(
        start=(start_x, start_y),
        velocity=(per_step * dx, per_step * dy),
        radius=radius,
        scale_rate=scale_rate,
        quat_start=tuple(q0),
        quat_end=tuple(q1),
        light=tuple(light),
        ambient=float(rng.uniform(0.25, 0.45)),
        camera_curve=int(rng.integers(NUM_CAMERA_CURVES)),
        read_noise=float(rng.uniform(0.002, 0.01)),
        shot_noise=float(rng.uniform(0.00005, 0.0008)),
        background_seed=int(rng.integers(2**62)),
        noise_seed=int(rng.integers(2**62)),
    )
