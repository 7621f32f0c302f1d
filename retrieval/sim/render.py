"""Exposure integration: motion-blurred object layers from ray-cast frames, and compositing.

Each frame (`retrieval.sim.raycast`) is rendered in a small window around the object and added
into a per-trajectory accumulator of premultiplied linear colour and coverage; the running sum
after the frames of exposure e, divided by their count, is the motion-blurred object layer of
that exposure, composited over the trajectory's background in linear light.

Only exactly rounded operations touch pixels and no reduction mixes rows, so a row renders to
the same bits alone or in any batch, which virtual manifest rows rely on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from retrieval.sim.camera import apply_camera_curve, sensor_noise
from retrieval.sim.config import SimConfig
from retrieval.sim.objects import object_spec
from retrieval.sim.photos import photo_rows, trajectory_background
from retrieval.sim.raycast import ObjectBatch, render_frame_chunked
from retrieval.sim.trajectory import Trajectory, sample_trajectory


@dataclass(frozen=True)
class RenderRequest:
    """Render these exposures of one trajectory of one object."""

    category: int
    instance: int  # local instance index within the category
    trajectory: int
    exposures: tuple[int, ...]


@dataclass(frozen=True)
class RenderedImage:
    image: np.ndarray  # uint8 (H, W, 3), display values after camera curve and noise
    alpha: np.ndarray  # float32 (H, W), object coverage averaged over the exposure


def _splat(acc: torch.Tensor, window: torch.Tensor, x0: int, y0: int, fx: float, fy: float,
           pad: int) -> None:
    """Add one row's window [4, h, w] into its padded accumulator [4, H', W'] at a sub-pixel offset.

    A bilinear shift by (fx, fy) is the window added four times at the integer offsets
    (0|1, 0|1) with weights (1-fx|fx)(1-fy|fy). Rows own their accumulators, so the sums
    are the same whatever else is in the batch.
    """
    height, width = window.shape[-2:]
    for dy, wy in ((0, 1.0 - fy), (1, fy)):
        for dx, wx in ((0, 1.0 - fx), (1, fx)):
            weight = wx * wy
            if weight != 0.0:
                y, x = y0 + pad + dy, x0 + pad + dx
                acc[:, y : y + height, x : x + width].add_(window, alpha=weight)


def _covered_windows(layer: torch.Tensor, origin: torch.Tensor) -> list[tuple[torch.Tensor, tuple[int, int]]]:
    """Each row's window cut to the box of pixels the object covers, with that box's origin.

    Uncovered pixels hold exact zeros, so leaving them out of the sums changes no bit; it
    saves most of the splatting work, which runs a dozen times per key frame.
    """
    covered = layer[:, 3] > 0
    rows_hit, cols_hit = covered.any(dim=2), covered.any(dim=1)
    size = covered.shape[-1]
    windows = []
    for row, (x0, y0) in enumerate(origin.tolist()):
        ys = torch.nonzero(rows_hit[row]).flatten().tolist()
        xs = torch.nonzero(cols_hit[row]).flatten().tolist()
        if not ys:
            windows.append((layer[row, :, :0, :0], (x0, y0)))
            continue
        top, bottom, left, right = ys[0], min(ys[-1] + 1, size), xs[0], min(xs[-1] + 1, size)
        windows.append((layer[row, :, top:bottom, left:right], (x0 + left, y0 + top)))
    return windows


def _splat_motion(acc: torch.Tensor, window: torch.Tensor, origin: tuple[int, int],
                  velocity: tuple[float, float], substeps: int, first: int, pad: int) -> None:
    """Frames `first`..substeps-1 of one step: the key frame translated along the motion."""
    for substep in range(first, substeps):
        dx, dy = velocity[0] * substep / substeps, velocity[1] * substep / substeps
        whole_x, whole_y = math.floor(dx), math.floor(dy)
        _splat(acc, window, origin[0] + whole_x, origin[1] + whole_y, dx - whole_x, dy - whole_y, pad)


def row_substeps(config: SimConfig, motion: Trajectory) -> int:
    """Instant frames per step for one trajectory: a frame about every 1.5 pixels of motion."""
    if config.substeps:
        return config.substeps
    speed = math.hypot(*motion.velocity)
    return max(2, math.ceil(speed / 1.5))


def compose_layers(layers: torch.Tensor, backgrounds: torch.Tensor, curves: torch.Tensor,
                   noise: torch.Tensor, read_noise: float | torch.Tensor,
                   shot_noise: float | torch.Tensor) -> torch.Tensor:
    """Images from object layers: over the backgrounds in linear light, camera curve, noise.

    `layers` [B, 4, H, W] hold premultiplied linear RGB and coverage; `backgrounds` [B, 3, H, W]
    linear light; `curves` [B] int64; `noise` unit Gaussian [B, 3, H, W]; the noise levels are
    numbers or [B, 1, 1, 1] tensors. Returns uint8 [B, H, W, 3]. The data sets and the training
    stream (which puts layers over unrelated backgrounds) both form their pixels here, so they
    share one image model.
    """
    alpha = layers[:, 3:4]
    linear = layers[:, :3] + (1 - alpha) * backgrounds
    display = apply_camera_curve(linear, curves)
    sigma = (read_noise**2 + shot_noise * display).sqrt()
    pixels = ((display + sigma * noise).clamp(0, 1) * 255).round().to(torch.uint8)
    return pixels.permute(0, 2, 3, 1)


def _finish(config: SimConfig, batch: ObjectBatch, acc: torch.Tensor, backgrounds: torch.Tensor,
            motions: list[Trajectory], rows: list[int], frames: list[int], exposure: int
            ) -> list[RenderedImage]:
    """The images of the given rows after `exposure` steps (their layers over their backgrounds).

    One image at a time: full-batch temporaries of this size are fresh mmap'd memory on every
    call, and their page faults cost more than the arithmetic.
    """
    images = []
    for row, layer in zip(rows, _mean_layers(config, acc, rows, frames)):
        motion = motions[row]
        noise = sensor_noise(motion.noise_seed, exposure, (3, config.height, config.width))
        pixels = compose_layers(layer[None], backgrounds[row : row + 1], batch.curve[row : row + 1],
                                noise.to(acc.device)[None], motion.read_noise, motion.shot_noise)
        images.append(RenderedImage(pixels[0].cpu().numpy(), layer[3].cpu().numpy()))
    return images


def _mean_layers(config: SimConfig, acc: torch.Tensor, rows: list[int], frames: list[int]
                 ) -> list[torch.Tensor]:
    """Motion-blurred object layers [4, H, W]: each row's accumulated frames over their count."""
    pad = config.crop_size + 2
    return [acc[row, :, pad : pad + config.height, pad : pad + config.width] / count
            for row, count in zip(rows, frames)]


