"""How much of a crop-head model's error is localisation: validation mAP@100 with the model's
own predicted boxes against the true streak boxes, and the mean IoU of its boxes. A data set
without val rows (a `video-set` benchmark, say) gets the IoU by blur level of its query and
database images only.

    python scripts/diagnose_crops.py CHECKPOINT [--data data/small] [--queries 1000]
"""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np
import torch

from retrieval.images import load_rgb_array
from retrieval.manifest import manifest_items
from retrieval.metrics import ap_at_k_standard, rank_by_scores, relevance_matrix
from retrieval.model import load_checkpoint
from retrieval.train.data import BOX_COLUMNS
from retrieval.train.validation import TOP_K, build_validation_set


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of matching rows of two [N, 4] (cx, cy, w, h) box sets."""
    a_low, a_high = a[:, :2] - a[:, 2:] / 2, a[:, :2] + a[:, 2:] / 2
    b_low, b_high = b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2
    overlap = (torch.minimum(a_high, b_high) - torch.maximum(a_low, b_low)).clamp(min=0).prod(1)
    return overlap / (a[:, 2:].prod(1) + b[:, 2:].prod(1) - overlap)


@click.command()
@click.argument("checkpoint")
@click.option("--data", "data_dir", default="data/small", show_default=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--queries", default=1000, show_default=True, type=click.IntRange(min=1))
def main(checkpoint: str, data_dir: Path, queries: int) -> None:
    model, config = load_checkpoint(checkpoint)
    if model.head != "crop":
        raise click.UsageError(f"{checkpoint}: a {model.head!r} head model has no crops")
    items, table = manifest_items(data_dir)
    validation = build_validation_set(items, table, data_dir / "manifest.parquet", queries)
    if validation is None:
        _iou_by_level(checkpoint, model, tuple(config["image_size"]), items, table)
        return
    rows = validation.queries + validation.database
    position = {row.image_id: i for i, row in enumerate(items)}
    columns = [table.column(name).to_numpy() for name in BOX_COLUMNS]
    true_boxes = torch.tensor(np.array([[c[position[r.image_id]] for c in columns] for r in rows]),
                              dtype=torch.float32)
    size = tuple(config["image_size"])
    pixels = np.stack([load_rgb_array(row.path, size) for row in rows])
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0
    predicted, own, given = [], [], []
    with torch.no_grad():
        for start in range(0, len(rows), 256):
            batch = images[start:start + 256]
            output = model(batch)
            predicted.append(output.box)
            own.append(output.embedding)
            given.append(model(batch, crop_boxes=true_boxes[start:start + 256]).embedding)
    count = len(validation.queries)
    positives = (validation.query_instances[:, None] == validation.database_instances[None]).sum(1)

    def score(vectors: torch.Tensor) -> float:
        vectors = vectors.numpy()
        ranked = rank_by_scores(vectors[:count] @ vectors[count:].T, TOP_K)
        relevant = relevance_matrix(ranked, validation.query_instances,
                                    validation.database_instances)
        return float(np.nanmean(ap_at_k_standard(relevant, positives, TOP_K)))

    iou = box_iou(torch.cat(predicted), true_boxes).mean().item()
    click.echo(f"{checkpoint}: val mAP@{TOP_K} {100 * score(torch.cat(own)):.2f} % with predicted "
               f"boxes, {100 * score(torch.cat(given)):.2f} % with true boxes; "
               f"mean box IoU {iou:.3f} ({len(rows)} images)")


def _iou_by_level(checkpoint: str, model, size: tuple[int, int], items, table) -> None:
    levels, roles = table.column("blur_level").to_pylist(), table.column("role").to_pylist()
    columns = [table.column(name).to_pylist() for name in BOX_COLUMNS]
    rows = [i for i, item in enumerate(items)
            if roles[i] in ("query", "database") and item.path and columns[2][i] is not None]
    true_boxes = torch.tensor([[c[i] for c in columns] for i in rows], dtype=torch.float32)
    predicted = []
    with torch.no_grad():
        for start in range(0, len(rows), 256):
            pixels = np.stack([load_rgb_array(items[i].path, size) for i in rows[start:start + 256]])
            batch = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0
            predicted.append(model(batch).box)
    iou = box_iou(torch.cat(predicted), true_boxes).numpy()
    level = np.array([levels[i] for i in rows])
    by_level = " ".join(f"BL{value}: {iou[level == value].mean():.3f}"
                        for value in sorted(set(level.tolist())))
    click.echo(f"{checkpoint}: mean box IoU {iou.mean():.3f} ({len(rows)} images; {by_level})")


if __name__ == "__main__":
    main()
