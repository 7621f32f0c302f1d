"""Procedural backgrounds, one per trajectory, deterministic from a seed.

A fractal colour field (several octaves of upsampled random grids), like a landscape,
with up to three muted shapes or lines on it, so a background has edges, texture and
now and then something object-like. (Dozens of shapes, then 2..9, buried the objects so
deep that models trained from scratch on a CPU budget stayed at chance on unseen
instances.) Everything is drawn by PIL and numpy from one seeded generator.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def _color_field(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    field = np.zeros((height, width), np.float32)
    for octave, weight in ((3, 1.0), (6, 0.5), (12, 0.25), (24, 0.12)):
        grid = rng.random((octave, max(2, octave * width // height))).astype(np.float32)
        image = Image.fromarray(grid, mode="F").resize((width, height), Image.BICUBIC)
        field += weight * np.asarray(image)
    field = (field - field.min()) / max(float(np.ptp(field)), 1e-6)
    palette = np.stack([_muted_color(rng) for _ in range(3)]).astype(np.float32)
    low = palette[0] * (1 - field[..., None]) + palette[1] * field[..., None]
    band = np.clip(1 - np.abs(field - rng.uniform(0.3, 0.7)) * 4, 0, 1)[..., None]
    return low * (1 - band) + palette[2] * band


def _muted_color(rng: np.random.Generator) -> np.ndarray:
    """Natural-looking colour: grey with a moderate tint, like foliage, soil, walls or sky."""
    grey = rng.uniform(0.15, 0.85)
    tint = rng.normal(0, 0.12, 3)
    return np.clip(grey + tint, 0.02, 0.98)


def _random_color(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(c * 255) for c in _muted_color(rng))


def _draw_clutter(image: Image.Image, rng: np.random.Generator) -> None:
    width, height = image.size
    draw = ImageDraw.Draw(image)
    side = min(width, height)
    for _ in range(int(rng.integers(0, 4))):
        kind = int(rng.integers(4))
        x, y = rng.uniform(-0.1, 1.1) * width, rng.uniform(-0.1, 1.1) * height
        size = side * rng.uniform(0.03, 0.25)
        box = [x - size, y - size * rng.uniform(0.3, 1.5), x + size, y + size]
        box = [min(box[0], box[2]), min(box[1], box[3]), max(box[0], box[2]), max(box[1], box[3])]
        color = _random_color(rng)
        if kind == 0:
            draw.rectangle(box, fill=color)
        elif kind == 1:
            draw.ellipse(box, fill=color)
        elif kind == 2:
            points = [(x + size * rng.uniform(-1, 1), y + size * rng.uniform(-1, 1)) for _ in range(5)]
            draw.polygon(points, fill=color)
        else:
            end = (x + size * rng.uniform(-3, 3), y + size * rng.uniform(-3, 3))
            draw.line([(x, y), end], fill=color, width=int(rng.integers(1, max(2, side // 25))))


@lru_cache(maxsize=256)
def render_background(seed: int, height: int, width: int) -> np.ndarray:
    """uint8 (H, W, 3) background; cached because a trajectory's exposures share it."""
    rng = np.random.default_rng([3, seed])
    base = (_color_field(rng, height, width) * 255).astype(np.uint8)
    image = Image.fromarray(base, mode="RGB")
    _draw_clutter(image, rng)
    softness = float(rng.uniform(0.0, 1.2))
    if softness > 0.3:  # an out-of-focus background now and then
        image = image.filter(ImageFilter.GaussianBlur(softness))
    result = np.asarray(image, dtype=np.uint8)
    result.setflags(write=False)
    return result