def _integrate(config: SimConfig, requests: Sequence[RenderRequest], device: torch.device,
               emit: Callable[[ObjectBatch, torch.Tensor, list[Trajectory], list[int], list[int], int,
                               list[int]], None]) -> None:
    """Ray cast and accumulate every trajectory's frames, calling `emit` at each wanted exposure.

    emit(batch, acc, motions, rows, frame_counts, exposure, request_indices) sees the running
    accumulators of the rows whose request asks for `exposure` after that many steps.
    """
    for req in requests:
        bad = [e for e in req.exposures if not 0 <= e < config.exposures]
        if bad:
            raise ValueError(f"exposure {bad[0]} outside 0..{config.exposures - 1}")
    crop = config.crop_size
    order = sorted(range(len(requests)), key=lambda i: -max(requests[i].exposures, default=0))
    reqs = [requests[i] for i in order]
    objects = [object_spec(r.category, r.instance) for r in reqs]
    motions = [sample_trajectory(config, r.category, r.instance, r.trajectory) for r in reqs]
    substeps = [row_substeps(config, m) for m in motions]
    photos = photo_rows(config, [(r.category, r.instance) for r in reqs], device)
    batch = ObjectBatch(objects, motions, device, photos)
    last_step = [max(r.exposures, default=0) for r in reqs]
    pad = crop + 2
    acc = torch.zeros(len(reqs), 4, config.height + 2 * pad, config.width + 2 * pad, device=device)
    for step in range(last_step[0] + 1):
        # One ray-cast key frame per motion step; the frames in between are the key frame
        # translated along the motion (rotation and scale change by at most ~1.3 degrees
        # and ~1% within a step, far below a pixel).
        active = sum(1 for last in last_step if last >= step)
        layer, origin = render_frame_chunked(batch.rows(0, active), float(step), config.steps, crop)
        windows = _covered_windows(layer, origin)
        for row, (window, corner) in enumerate(windows):
            _splat_motion(acc[row], window, corner, motions[row].velocity, 1, 0, pad)
        wanted = [i for i in range(active) if step in reqs[i].exposures]
        if wanted:
            frames = [step * substeps[i] + 1 for i in wanted]
            emit(batch, acc, motions, wanted, frames, step, [order[i] for i in wanted])
        for row, (window, corner) in enumerate(windows):
            if last_step[row] > step:
                _splat_motion(acc[row], window, corner, motions[row].velocity, substeps[row], 1, pad)


def render_trajectories(
    config: SimConfig, requests: Sequence[RenderRequest], device: str | torch.device = "cpu"
) -> list[dict[int, RenderedImage]]:
    """Render the requested exposures of each trajectory; one dict exposure -> image per request."""
    device = torch.device(device)
    results: list[dict[int, RenderedImage]] = [{} for _ in requests]
    if not requests:
        return results

    backgrounds: torch.Tensor | None = None

    def emit(batch, acc, motions, rows, frames, exposure, indices):
        nonlocal backgrounds
        if backgrounds is None:  # the motions (and so the backgrounds) are known from here on
            backgrounds = _linear_backgrounds(config, motions, device)
        images = _finish(config, batch, acc, backgrounds, motions, rows, frames, exposure)
        for index, image in zip(indices, images):
            results[index][exposure] = image

    _integrate(config, requests, device, emit)
    return results


def render_object_layers(
    config: SimConfig, requests: Sequence[RenderRequest], device: str | torch.device = "cpu"
) -> list[dict[int, torch.Tensor]]:
    """The motion-blurred object layers (premultiplied linear RGB + coverage, float32 [4, H, W])
    of the requested exposures, without background, camera curve or noise; one dict per request.

    Training composes them over backgrounds of its own choosing (`compose_layers`), so no
    background is tied to an instance.
    """
    device = torch.device(device)
    results: list[dict[int, torch.Tensor]] = [{} for _ in requests]

    def emit(batch, acc, motions, rows, frames, exposure, indices):
        for index, layer in zip(indices, _mean_layers(config, acc, rows, frames)):
            results[index][exposure] = layer.clone()

    if requests:
        _integrate(config, requests, device, emit)
    return results


def _linear_backgrounds(config: SimConfig, motions: list[Trajectory], device: torch.device
                        ) -> torch.Tensor:
    """Each trajectory's own background [B, 3, H, W] in linear light (display squared)."""
    backgrounds = torch.stack([
        torch.from_numpy(trajectory_background(config, m.background_seed, config.height, config.width).copy())
        for m in motions
    ]).to(device).permute(0, 3, 1, 2).float() / 255.0
    return backgrounds * backgrounds
