"""Where the object is in each frame, and the blur label of a window of frames.

Real footage has no alpha matte, so the matte is measured: a still camera films the
object moving in front of a static scene, the scene is the per-pixel median of frames
the object only passes through, and the object's mask in one frame is where that frame
differs from the scene. Averaging the masks of a window of k frames gives the streak's
coverage, the estimate of the matte the simulator averages over the same exposure, and
the blur severity and level follow from it by the simulator's own rule
(`retrieval.sim.severity`): the level rises with the number of frames averaged and with
the distance the object moved over them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from retrieval.sim.severity import blur_level, blur_severity, streak_box

BACKGROUND_SAMPLES = 99  # frames whose median is the scene (odd: the median is one of them)


@dataclass(frozen=True)
class WindowLabel:
    """Labels of the image averaged from a window's frames."""

    severity: float
    level: int
    box: tuple[float, float, float, float]  # normalised (cx, cy, w, h) of the streak


def scene_background(frames: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3): per-pixel median of up to BACKGROUND_SAMPLES evenly spread frames."""
    picks = np.unique(np.linspace(0, len(frames) - 1, min(len(frames), BACKGROUND_SAMPLES)).round())
    return np.median(frames[picks.astype(np.int64)], axis=0).round().astype(np.uint8)


def _neighbour_counts(masks: np.ndarray) -> np.ndarray:
    """How many of each pixel's 3x3 neighbourhood are set (pixels outside count as unset)."""
    padded = np.pad(masks, ((0, 0), (1, 1), (1, 1))).astype(np.uint8)
    height, width = masks.shape[1:]
    return sum(padded[:, dy : dy + height, dx : dx + width] for dy in range(3) for dx in range(3))


def _fill_enclosed(masks: np.ndarray) -> np.ndarray:
    """Also set pixels with a set pixel to their left, right, top and bottom.

    Fills holes where the object looks like the scene behind it; a concavity open to one
    side (the inside of a cup seen from the side) stays open.
    """
    def seen(axis: int, reverse: bool) -> np.ndarray:
        flipped = np.flip(masks, axis) if reverse else masks
        found = np.logical_or.accumulate(flipped, axis=axis)
        return np.flip(found, axis) if reverse else found

    return masks | (seen(1, False) & seen(1, True) & seen(2, False) & seen(2, True))


def foreground_masks(frames: np.ndarray, background: np.ndarray, threshold: float) -> np.ndarray:
    """bool (T, H, W): pixels whose largest channel differs from the scene by > threshold.

    `threshold` is a fraction of the display range. A 3x3 majority vote drops isolated
    noise pixels and pinholes before enclosed holes are filled.
    """
    difference = np.abs(frames.astype(np.int16) - background.astype(np.int16)).max(axis=-1)
    changed = difference > threshold * 255
    return _fill_enclosed(_neighbour_counts(changed) >= 5)


def window_labels(masks: np.ndarray) -> list[WindowLabel]:
    """Label of the window of the first k frames, for every k = 1..len(masks).

    The window's matte is the mean of its frames' masks; severity, level and box are the
    simulator's functions of that matte.
    """
    total = np.zeros(masks.shape[1:], dtype=np.float64)
    labels = []
    for k, mask in enumerate(masks, start=1):
        total += mask
        matte = total / k
        severity = blur_severity(matte)
        labels.append(WindowLabel(severity, blur_level(severity), streak_box(matte)))
    return labels
