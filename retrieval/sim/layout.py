"""Which images a data set holds: presets, instance splits, trajectories and roles.

Splits depend only on (category, instance index), never on how many instances a
preset asks for, so test instances of one preset are never training instances of
another (the shipped models are trained on `train` instances only). For test
instances the trajectories are split into query and database trajectories; which
exposures become queries or database images depends on rendered blur levels and is
decided in `retrieval/synth.py` with `select_query_exposures` / `select_database_exposure` (below).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from retrieval.sim.config import SimConfig
from retrieval.sim.objects import DISTRACTOR_BASE, MAX_CATEGORIES

# Split of instance index i of category c: _SPLIT_PATTERN[(i + 7c) % 20] (70/15/15).
_SPLIT_PATTERN = tuple(
    "test" if p in (2, 9, 16) else "val" if p in (5, 12, 19) else "train" for p in range(20)
)
BENCHMARK_LEVELS = tuple(range(1, 7))
DISTRACTOR_TRAJECTORIES = 10  # trajectories per distractor instance, one image each


@dataclass(frozen=True)
class Preset:
    categories: int
    instances: int
    trajectories: int
    height: int
    width: int
    distractors: int = 0
    # Streak-length spread (SimConfig.fast_bias). Levels depend on the image size (the severity
    # erodes one pixel), so the 240x320 preset draws slower streaks to keep >= 10% of its
    # queries at blur level 2.
    fast_bias: float = 1.0

    def sim_config(self, seed: int) -> SimConfig:
        return SimConfig(height=self.height, width=self.width, seed=seed, fast_bias=self.fast_bias)


PRESETS = {
    "tiny": Preset(categories=4, instances=20, trajectories=3, height=96, width=128, distractors=40),
    "small": Preset(categories=40, instances=40, trajectories=8, height=96, width=128),
    "paper": Preset(categories=40, instances=30, trajectories=120, height=240, width=320,
                    fast_bias=0.0),
}


def instance_split(category: int, local_instance: int) -> str:
    if local_instance >= DISTRACTOR_BASE:
        return "distractor"
    return _SPLIT_PATTERN[(local_instance + 7 * category) % len(_SPLIT_PATTERN)]


@dataclass(frozen=True)
class TrajectoryJob:
    """One trajectory to render and what its images are for."""

    split: str  # train, val, test
    category: int
    instance: int  # local index
    trajectory: int
    kind: str  # "all" (train/val: every exposure), "query", "database"


def query_trajectory_count(trajectories: int) -> int:
    """Test trajectories used for queries; the rest (at least one) hold database images."""
    return max(1, trajectories // 3) if trajectories > 1 else 0


def plan_trajectories(preset: Preset) -> list[TrajectoryJob]:
    if not 1 <= preset.categories <= MAX_CATEGORIES:
        raise ValueError(f"categories must be in 1..{MAX_CATEGORIES}")
    if preset.instances < 1 or preset.trajectories < 1:
        raise ValueError("instances and trajectories must be at least 1")
    jobs = []
    queries = query_trajectory_count(preset.trajectories)
    for category in range(preset.categories):
        for instance in range(preset.instances):
            split = instance_split(category, instance)
            for trajectory in range(preset.trajectories):
                kind = "all" if split != "test" else "query" if trajectory < queries else "database"
                jobs.append(TrajectoryJob(split, category, instance, trajectory, kind))
    return jobs


def select_query_exposures(levels: list[int]) -> dict[int, int]:
    """Level -> exposure: the first exposure reaching each benchmark level 1..6."""
    chosen: dict[int, int] = {}
    for exposure, level in enumerate(levels):
        if level in BENCHMARK_LEVELS and level not in chosen:
            chosen[level] = exposure
    return chosen


def select_database_exposure(levels: list[int], trajectory: int) -> int:
    """Exposure whose level is closest to the round-robin target 1..6 (balanced levels)."""
    target = BENCHMARK_LEVELS[trajectory % len(BENCHMARK_LEVELS)]
    return min(range(len(levels)), key=lambda e: (abs(levels[e] - target), e))


def distractor_table(count: int, categories: int, seed: int, exposures: int,
                     images_per_object: int = DISTRACTOR_TRAJECTORIES,
                     exposures_per_trajectory: int = 1) -> dict[str, np.ndarray]:
    """Columns of `count` distractor rows, vectorised so a million rows cost seconds.

    With one exposure per trajectory (the default), row k belongs to category k % categories;
    within it, consecutive rows walk the trajectories of one distractor instance, one image per
    trajectory, `images_per_object` of them (10 by default; the published million came from
    1,562 objects), and the exposure is a hash of (seed, k), which mixes blur levels without
    rendering anything.

    With E = `exposures_per_trajectory` > 1, rows come in runs of E: E exposures of one
    trajectory, spread evenly over 0..exposures-1 (all of them when E = exposures, as the
    published data set rendered every trajectory), and run g takes the place of row g above
    (category g % categories, trajectories of one instance in turn, about `images_per_object`
    images per instance). A trajectory's exposures are one render's running sums, so the
    renderer makes a run of E images for about the price of its longest exposure alone.
    """
    if images_per_object < 1:
        raise ValueError(f"images_per_object must be >= 1, got {images_per_object}")
    if not 1 <= exposures_per_trajectory <= exposures:
        raise ValueError(f"exposures per trajectory must be in 1..{exposures}, "
                         f"got {exposures_per_trajectory}")
    k = np.arange(count, dtype=np.int64)
    runs, step = divmod(k, exposures_per_trajectory)
    category = runs % categories
    within = runs // categories
    trajectories = -(-images_per_object // exposures_per_trajectory)
    instance = DISTRACTOR_BASE + within // trajectories
    trajectory = within % trajectories
    if exposures_per_trajectory == 1:
        mixed = (k * 0x9E3779B1 + seed * 0x85EBCA77 + 0x165667B1) & 0xFFFFFFFF
        mixed = ((mixed ^ (mixed >> 15)) * 0x2C1B3C6D) & 0xFFFFFFFF
        exposure = (mixed ^ (mixed >> 12)) % exposures
    else:  # evenly spread, first and last exposure included
        exposure = (step * (exposures - 1) * 2 + exposures_per_trajectory - 1) // (
            2 * (exposures_per_trajectory - 1))
    return {"category": category, "instance": instance, "trajectory": trajectory, "exposure": exposure}


def images_per_distractor_object(count: int, objects: int | None) -> int:
    """Images per distractor object so that `count` distractors come from about `objects`
    objects (None: the default layout, 10 each)."""
    if objects is None:
        return DISTRACTOR_TRAJECTORIES
    if objects < 1:
        raise ValueError(f"distractor objects must be >= 1, got {objects}")
    return max(1, -(-count // objects))
