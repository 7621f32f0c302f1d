"""A fixed validation set for the dense network: pairs of stored val images and their truth.

Val images are the data set's own files (each trajectory over its own background, as users'
images would be), of instances never trained on; crops use the true streak boxes, so the score
measures the descriptors, not the localiser.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from retrieval.embed import prepare_pixels
from retrieval.manifest import manifest_items
from retrieval.model.crop import square_crop_boxes
from retrieval.rerank.dense_data import MATCH_TOLERANCE, cell_pairs
from retrieval.rerank.dense_net import DenseFeatureNet, object_crops
from retrieval.sim.config import SimConfig
from retrieval.sim.correspondence import correspondences_for_pair
from retrieval.sim.objects import INSTANCE_STRIDE

BOX_COLUMNS = ("bbox_cx", "bbox_cy", "bbox_w", "bbox_h")


@dataclass(frozen=True)
class ValPairs:
    images_a: torch.Tensor  # float [P, 3, H, W] in [0, 1]
    images_b: torch.Tensor
    boxes_a: torch.Tensor  # float [P, 4] true streak boxes
    boxes_b: torch.Tensor
    targets: list[np.ndarray]  # per pair int64 [N, 2] (cell A, cell B)


def build_val_pairs(manifest: Path, config: SimConfig, count: int, grid: int, seed: int = 0
                    ) -> ValPairs:
    """`count` pairs of val rows (one instance, two trajectories), drawn with `seed`."""
    items, table = manifest_items(manifest)
    role = table.column("role").to_numpy(zero_copy_only=False)
    rows = np.flatnonzero(role == "val")
    if len(rows) == 0:
        raise ValueError(f"{manifest}: no val rows to validate the dense network on")
    category = table.column("category").to_numpy()[rows].astype(np.int64)
    instance = category * INSTANCE_STRIDE + table.column("instance").to_numpy()[rows]
    trajectory = table.column("trajectory").to_numpy()[rows]
    boxes = np.stack([table.column(name).to_numpy() for name in BOX_COLUMNS], axis=1)
    rng = np.random.default_rng((seed, 31))
    pairs = []
    for first in rng.choice(len(rows), size=min(count, len(rows)), replace=False):
        others = np.flatnonzero((instance == instance[first]) & (trajectory != trajectory[first]))
        if len(others):
            pairs.append((rows[first], rows[int(rng.choice(others))]))
    chosen = [row for pair in pairs for row in pair]
    pixels, errors = prepare_pixels([items[row] for row in chosen], (config.height, config.width))
    if errors:
        raise ValueError(f"{manifest}: val image unreadable: {errors[0][1]}")
    images = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).float() / 255.0
    box_tensor = torch.from_numpy(boxes[chosen].astype(np.float32))
    squares = square_crop_boxes(box_tensor, (config.height, config.width)).numpy()
    targets = []
    for index, (row_a, row_b) in enumerate(pairs):
        keys = [(items[row].category, items[row].instance, items[row].trajectory, items[row].exposure)
                for row in (row_a, row_b)]
        matches = correspondences_for_pair(config, keys[0], keys[1], MATCH_TOLERANCE)
        targets.append(cell_pairs(matches, squares[2 * index], squares[2 * index + 1],
                                  (config.height, config.width), grid))
    return ValPairs(images[0::2], images[1::2], box_tensor[0::2], box_tensor[1::2], targets)


@torch.inference_mode()
def match_accuracy(net: DenseFeatureNet, val: ValPairs, device: torch.device, batch: int = 64
                   ) -> float:
    """Share of true cell pairs whose A cell's best match in B is within one cell of the truth."""
    was_training = net.training
    net.eval()
    correct = total = 0
    grid = net.grid
    for start in range(0, len(val.targets), batch):
        stop = start + batch
        desc = [net(object_crops(images[start:stop].to(device), boxes[start:stop].to(device),
                                 net.crop)[0]).flatten(2)
                for images, boxes in ((val.images_a, val.boxes_a), (val.images_b, val.boxes_b))]
        for offset, target in enumerate(val.targets[start:stop]):
            if not len(target):
                continue
            similarity = desc[0][offset].T[torch.from_numpy(target[:, 0])] @ desc[1][offset]
            best = similarity.argmax(dim=1).cpu().numpy()
            truth = target[:, 1]
            near = (np.abs(best // grid - truth // grid) <= 1) & (np.abs(best % grid - truth % grid) <= 1)
            correct += int(near.sum())
            total += len(target)
    net.train(was_training)
    return correct / total if total else float("nan")
