"""Slow-motion footage from the simulator, with the truth a real video lacks.

The simulator's exposure e averages the instant frames of steps 0..e (one per step when
`substeps` is 1), so instant frame e is (e + 1) * layer[e] - e * layer[e - 1] of its averaged
layers: the sharp frames a high-frame-rate camera would film. Comparing what `video-set`
recovers from them with the simulator's own renders and matte-based levels checks the
frame averaging and the level rule (tests/test_video_set.py, scripts/video_level_check.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from retrieval.sim.config import SimConfig
from retrieval.sim.photos import trajectory_background
from retrieval.sim.render import RenderRequest, compose_layers, render_object_layers
from retrieval.sim.severity import blur_level, blur_severity
from retrieval.sim.trajectory import sample_trajectory
from retrieval.video.settings import CURVES


@dataclass(frozen=True)
class SimulatedClip:
    frames: np.ndarray  # uint8 (E, H, W, 3): the sharp instant frames of exposures 0..E-1
    blurred: np.ndarray  # uint8 (E, H, W, 3): the simulator's image of exposure e (no noise)
    levels: list[int]  # the simulator's blur level of exposure e, from its matte
    scene: np.ndarray  # uint8 (H, W, 3): the background alone
    curve: str  # name of the camera response curve (retrieval.video.light.CURVES)


def simulated_clips(config: SimConfig, category: int, instance: int, trajectories: int,
                    own_scenes: bool = False) -> list[SimulatedClip]:
    """Trajectories 0.. of one instance filmed by one still camera, through the first
    trajectory's camera curve, without sensor noise: all over the first trajectory's background,
    or with `own_scenes` each over its own (the camera moved to another place), so the scene
    says nothing about the object, as in the simulator's data sets."""
    if config.substeps != 1:
        raise ValueError(f"instant frames need one frame per step (substeps=1), got {config.substeps}")
    count, height, width = config.exposures, config.height, config.width
    first = sample_trajectory(config, category, instance, 0)
    curves = torch.full((count,), first.camera_curve)
    silent = torch.zeros(count, 3, height, width)

    def compose(layers: torch.Tensor, background: torch.Tensor) -> np.ndarray:
        n = len(layers)
        return compose_layers(layers, background.expand(n, -1, -1, -1), curves[:n], silent[:n],
                              0.0, 0.0).numpy()

    def linear_background(trajectory: int) -> torch.Tensor:
        seed = sample_trajectory(config, category, instance, trajectory).background_seed
        pixels = torch.from_numpy(trajectory_background(config, seed, height, width).copy())
        return (pixels.permute(2, 0, 1).float() / 255) ** 2  # linear light, as render.py

    curve = next(name for name, row in CURVES.items() if row == first.camera_curve)
    requests = [RenderRequest(category, instance, t, tuple(range(count))) for t in range(trajectories)]
    clips = []
    for trajectory, rendered in enumerate(render_object_layers(config, requests)):
        background = linear_background(trajectory if own_scenes else 0)
        means = torch.stack([rendered[e] for e in range(count)])
        frames_so_far = torch.arange(1, count + 1, dtype=torch.float32)[:, None, None, None]
        instants = means * frames_so_far
        instants[1:] -= means[:-1] * frames_so_far[:-1]
        levels = [blur_level(blur_severity(means[e, 3].numpy())) for e in range(count)]
        scene = compose(torch.zeros(1, 4, height, width), background)[0]
        clips.append(SimulatedClip(compose(instants, background), compose(means, background),
                                   levels, scene, curve))
    return clips
