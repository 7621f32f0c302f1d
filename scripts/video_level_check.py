"""How well `video-set` recovers the simulator's blurred images and matte-based blur levels.

Renders sharp instant-frame clips of test instances (`retrieval.video.simulated`), averages
every window of 1..E frames in linear light and compares it with the simulator's render of
that exposure (largest difference on pixels no frame of the window saturates, and the mean
over all pixels), then measures each window's level from foreground masks as `video-set`
does, against the true scene (a sidecar's "background" frames) and against the clip's median
(the default), and prints how often the level is exact, within one, and the mean signed error.

    python scripts/video_level_check.py [--categories 20] [--trajectories 3] [--frames 41]
"""

from __future__ import annotations

import click
import numpy as np
import torch

from retrieval.sim.config import SimConfig
from retrieval.sim.layout import instance_split
from retrieval.video.light import averaged_windows
from retrieval.video.motion import foreground_masks, scene_background, window_labels
from retrieval.video.simulated import simulated_clips


def _errors(clip, background: np.ndarray, threshold: float) -> np.ndarray:
    labels = window_labels(foreground_masks(clip.frames, background, threshold))
    return np.array([label.level for label in labels]) - np.array(clip.levels)


def _image_differences(clip) -> tuple[int, float]:
    """(largest difference on unsaturated pixels, mean difference) over all windows."""
    largest, total = 0, 0.0
    windows = averaged_windows(clip.frames, range(1, len(clip.frames) + 1), clip.curve)
    for count, image in windows:
        difference = np.abs(image.astype(np.int16) - clip.blurred[count - 1])
        saturated = (clip.frames[:count] == 255).any(axis=0)
        largest = max(largest, int(difference[~saturated].max(initial=0)))
        total += float(difference.mean())
    return largest, total / len(clip.frames)


@click.command()
@click.option("--categories", type=click.IntRange(1, 400), default=20, show_default=True)
@click.option("--trajectories", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--frames", type=click.IntRange(2, 128), default=25, show_default=True,
              help="Instant frames per clip (windows of 1..frames).")
@click.option("--size", default="96x128", show_default=True, help="HxW of the frames.")
@click.option("--threshold", type=float, default=0.1, show_default=True)
def main(categories: int, trajectories: int, frames: int, size: str, threshold: float) -> None:
    torch.set_num_threads(1)
    height, width = (int(side) for side in size.split("x"))
    config = SimConfig(height=height, width=width, steps=max(24, frames - 1), exposures=frames,
                       substeps=1)
    errors: dict[str, list[np.ndarray]] = {"scene frames": [], "clip median": []}
    images = []
    for category in range(categories):
        instance = next(i for i in range(20) if instance_split(category, i) == "test")
        for clip in simulated_clips(config, category, instance, trajectories):
            images.append(_image_differences(clip))
            errors["scene frames"].append(_errors(clip, clip.scene, threshold))
            errors["clip median"].append(_errors(clip, scene_background(clip.frames), threshold))
    windows = sum(len(e) for e in errors["scene frames"])
    click.echo(f"{categories * trajectories} trajectories, {windows} windows of 1..{frames} frames, "
               f"{height}x{width}, threshold {threshold}")
    click.echo(f"images: largest difference on unsaturated pixels {max(i[0] for i in images)}/255, "
               f"mean difference {np.mean([i[1] for i in images]):.4f}/255")
    click.echo("| background | exact | within 1 | largest error | mean error |")
    click.echo("| --- | ---: | ---: | ---: | ---: |")
    for name, parts in errors.items():
        error = np.concatenate(parts)
        click.echo(f"| {name} | {np.mean(error == 0):.1%} | {np.mean(np.abs(error) <= 1):.1%} | "
                   f"{np.abs(error).max()} | {error.mean():+.3f} |")


if __name__ == "__main__":
    main()
