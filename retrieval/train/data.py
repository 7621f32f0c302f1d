"""Training rows with their targets, and the P x K batch sampler.

A batch holds P instances with K images each. Each instance's K images come from at least two
trajectories, because a positive must show the object in another motion (same instance, other
trajectory), not the same motion under another exposure. Batches are a pure function of
(seed, epoch, position in the epoch), so an interrupted run resumes on exactly the batch it
would have drawn next.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from retrieval.manifest import ManifestRow
from retrieval.train.errors import TrainDataError

BOX_COLUMNS = ("bbox_cx", "bbox_cy", "bbox_w", "bbox_h")


@dataclass(frozen=True)
class TrainingSet:
    """Rows the trainer draws from, with one target per row (arrays aligned with `items`)."""

    manifest: Path
    items: list[ManifestRow] | list[int]  # manifest rows (files), or layer-bank row numbers
    classes: np.ndarray  # int64: class index 0..C-1 of the row's instance
    trajectories: np.ndarray  # int64: trajectory number within the instance
    blur_values: np.ndarray  # float32: v = 1 - blur severity (NaN where unknown)
    boxes: np.ndarray  # float32 [n, 4]: normalised (cx, cy, w, h) of the streak (NaN if unknown)
    instance_ids: np.ndarray  # int64 [C]: the manifest's instance id of each class
    dropped_instances: int  # training instances left out for having a single trajectory

    @property
    def num_classes(self) -> int:
        return len(self.instance_ids)

    def targets(self, rows: np.ndarray, device: torch.device) -> dict[str, torch.Tensor]:
        """The batch targets `total_loss` reads, for the given row indices."""
        rows = np.asarray(rows, dtype=np.int64)
        arrays = {
            "instance": self.classes[rows],
            "trajectory": self.trajectories[rows],
            "blur_value": self.blur_values[rows],
            "box": self.boxes[rows],
        }
        return {key: torch.from_numpy(value).to(device) for key, value in arrays.items()}


def _float_column(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).cast(pa.float32()).fill_null(float("nan")).to_numpy()


def select_training_rows(
    items: list[ManifestRow],
    table: pa.Table,
    manifest: Path,
    sharp_only: bool = False,
    needs_blur: bool = True,
    needs_box: bool = True,
) -> TrainingSet:
    """Rows with role 'train' (only exposure 0 with `sharp_only`) of instances seen in at least
    two trajectories; the labels the enabled losses need must be present on every such row."""
    role = table.column("role").to_numpy(zero_copy_only=False)
    exposure = table.column("exposure").to_numpy()
    instance = table.column("instance").to_numpy().astype(np.int64)
    trajectory = table.column("trajectory").to_numpy().astype(np.int64)
    keep = role == "train"
    if sharp_only:
        keep &= exposure == 0
    if not keep.any():
        which = "role 'train' and exposure 0 (sharp-only)" if sharp_only else "role 'train'"
        raise TrainDataError(f"{manifest}: no rows with {which}")

    candidates, eligible, rows = _rows_with_positives(instance, trajectory, keep, manifest)

    severity = _float_column(table, "blur_severity")[rows]
    boxes = np.stack([_float_column(table, name)[rows] for name in BOX_COLUMNS], axis=1)
    _require_labels(manifest, "blur_severity", "be", needs_blur, np.isnan(severity))
    _require_labels(manifest, "bbox_*", "loc", needs_box, np.isnan(boxes).any(axis=1))
    return TrainingSet(
        manifest=manifest,
        items=[items[i] for i in rows],
        classes=np.searchsorted(eligible, instance[rows]).astype(np.int64),
        trajectories=trajectory[rows],
        blur_values=(1.0 - severity).astype(np.float32),
        boxes=boxes.astype(np.float32),
        instance_ids=eligible,
        dropped_instances=len(candidates) - len(eligible),
    )


def _rows_with_positives(instance: np.ndarray, trajectory: np.ndarray, keep: np.ndarray,
                         source: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(candidate instances, those seen in two trajectories, kept rows of the latter)."""
    candidates = np.unique(instance[keep])
    trajectory_counts = np.array(
        [len(np.unique(trajectory[keep & (instance == i)])) for i in candidates]
    )
    eligible = candidates[trajectory_counts >= 2]
    if len(eligible) == 0:
        raise TrainDataError(
            f"{source}: no training instance has images from two trajectories, so no positive "
            "pair can be formed"
        )
    return candidates, eligible, np.flatnonzero(keep & np.isin(instance, eligible))


