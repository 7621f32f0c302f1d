"""Camera response curves and sensor noise (docs/method.md, "Image formation").

Sub-frames are averaged in linear light, the response curve g maps the average to
display values, and noise is added after: y = g(mean_i x[i]) + n. The curves are
applied through lookup tables with linear interpolation so the result only involves
exactly rounded arithmetic and never depends on how rows are batched.
"""

from __future__ import annotations

import math

import numpy as np
import torch

_LUT_SIZE = 1024


def _curves() -> np.ndarray:
    x = np.linspace(0.0, 1.0, _LUT_SIZE + 1)
    srgb = np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)
    gamma18 = np.power(x, 1 / 1.8)
    gamma24 = np.power(x, 1 / 2.4)
    s_curve = np.power(x, 1 / 2.2)
    s_curve = s_curve * s_curve * (3 - 2 * s_curve) * 0.6 + s_curve * 0.4  # filmic-like contrast
    return np.stack([srgb, gamma18, gamma24, s_curve]).astype(np.float32)


CAMERA_CURVES = torch.from_numpy(_curves())


def apply_camera_curve(linear: torch.Tensor, curve: torch.Tensor) -> torch.Tensor:
    """Map linear intensities [B, C, H, W] through per-image curves `curve` [B] (int64)."""
    lut = CAMERA_CURVES.to(linear.device)[curve]  # [B, LUT+1]
    x = linear.clamp(0.0, 1.0) * _LUT_SIZE
    index = x.floor().clamp(max=_LUT_SIZE - 1)
    frac = x - index
    flat_index = index.long().flatten(1)
    low = torch.gather(lut, 1, flat_index).view_as(x)
    high = torch.gather(lut, 1, flat_index + 1).view_as(x)
    return low + (high - low) * frac


_NOISE_BANK_SIZE = 1 << 22
_noise_bank: torch.Tensor | None = None


def sensor_noise(seed: int, exposure: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Unit Gaussian noise for one image, a pure function of (seed, exposure).

    A window of a fixed 4M-sample Gaussian bank at an offset drawn from the seed:
    statistically white for any one image, and ~10x cheaper than drawing fresh samples.
    """
    global _noise_bank
    if _noise_bank is None:
        _noise_bank = torch.from_numpy(
            np.random.default_rng(4).standard_normal(_NOISE_BANK_SIZE, dtype=np.float32)
        )
    count = math.prod(shape)
    if count > _NOISE_BANK_SIZE:
        raise ValueError(f"image of {count} samples exceeds the noise bank")
    offset = int(np.random.default_rng([4, seed, exposure]).integers(_NOISE_BANK_SIZE - count + 1))
    return _noise_bank[offset : offset + count].view(shape)
