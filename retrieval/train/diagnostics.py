"""What the analysis scripts share: the training-time validation set with its distractors, and a
one-line summary of its metrics, so that a diagnosis scores exactly what model selection scores."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from retrieval.manifest import manifest_items
from retrieval.train.val_distractors import with_validation_distractors
from retrieval.train.validation import ValidationSet, build_validation_set


def validation_among_distractors(data_dir: Path, queries: int, distractors: int,
                                 image_size: tuple[int, int]) -> ValidationSet | None:
    """The val set of the data set written by `synth` in `data_dir` (at most `queries` queries),
    with `distractors` cached validation distractors at `image_size` (none when 0); None when the
    manifest has no val rows."""
    manifest = Path(data_dir) / "manifest.parquet"
    items, table = manifest_items(manifest)
    return with_validation_distractors(build_validation_set(items, table, manifest, queries),
                                       manifest, distractors, image_size)


def summary_line(name: str, metrics: dict[str, Any]) -> str:
    """'NAME: mAP@100 X (BL6 Y)[; among N distractors X (BL6 Y)]' in percent, from `evaluate`."""
    clean = metrics.get("without_distractors", metrics)
    line = f"{name}: mAP@100 {100 * clean['map@100']:.2f} (BL6 {_percent(clean['per_level']['6'])})"
    if "distractors" in metrics:
        line += (f"; among {metrics['distractors']:,} distractors {100 * metrics['map@100']:.2f}"
                 f" (BL6 {_percent(metrics['per_level']['6'])})")
    return line


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}"
