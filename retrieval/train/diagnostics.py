"""What the analysis scripts share: the training-time validation set with its distractors, and a
one-line summary of its metrics, so that a diagnosis scores exactly what model selection scores."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from retrieval.manifest import manifest_items
from retrieval.train.stream import synth_settings
from retrieval.train.val_distractors import validation_distractor_pixels
from retrieval.train.validation import ValidationSet, build_validation_set


def validation_among_distractors(data_dir: Path, queries: int, distractors: int,
                                 image_size: tuple[int, int]) -> ValidationSet:
    """The val set of the data set written by `synth` in `data_dir` (at most `queries` queries),
    with `distractors` cached validation distractors at `image_size` (none when 0)."""
    manifest = Path(data_dir) / "manifest.parquet"
    items, table = manifest_items(manifest)
    validation = build_validation_set(items, table, manifest, queries)
    if distractors:
        preset, sim = synth_settings(manifest)
        pixels = validation_distractor_pixels(Path(data_dir), distractors, preset.categories, sim,
                                              image_size)
        validation = dataclasses.replace(validation, distractors=pixels)
    return validation


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
