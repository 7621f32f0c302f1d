"""Procedural 3-D objects, deterministic from (category, instance).

An object is the union of up to two convex parts. Each part is the intersection of a
diagonal quadric interior (x^2*qx + y^2*qy + z^2*qz <= 1) and up to `MAX_PLANES`
half-spaces (n . p <= h), which covers spheres, ellipsoids, boxes, cylinders, prisms,
pyramids and octahedra with one exact, branch-free ray test (see `render.py`).

A category pairs a shape template with a texture style. Every template and every
style is shared by several categories, so categories overlap in shape or in
appearance (inter-class similarity). Instances of one category share shape, pattern
family (two pattern kinds, a range of saturation and brightness) and gloss; each
instance draws its own proportions (+-18 %), pattern kind from the family, three
independent colours, frequencies, directions and placement, the way two mugs of one
shape differ by print. (Earlier versions only turned a shared palette round the colour
wheel, which lighting and camera curves partly undid: models trained on them did no
better than chance on unseen instances.)
Objects never depend on the run's seed: instance i of category c is the same object
in every preset, which keeps training and test instances comparable across runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

MAX_PARTS = 2
MAX_PLANES = 8
NUM_TEMPLATES = 20
NUM_STYLES = 20
# Category c uses template (c % 20) and style (c + shift) % 20: the first 40 categories
# are templates x {identity, +7} styles, so each style appears on two different shapes.
_STYLE_SHIFTS = (0, 7, 3, 11, 5, 13, 17, 1, 9, 15, 2, 19, 6, 14, 10, 18, 4, 12, 8, 16)
MAX_CATEGORIES = NUM_TEMPLATES * len(_STYLE_SHIFTS)
# Local instance indices at or above this are distractors: same categories, never positives.
DISTRACTOR_BASE = 100_000
INSTANCE_STRIDE = 1_000_000  # global instance id = category * INSTANCE_STRIDE + local index
_FAR = 1.0e4  # plane offset of an unused plane: never cuts anything
# Solid texture vector: stripe direction (3), cross direction (3), stripe frequency, stripe duty,
# cross frequency, dot frequency, dot radius, two-tone split flag, three phases.
PATTERN_SIZE = 15


@dataclass(frozen=True)
class ObjectSpec:
    """Arrays describing one object in its own unit-radius frame."""

    part_active: np.ndarray  # (P,) bool
    quadric: np.ndarray  # (P, 3) non-negative diagonal coefficients; zeros = no quadric
    plane_normals: np.ndarray  # (P, K, 3) unit normals
    plane_offsets: np.ndarray  # (P, K)
    part_centers: np.ndarray  # (P, 3) part origin in the object frame
    colors: np.ndarray  # (3, 3) linear-light RGB of base, pattern and dot colours
    pattern: np.ndarray  # (PATTERN_SIZE,) solid-texture parameters, see `raycast._solid_texture`
    specular: float


def category_layout(category: int) -> tuple[int, int]:
    """(template, style) of a category."""
    if not 0 <= category < MAX_CATEGORIES:
        raise ValueError(f"category must be in [0, {MAX_CATEGORIES}), got {category}")
    template = category % NUM_TEMPLATES
    shift = _STYLE_SHIFTS[category // NUM_TEMPLATES]
    return template, (template + shift) % NUM_STYLES


def global_instance_id(category: int, local: int) -> int:
    return category * INSTANCE_STRIDE + local


def split_instance_id(instance: int) -> tuple[int, int]:
    return divmod(int(instance), INSTANCE_STRIDE)


class _PartBuilder:
    """Accumulates convex parts; keeps the template table below readable."""

    def __init__(self) -> None:
        self.parts: list[tuple[np.ndarray, list[tuple[np.ndarray, float]], np.ndarray]] = []

    def add(self, quadric=(0.0, 0.0, 0.0), planes=(), center=(0.0, 0.0, 0.0)) -> _PartBuilder:
        normals = [(np.asarray(n, float) / np.linalg.norm(n), float(h)) for n, h in planes]
        self.parts.append((np.asarray(quadric, float), normals, np.asarray(center, float)))
        return self

    def ellipsoid(self, rx, ry, rz, center=(0, 0, 0), planes=()) -> _PartBuilder:
        return self.add((1 / rx**2, 1 / ry**2, 1 / rz**2), planes, center)

    def box(self, hx, hy, hz, center=(0, 0, 0)) -> _PartBuilder:
        return self.add(planes=_box_planes(hx, hy, hz), center=center)

    def cylinder(self, r, hz, center=(0, 0, 0)) -> _PartBuilder:
        return self.add((1 / r**2, 1 / r**2, 0.0), _slab(hz), center)

    def prism(self, sides, r, hz, center=(0, 0, 0)) -> _PartBuilder:
        planes = [((math.cos(a), math.sin(a), 0.0), r) for a in _angles(sides)] + _slab(hz)
        return self.add(planes=planes, center=center)

    def arrays(self) -> tuple[np.ndarray, ...]:
        active = np.zeros(MAX_PARTS, bool)
        quadric = np.zeros((MAX_PARTS, 3))
        normals = np.tile(np.array([0.0, 0.0, 1.0]), (MAX_PARTS, MAX_PLANES, 1))
        offsets = np.full((MAX_PARTS, MAX_PLANES), _FAR)
        centers = np.zeros((MAX_PARTS, 3))
        for p, (q, planes, center) in enumerate(self.parts):
            active[p] = True
            quadric[p] = q
            centers[p] = center
            for k, (n, h) in enumerate(planes):
                normals[p, k] = n
                offsets[p, k] = h
        return active, quadric, normals, offsets, centers


def _slab(hz: float) -> list[tuple[tuple[float, float, float], float]]:
    return [((0.0, 0.0, 1.0), hz), ((0.0, 0.0, -1.0), hz)]


def _box_planes(hx: float, hy: float, hz: float) -> list:
    return [((1, 0, 0), hx), ((-1, 0, 0), hx), ((0, 1, 0), hy), ((0, -1, 0), hy)] + _slab(hz)


def _angles(sides: int) -> list[float]:
    return [2 * math.pi * i / sides for i in range(sides)]


def _template(template: int, j: np.ndarray) -> _PartBuilder:
    """Shape template `template` with proportions jittered by factors j (>0, near 1)."""
    b = _PartBuilder()
    if template == 0:  # sphere
        return b.ellipsoid(0.9 * j[0], 0.9 * j[0], 0.9 * j[0])
    if template == 1:  # ellipsoid (egg / rugby ball)
        return b.ellipsoid(0.95 * j[0], 0.6 * j[1], 0.55 * j[2])
    if template == 2:  # cube
        return b.box(0.55 * j[0], 0.55 * j[1], 0.55 * j[2])
    if template == 3:  # book / slab
        return b.box(0.75 * j[0], 0.55 * j[1], 0.14 * j[2])
    if template == 4:  # can
        return b.cylinder(0.5 * j[0], 0.7 * j[1])
    if template == 5:  # puck / coin
        return b.cylinder(0.85 * j[0], 0.16 * j[1])
    if template == 6:  # hexagonal nut
        return b.prism(6, 0.75 * j[0], 0.3 * j[1])
    if template == 7:  # triangular wedge
        return b.prism(3, 0.55 * j[0], 0.75 * j[1])
    if template == 8:  # octahedron
        planes = [((sx, sy, sz), 0.62 * j[0]) for sx in (1, -1) for sy in (1, -1) for sz in (1, -1)]
        return b.add(planes=planes)
    if template == 9:  # square pyramid
        planes = [((math.cos(a), math.sin(a), 0.55), 0.5 * j[0]) for a in _angles(4)]
        return b.add(planes=[*planes, ((0, 0, -1), 0.5 * j[1])])
    if template == 10:  # snowman: two spheres
        return b.ellipsoid(0.5 * j[0], 0.5 * j[0], 0.5 * j[0], (0, 0.35, 0)).ellipsoid(
            0.35 * j[1], 0.35 * j[1], 0.35 * j[1], (0, -0.5, 0)
        )
    if template == 11:  # mushroom: stem and a half-sphere cap
        cap = [((0, 1, 0), 0.0)]
        return b.cylinder(0.2 * j[0], 0.4 * j[1], (0, 0.2, 0)).ellipsoid(
            0.8 * j[2], 0.6, 0.8 * j[2], (0, -0.05, 0), planes=cap
        )
    if template == 12:  # L shape
        return b.box(0.2 * j[0], 0.7, 0.25 * j[2], (-0.35, 0, 0)).box(
            0.55, 0.2 * j[1], 0.25 * j[2], (0.05, 0.5, 0)
        )
    if template == 13:  # T shape
        return b.box(0.75 * j[0], 0.18 * j[1], 0.22, (0, -0.5, 0)).box(
            0.18 * j[1], 0.6, 0.22, (0, 0.1, 0)
        )
    if template == 14:  # bottle: body and neck
        return b.cylinder(0.4 * j[0], 0.45 * j[1], (0, 0, -0.25)).cylinder(
            0.15 * j[2], 0.35, (0, 0, 0.55)
        )
    if template == 15:  # rounded box: box cut by an ellipsoid
        return b.add(
            (1 / (0.8 * j[0]) ** 2, 1 / (0.7 * j[1]) ** 2, 1 / 0.75**2),
            _box_planes(0.62 * j[0], 0.5 * j[1], 0.5),
        )
    if template == 16:  # lens: sphere cut to a thick disc
        return b.ellipsoid(0.85 * j[0], 0.85 * j[0], 0.85 * j[0], planes=_slab(0.28 * j[1]))
    if template == 17:  # plus / cross
        return b.box(0.75 * j[0], 0.2 * j[1], 0.2, (0, 0, 0)).box(0.2 * j[1], 0.75 * j[2], 0.2)
    if template == 18:  # rocket: capsule-like cylinder with a ball
        return b.cylinder(0.28 * j[0], 0.5 * j[1], (0, 0, -0.2)).ellipsoid(
            0.36 * j[2], 0.36 * j[2], 0.36 * j[2], (0, 0, 0.45)
        )
    # 19: tetra-ish wedge block (box cut by a slanted plane)
    return b.add(planes=[*_box_planes(0.6 * j[0], 0.5 * j[1], 0.45), ((1, 1, 0), 0.45 * j[2])])


# Texture families. A category's style fixes which two pattern kinds its instances draw from
# and the saturation / brightness range of their paint; everything else is the instance's own.
# kind: 0 stripes, 1 checker, 2 dots, 3 two-tone, 4 stripes+dots, 5 plain
_STYLE_KINDS = ((0, 2), (1, 3), (2, 4), (3, 0), (4, 1), (0, 1), (1, 2), (2, 3), (5, 0), (4, 3),
                (0, 4), (3, 2), (1, 4), (2, 0), (0, 3), (4, 2), (3, 1), (5, 2), (1, 0), (2, 1))


def _hsv_to_linear_rgb(h: float, s: float, v: float) -> np.ndarray:
    i = math.floor(h * 6.0) % 6
    f = h * 6.0 - math.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return np.asarray(rgb, float) ** 2.2  # display value -> linear light


def _style(style: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float]:
    """The instance's own texture: kind, three independent colours, frequencies, placement.

    Only the family (two allowed pattern kinds, a saturation and brightness range, a gloss)
    comes from the category's style, so instances of a category look related but are told
    apart at a glance when sharp, as two mugs of one shape with different prints.
    """
    style_rng = np.random.default_rng([7, style])  # shared by all instances of the style
    kinds = _STYLE_KINDS[style]
    sat_low = style_rng.uniform(0.35, 0.6)
    val_low = style_rng.uniform(0.35, 0.6)
    kind = kinds[int(rng.integers(2))]
    hues = rng.random(3)
    hues[1] = hues[0] + rng.uniform(0.2, 0.8)  # pattern colour never close to the base colour
    sats = rng.uniform(sat_low, 1.0, 3)
    vals = rng.uniform(val_low, 1.0, 3)
    colors = np.stack([_hsv_to_linear_rgb(h % 1.0, s, v) for h, s, v in zip(hues, sats, vals)])
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    cross = np.cross(direction, rng.normal(size=3))
    cross /= np.linalg.norm(cross)
    freq = rng.uniform(1.5, 6.0)
    stripe_f = freq if kind in (0, 1, 4) else 0.0
    cross_f = rng.uniform(1.5, 6.0) if kind == 1 else 0.0
    dot_f = rng.uniform(2.0, 5.0) if kind in (2, 4) else 0.0
    dot_r = rng.uniform(0.18, 0.36) if kind in (2, 4) else 0.0
    split = 1.0 if kind == 3 else 0.0
    pattern = np.array(
        [*direction, *cross, stripe_f, rng.uniform(0.3, 0.7), cross_f, dot_f, dot_r, split,
         *rng.random(3)]
    )
    return colors, pattern, float(style_rng.uniform(0.0, 0.5))


@lru_cache(maxsize=4096)
def object_spec(category: int, local_instance: int) -> ObjectSpec:
    """The object of instance `local_instance` of `category` (cached: objects repeat)."""
    template, style = category_layout(category)
    rng = np.random.default_rng([1, category, local_instance])
    jitter = rng.uniform(0.82, 1.18, 3)
    active, quadric, normals, offsets, centers = _template(template, jitter).arrays()
    colors, pattern, specular = _style(style, rng)
    return ObjectSpec(active, quadric, normals, offsets, centers, colors, pattern, specular)
