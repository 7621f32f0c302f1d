"""Distractors for validation: model selection in the regime the benchmark measures.

A model chosen by validation mAP@100 against 1,440 database images of 240 val instances is
chosen for telling 240 objects apart; among 100,000 look-alikes the ranking of checkpoints and
recipes can differ. These are virtual rows of other instances of the same categories, rendered
once at the model's input size and cached as one uint8 array in the data set folder.

Their local instance indices start at `VALIDATION_DISTRACTOR_BASE`, far above the ones
`bench map` draws its distractors from (`distractor_table`: 100,000 + at most a few thousand), so
choosing a checkpoint never looks at a test distractor.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from retrieval.embed import prepare_pixels
from retrieval.fileio import atomic_path
from retrieval.manifest import ManifestRow
from retrieval.sim.config import SimConfig
from retrieval.sim.layout import distractor_table
from retrieval.sim.objects import DISTRACTOR_BASE
from retrieval.train.errors import TrainDataError
from retrieval.train.stream import synth_settings
from retrieval.train.validation import ValidationSet

VALIDATION_DISTRACTOR_BASE = 6 * DISTRACTOR_BASE  # local index of the first val distractor
CACHE_FOLDER = "val_distractors"  # inside the data set folder
_RENDER_CHUNK = 256


def validation_distractor_rows(count: int, categories: int, sim: SimConfig) -> list[ManifestRow]:
    """`count` virtual rows spread over `categories` like the benchmark's distractors (10
    trajectories per instance, mixed exposures), of instances the benchmark never uses."""
    table = distractor_table(count, categories, sim.seed + 1, sim.exposures)
    offset = VALIDATION_DISTRACTOR_BASE - DISTRACTOR_BASE
    return [
        ManifestRow(image_id=-1 - k, path=None, category=int(table["category"][k]),
                    instance=int(table["instance"][k]) + offset,
                    trajectory=int(table["trajectory"][k]), exposure=int(table["exposure"][k]),
                    sim=sim)
        for k in range(count)
    ]


def with_validation_distractors(validation: ValidationSet | None, manifest: Path, count: int,
                                image_size: tuple[int, int], progress: bool = True
                                ) -> ValidationSet | None:
    """`validation` with `count` distractors of the data set written by `synth` that `manifest`
    belongs to (rendered or read from its cache); unchanged when there is none or `count` is 0."""
    if validation is None or not count:
        return validation
    preset, sim = synth_settings(manifest)
    pixels = validation_distractor_pixels(Path(manifest).parent, count, preset.categories, sim,
                                          image_size, progress)
    return replace(validation, distractors=pixels)


def validation_distractor_pixels(folder: Path, count: int, categories: int, sim: SimConfig,
                                 image_size: tuple[int, int], progress: bool = True) -> np.ndarray:
    """uint8 [count, H, W, 3]: the distractors at the model's input size, from the cache in
    `folder` when present (the file name carries what its pixels depend on), else rendered and
    stored there atomically."""
    described = json.dumps({"count": count, "categories": categories, "sim": sim.to_dict(),
                            "size": list(image_size),
                            "base": VALIDATION_DISTRACTOR_BASE}, sort_keys=True)
    key = hashlib.sha256(described.encode()).hexdigest()[:16]
    path = Path(folder) / CACHE_FOLDER / f"{count}-{image_size[0]}x{image_size[1]}-{key}.npy"
    if path.is_file():
        try:
            pixels = np.load(path, mmap_mode="r")
            if pixels.shape == (count, *image_size, 3) and pixels.dtype == np.uint8:
                return pixels
        except (OSError, ValueError):
            pass  # a damaged cache is rendered again
    rows = validation_distractor_rows(count, categories, sim)
    pixels = np.zeros((count, *image_size, 3), dtype=np.uint8)
    with tqdm(total=count, unit="img", desc="val distractors", disable=not progress) as bar:
        for start in range(0, count, _RENDER_CHUNK):
            chunk, errors = prepare_pixels(rows[start:start + _RENDER_CHUNK], image_size)
            if errors:
                raise TrainDataError(f"{path}: a validation distractor cannot be rendered: "
                                     f"{errors[0][1]}")
            pixels[start:start + len(chunk)] = np.stack(chunk)
            bar.update(len(chunk))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        np.save(handle, pixels)
    return pixels
