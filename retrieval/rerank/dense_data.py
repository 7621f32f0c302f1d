"""Training pairs for the dense network: two renders of one instance and which cells correspond.

The simulator knows the object's pose at every instant, so the surface point behind every pixel
is known exactly (`retrieval.sim.correspondence`). A pair is two images of one training instance
from different trajectories (so different orientation, lighting, background and usually blur);
its targets are (cell in A, cell in B) index pairs: for each descriptor cell of A's crop that
sees the object, the cell of B's crop that sees the same surface point. A blurred image stands
for the pose at the middle of its exposure. Images are the training stream's: object layers
from the layer bank over backgrounds unrelated to the instance, a random camera curve and noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from retrieval.model.crop import square_crop_boxes
from retrieval.sim.camera import CAMERA_CURVES
from retrieval.sim.config import SimConfig
from retrieval.sim.correspondence import ImageKey, correspondences_for_pair
from retrieval.sim.objects import split_instance_id
from retrieval.sim.render import compose_layers
from retrieval.train.layers import LayerBank
from retrieval.train.stream import BOX_SCALE_JITTER, BOX_SHIFT_JITTER, READ_NOISE, SHOT_NOISE

MATCH_TOLERANCE = 0.05  # object units (objects have unit radius): same surface point


def cell_of(points: np.ndarray, square: np.ndarray, image_size: tuple[int, int], grid: int
            ) -> np.ndarray:
    """Cell (row * grid + col) of the crop `square` (cx, cy normalised, side px) under each
    image point (x, y) [M, 2]; -1 where the point falls outside the crop."""
    height, width = image_size
    cx, cy, side = float(square[0]) * width, float(square[1]) * height, float(square[2])
    col = np.floor(((points[:, 0] - cx) / side + 0.5) * grid).astype(np.int64)
    row = np.floor(((points[:, 1] - cy) / side + 0.5) * grid).astype(np.int64)
    inside = (col >= 0) & (col < grid) & (row >= 0) & (row < grid)
    return np.where(inside, row * grid + col, -1)


def cell_pairs(matches: np.ndarray, square_a: np.ndarray, square_b: np.ndarray,
               image_size: tuple[int, int], grid: int) -> np.ndarray:
    """(cell in A, cell in B) int64 [N, 2] from pixel correspondences (xa, ya, xb, yb) [M, 4].

    One pair per A cell: the correspondence whose A pixel lies nearest that cell's centre, so a
    cell's target is the point it is centred on. Correspondences leaving either crop are dropped.
    Sorted by A cell.
    """
    if matches.ndim != 2 or matches.shape[1] != 4:
        raise ValueError(f"matches must be [M, 4] (xa, ya, xb, yb), got {matches.shape}")
    cells_a = cell_of(matches[:, :2], square_a, image_size, grid)
    cells_b = cell_of(matches[:, 2:], square_b, image_size, grid)
    keep = (cells_a >= 0) & (cells_b >= 0)
    if not keep.any():
        return np.zeros((0, 2), dtype=np.int64)
    cells_a, cells_b, points = cells_a[keep], cells_b[keep], matches[keep, :2]
    height, width = image_size
    step = float(square_a[2]) / grid
    centre_x = float(square_a[0]) * width + ((cells_a % grid) + 0.5 - grid / 2) * step
    centre_y = float(square_a[1]) * height + ((cells_a // grid) + 0.5 - grid / 2) * step
    off_centre = (points[:, 0] - centre_x) ** 2 + (points[:, 1] - centre_y) ** 2
    order = np.lexsort((off_centre, cells_a))
    first = np.ones(len(order), dtype=bool)
    first[1:] = cells_a[order][1:] != cells_a[order][:-1]
    chosen = order[first]
    return np.stack([cells_a[chosen], cells_b[chosen]], axis=1)


def jittered_boxes(boxes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """True streak boxes with the training stream's scale and shift jitter, so the network does
    not rely on the localiser centring the object exactly."""
    sides = boxes[:, 2:] * rng.uniform(*BOX_SCALE_JITTER, size=(len(boxes), 2))
    centres = boxes[:, :2] + boxes[:, 2:] * rng.uniform(-BOX_SHIFT_JITTER, BOX_SHIFT_JITTER,
                                                       size=(len(boxes), 2))
    return np.concatenate([centres, sides], axis=1).astype(np.float32)


@dataclass(frozen=True)
class PairBatch:
    images_a: torch.Tensor  # float [P, 3, H, W] in [0, 1]
    images_b: torch.Tensor
    boxes_a: torch.Tensor  # float [P, 4] normalised (cx, cy, w, h) crop windows
    boxes_b: torch.Tensor
    targets: list[np.ndarray]  # per pair, int64 [N_p, 2] (cell in A, cell in B)


class PairSampler:
    """Random training pairs (two trajectories of one instance) from the layer bank."""

    def __init__(self, bank: LayerBank, config: SimConfig, backgrounds: np.ndarray, seed: int = 0,
                 per_category: int = 1) -> None:
        if per_category < 1:
            raise ValueError(f"per_category must be at least 1, got {per_category}")
        self.bank, self.config, self.backgrounds, self.seed = bank, config, backgrounds, seed
        self.per_category = per_category
        by_instance: dict[int, list[int]] = {}
        for row, instance in enumerate(bank.instance.tolist()):
            by_instance.setdefault(int(instance), []).append(row)
        usable = {instance: rows for instance, rows in by_instance.items()
                  if len(set(bank.trajectory[rows].tolist())) > 1}
        if not usable:
            raise ValueError("the layer bank has no instance with two trajectories")
        self.instances = list(usable.values())
        by_category: dict[int, list[int]] = {}
        for position, instance in enumerate(usable):
            by_category.setdefault(split_instance_id(instance)[0], []).append(position)
        self.categories = [group for group in by_category.values() if len(group) >= per_category]

    def _instance_positions(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """`count` distinct instances: at random, or `per_category` at a time from one category,
        so each batch holds look-alikes (same shape and style, other texture) as negatives."""
        if self.per_category == 1:
            return rng.choice(len(self.instances), size=count, replace=False)
        groups = -(-count // self.per_category)
        categories = rng.choice(len(self.categories), size=groups, replace=False)
        picked = [rng.choice(self.categories[c], size=self.per_category, replace=False)
                  for c in categories]
        return np.concatenate(picked)[:count]

    def pairs(self, count: int, rng: np.random.Generator) -> list[tuple[int, int]]:
        """`count` (row A, row B) bank rows: one instance each, different trajectories."""
        chosen = []
        for position in self._instance_positions(count, rng):
            rows = np.asarray(self.instances[position])
            row_a = int(rng.choice(rows))
            others = rows[self.bank.trajectory[rows] != self.bank.trajectory[row_a]]
            chosen.append((row_a, int(rng.choice(others))))
        return chosen

    def batch(self, step: int, count: int, grid: int) -> PairBatch:
        """Pair batch `step` (a pure function of the seed and step, so a rerun sees the same)."""
        rng = np.random.default_rng((self.seed, 23, step))
        pairs = self.pairs(count, rng)
        rows = np.asarray([row for pair in pairs for row in pair])
        images = self._compose(rows, rng)
        boxes = jittered_boxes(self.bank.box[rows], rng)
        squares = _squares(boxes, self.bank.image_size)
        targets = []
        for index, (row_a, row_b) in enumerate(pairs):
            matches = correspondences_for_pair(self.config, self._key(row_a), self._key(row_b),
                                               MATCH_TOLERANCE)
            targets.append(cell_pairs(matches, squares[2 * index], squares[2 * index + 1],
                                      self.bank.image_size, grid))
        boxes_t = torch.from_numpy(boxes)
        return PairBatch(images[0::2], images[1::2], boxes_t[0::2], boxes_t[1::2], targets)

    def _key(self, row: int) -> ImageKey:
        category, local = split_instance_id(int(self.bank.instance[row]))
        return category, local, int(self.bank.trajectory[row]), int(self.bank.exposure[row])

    def _compose(self, rows: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        layers = torch.stack([self.bank.layer(int(row)) for row in rows])
        chosen = rng.choice(len(self.backgrounds), size=len(rows), replace=False)
        backgrounds = torch.from_numpy(self.backgrounds[chosen]).permute(0, 3, 1, 2).float() / 255
        noise = torch.from_numpy(rng.standard_normal(layers[:, :3].shape).astype(np.float32))
        per_image = [torch.from_numpy(rng.uniform(*limits, size=len(rows)).astype(np.float32))
                     .view(-1, 1, 1, 1) for limits in (READ_NOISE, SHOT_NOISE)]
        curves = torch.from_numpy(rng.integers(len(CAMERA_CURVES), size=len(rows)))
        pixels = compose_layers(layers, backgrounds * backgrounds, curves, noise, *per_image)
        return pixels.permute(0, 3, 1, 2).float() / 255.0


def _squares(boxes: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    return square_crop_boxes(torch.from_numpy(boxes), image_size).numpy()