def bank_training_set(instance: np.ndarray, trajectory: np.ndarray, exposure: np.ndarray,
                      blur_values: np.ndarray, boxes: np.ndarray, source: Path,
                      sharp_only: bool = False) -> TrainingSet:
    """Training rows of a layer bank (items are bank row numbers; only exposure 0 with
    `sharp_only`), of instances seen in at least two trajectories."""
    keep = exposure == 0 if sharp_only else np.ones(len(instance), dtype=bool)
    if not keep.any():
        raise TrainDataError(f"{source}: no training rows")
    candidates, eligible, rows = _rows_with_positives(instance, trajectory, keep, source)
    return TrainingSet(
        manifest=source,
        items=rows.tolist(),
        classes=np.searchsorted(eligible, instance[rows]).astype(np.int64),
        trajectories=trajectory[rows],
        blur_values=blur_values[rows].astype(np.float32),
        boxes=boxes[rows].astype(np.float32),
        instance_ids=eligible,
        dropped_instances=len(candidates) - len(eligible),
    )


def _require_labels(manifest: Path, column: str, loss: str, needed: bool, missing: np.ndarray):
    if needed and missing.any():
        raise TrainDataError(
            f"{manifest}: {int(missing.sum())} training rows have no {column} label, which "
            f"loss '{loss}' needs (virtual rows that were never rendered carry no labels)"
        )


def default_steps_per_epoch(num_rows: int, batch_images: int) -> int:
    """One pass over the training images, in batches of P x K (at least one step)."""
    return max(1, num_rows // batch_images)


class PKSampler:
    """P x K batches of row indices, a pure function of (seed, epoch).

    Instances are visited in a fresh random order each epoch (without replacement across
    batches, so each instance appears about equally often), never twice in one batch. For an
    instance, two different trajectories are drawn first with one image each; its other K-2
    images come from its remaining images (with replacement only when it has too few).
    """

    def __init__(
        self,
        classes: np.ndarray,
        trajectories: np.ndarray,
        instances_per_batch: int,
        images_per_instance: int,
        seed: int = 0,
    ) -> None:
        if instances_per_batch < 2:
            raise ValueError(f"P must be >= 2 (negatives come from other instances), got "
                             f"{instances_per_batch}")
        if images_per_instance < 2:
            raise ValueError(f"K must be >= 2 (a positive needs a second image), got "
                             f"{images_per_instance}")
        classes = np.asarray(classes, dtype=np.int64)
        trajectories = np.asarray(trajectories, dtype=np.int64)
        num_classes = int(classes.max()) + 1 if len(classes) else 0
        if instances_per_batch > num_classes:
            raise ValueError(
                f"P={instances_per_batch} exceeds the {num_classes} training instances"
            )
        self.instances_per_batch = instances_per_batch
        self.images_per_instance = images_per_instance
        self.seed = seed
        self._pools = [
            [np.flatnonzero((classes == c) & (trajectories == t))
             for t in np.unique(trajectories[classes == c])]
            for c in range(num_classes)
        ]
        for c, pool in enumerate(self._pools):
            if len(pool) < 2:
                raise ValueError(f"class {c} has images from {len(pool)} trajectory; 2 needed")

    @property
    def batch_images(self) -> int:
        return self.instances_per_batch * self.images_per_instance

    def epoch_batches(self, epoch: int, steps: int) -> list[np.ndarray]:
        """The `steps` batches of `epoch`, each int64 [P * K] grouped by instance."""
        rng = np.random.default_rng((self.seed, epoch))
        order = self._instance_batches(rng, steps)
        return [
            np.concatenate([self._draw_images(rng, instance) for instance in batch])
            for batch in order
        ]

    def _instance_batches(self, rng: np.random.Generator, steps: int) -> list[list[int]]:
        queue: deque[int] = deque()
        return [distinct_from_queue(queue, self.instances_per_batch,
                                    lambda: [int(i) for i in rng.permutation(len(self._pools))])
                for _ in range(steps)]

    def _draw_images(self, rng: np.random.Generator, instance: int) -> np.ndarray:
        pool = self._pools[instance]
        first, second = rng.choice(len(pool), size=2, replace=False)
        picked = np.array([rng.choice(pool[first]), rng.choice(pool[second])], dtype=np.int64)
        extra = self.images_per_instance - 2
        if extra == 0:
            return picked
        everything = np.concatenate(pool)
        rest = np.setdiff1d(everything, picked)
        source = rest if len(rest) else everything
        more = rng.choice(source, size=extra, replace=len(source) < extra)
        return np.concatenate([picked, more.astype(np.int64)])


def distinct_from_queue(queue: deque[int], count: int, refill: Callable[[], list[int]]) -> list[int]:
    """`count` distinct values from the front of `queue`, refilled by `refill()` when empty.

    A value met twice (at a refill's seam) is kept for the front of the queue, so it opens the
    next draw instead of being skipped: every value is drawn equally often in the long run.
    """
    taken: list[int] = []
    repeated: list[int] = []
    while len(taken) < count:
        if not queue:
            queue.extend(refill())
        value = queue.popleft()
        (repeated if value in taken else taken).append(value)
    queue.extendleft(reversed(repeated))
    return taken
