"""Blur severity and level of a rendered object matte (docs/method.md, "Blur severity and blur level").

a' = a * erode3x3(a > 0) drops the matte's outer ring (anti-aliasing and the faint
tail of the streak); v is the mean of a' over its support, BS = 1 - v. A sharp
opaque object has v = 1 (BS = 0); the longer the streak, the more the coverage is
spread thin and the lower v.
"""

from __future__ import annotations

import math

import numpy as np


def _erode3x3(mask: np.ndarray) -> np.ndarray:
    """Binary 3x3 erosion; pixels outside the image count as background."""
    padded = np.pad(mask, 1, constant_values=False)
    height, width = mask.shape
    out = np.ones_like(mask)
    for dy in range(3):
        for dx in range(3):
            out &= padded[dy : dy + height, dx : dx + width]
    return out


def blur_value(alpha: np.ndarray) -> float:
    """v: mean eroded coverage over its support, 0 for an empty (or fully eroded) matte."""
    alpha = np.asarray(alpha, dtype=np.float64)
    if alpha.ndim != 2:
        raise ValueError(f"alpha matte must be 2-D, got shape {alpha.shape}")
    eroded = alpha * _erode3x3(alpha > 0)
    support = eroded > 0
    return float(eroded[support].mean()) if support.any() else 0.0


def blur_severity(alpha: np.ndarray) -> float:
    """BS = 1 - v, clipped to [0, 1] against rounding."""
    return min(1.0, max(0.0, 1.0 - blur_value(alpha)))


def blur_level(severity: float) -> int:
    """BL = ceil(10 * BS), in 1..10.

    10*BS is rounded to 6 decimals first so a severity that is a multiple of 0.1 up to
    float error (0.30000000000000004) stays on its level; BS = 0 (a sharp object, v = 1)
    belongs to level 1, the sharpest level of the benchmark.
    """
    if not 0.0 <= severity <= 1.0 or math.isnan(severity):
        raise ValueError(f"blur severity must be in [0, 1], got {severity}")
    return max(1, math.ceil(round(10.0 * severity, 6)))


def streak_box(alpha: np.ndarray) -> tuple[float, float, float, float]:
    """Normalised (cx, cy, w, h) of the box around every pixel the object touched."""
    rows = np.flatnonzero(alpha.any(axis=1))
    cols = np.flatnonzero(alpha.any(axis=0))
    if rows.size == 0:
        return (0.0, 0.0, 0.0, 0.0)
    height, width = alpha.shape
    x0, x1 = cols[0] / width, (cols[-1] + 1) / width
    y0, y1 = rows[0] / height, (rows[-1] + 1) / height
    return ((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0)
