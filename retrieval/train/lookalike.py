"""Look-alike batches: P instances as P/Q categories x Q instances of each, K images apiece.

With P instances drawn at random from 40 categories, an anchor rarely meets another instance of
its own category in the batch, so the contrastive loss (hard negatives included) mostly learns to
tell categories apart, which test queries among distractors of their own category never need.
Grouping Q instances per category makes every anchor's closest negatives its look-alikes.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from retrieval.train.data import PKSampler, distinct_from_queue


class LookalikeSampler(PKSampler):
    """P x K batches in which the P instances come Q at a time from P/Q distinct categories.

    Categories are visited in a fresh random order each epoch (each about equally often); within
    a category, instances are taken from a queue refilled with a fresh permutation, so every
    instance of a category is seen before any is seen again. Images per instance are drawn as in
    `PKSampler` (two trajectories first). A pure function of (seed, epoch), like `PKSampler`.
    """

    def __init__(
        self,
        classes: np.ndarray,
        trajectories: np.ndarray,
        class_categories: np.ndarray,
        instances_per_batch: int,
        images_per_instance: int,
        instances_per_category: int,
        seed: int = 0,
    ) -> None:
        super().__init__(classes, trajectories, instances_per_batch, images_per_instance, seed)
        q = instances_per_category
        if q < 2:
            raise ValueError(f"look-alike batches need Q >= 2 instances per category, got {q}")
        if instances_per_batch % q:
            raise ValueError(f"P={instances_per_batch} is not a multiple of Q={q} instances "
                             "per category")
        class_categories = np.asarray(class_categories, dtype=np.int64)
        if len(class_categories) != len(self._pools):
            raise ValueError(f"{len(class_categories)} categories given for "
                             f"{len(self._pools)} classes")
        members = {int(c): np.flatnonzero(class_categories == c) for c in np.unique(class_categories)}
        self._members = [pool for _, pool in sorted(members.items()) if len(pool) >= q]
        if len(self._members) < instances_per_batch // q:
            raise ValueError(
                f"P={instances_per_batch} with Q={q} needs {instances_per_batch // q} categories "
                f"of at least {q} training instances; {len(self._members)} have that many")
        self.instances_per_category = q

    def _instance_batches(self, rng: np.random.Generator, steps: int) -> list[list[int]]:
        categories_per_batch = self.instances_per_batch // self.instances_per_category
        category_queue: deque[int] = deque()
        member_queues: list[deque[int]] = [deque() for _ in self._members]
        batches = []
        for _ in range(steps):
            chosen = distinct_from_queue(
                category_queue, categories_per_batch,
                lambda: [int(c) for c in rng.permutation(len(self._members))])
            batch: list[int] = []
            for category in chosen:
                members = self._members[category]
                batch.extend(distinct_from_queue(
                    member_queues[category], self.instances_per_category,
                    lambda members=members: [int(i) for i in rng.permutation(members)]))
            batches.append(batch)
        return batches

