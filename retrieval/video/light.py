"""Frame averaging in linear light, through the simulator's own camera response curves.

A camera records display values y = g(x) of the linear light x it collected; a longer
exposure collects the sum of the short ones, so the blurred image of k frames is
g(mean_i g^-1(y_i)) (docs/method.md, "Image formation"). g is one of the simulator's
lookup tables (`retrieval.sim.camera`), inverted here by interpolating the same table.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import torch

from retrieval.sim.camera import CAMERA_CURVES, apply_camera_curve
from retrieval.video.settings import CURVES


def linear_table(curve: str) -> np.ndarray:
    """float32 [256]: the linear light g^-1(d / 255) of each 8-bit display value d."""
    lut = CAMERA_CURVES[CURVES[curve]].numpy().astype(np.float64)
    grid = np.linspace(0.0, 1.0, len(lut))
    return np.interp(np.arange(256) / 255.0, lut, grid).astype(np.float32)


def to_display(linear: np.ndarray, curve: str) -> np.ndarray:
    """uint8 (H, W, 3) display image of linear light (H, W, 3), rounded as the simulator does."""
    tensor = torch.from_numpy(np.ascontiguousarray(linear, dtype=np.float32)).permute(2, 0, 1)[None]
    display = apply_camera_curve(tensor, torch.tensor([CURVES[curve]]))
    return (display.clamp(0, 1) * 255).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()


def averaged_windows(frames: np.ndarray, counts: Iterable[int], curve: str
                     ) -> Iterator[tuple[int, np.ndarray]]:
    """(k, image) for each k in `counts`: the mean of frames[:k] in linear light, as uint8.

    `frames` is uint8 (T, H, W, 3) in display values; one running sum serves every k.
    """
    table = linear_table(curve)
    wanted = sorted(set(counts))
    if wanted and not 1 <= wanted[0] <= wanted[-1] <= len(frames):
        raise ValueError(f"window lengths must be in 1..{len(frames)}, got {wanted[0]}..{wanted[-1]}")
    total = np.zeros(frames.shape[1:], dtype=np.float64)
    done = 0
    for k in wanted:
        for frame in frames[done:k]:
            total += table[frame]
        done = k
        yield k, to_display(total / k, curve)
