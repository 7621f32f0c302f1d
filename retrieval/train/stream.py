"""The composite training stream: object layers over backgrounds that say nothing of the instance.

Each training image is formed at the step it is used: a row's object layer from the layer bank
(`layers.py`), flipped at random, over a background drawn from a bank of backgrounds rendered
from seeds no trajectory uses, itself flipped at random, then a random camera curve and fresh
sensor noise (`retrieval.sim.render.compose_layers`, the same image model as the data sets).
The images of one batch never share a background, so the only thing two images of an instance
have in common is the object. Colour is never shifted: it is part of an instance's identity.

A batch is a pure function of (seed, epoch, position in the epoch), so an interrupted run
resumes on exactly the images it would have seen.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from retrieval.sim.camera import CAMERA_CURVES
from retrieval.sim.config import SimConfig
from retrieval.sim.layout import Preset
from retrieval.sim.objects import DISTRACTOR_BASE
from retrieval.sim.photos import PhotoError, load_photos, trajectory_background
from retrieval.sim.render import compose_layers
from retrieval.synth import SETTINGS_NAME as SYNTH_SETTINGS
from retrieval.train.data import TrainingSet, bank_training_set
from retrieval.train.errors import TrainDataError
from retrieval.train.layers import LayerBank, load_or_build_layer_bank

BANK_FOLDER = "train_layers"  # inside the data set folder

STREAM_VERSION = 1  # part of the data fingerprint: bump when the image model changes
BACKGROUND_BANK_SIZE = 1024
_BACKGROUND_NAMESPACE = 11  # background seeds are (11, i): never a trajectory's own seed
READ_NOISE = (0.002, 0.01)  # same ranges as the simulator's trajectories
SHOT_NOISE = (0.00005, 0.0008)
BOX_SCALE_JITTER = (0.85, 1.3)  # training crops: true box sides times a factor in this range
BOX_SHIFT_JITTER = 0.1  # ... and its centre moved by up to this fraction of its sides


def background_bank(config: SimConfig, count: int = BACKGROUND_BANK_SIZE) -> np.ndarray:
    """uint8 [count, H, W, 3] backgrounds from seeds reserved for training (a share of them
    photo crops when `config` uses photos)."""
    return np.stack([
        trajectory_background(config, _BACKGROUND_NAMESPACE * 2**40 + i, config.height, config.width)
        for i in range(count)])


def with_training_photos(config: SimConfig, photos: str, share: float) -> SimConfig:
    """`config` with a share of its objects and backgrounds from the train photos of `photos`."""
    if not photos:
        return config
    try:
        load_photos(photos, "train")
    except PhotoError as exc:
        raise TrainDataError(str(exc)) from exc
    return replace(config, photos=photos, photo_split="train", photo_share=share)


def open_composite_stream(manifest: Path, image_size: tuple[int, int], sharp_only: bool,
                          seed: int, progress: bool = True, instances: int | None = None,
                          trajectories: int | None = None, photos: str = "",
                          photo_share: float = 0.5
                          ) -> tuple[TrainingSet, CompositeStream, str]:
    """Training rows, their stream and a data fingerprint for a data set written by `synth`.

    The train split is described by the data set's settings file (its manifest need not hold
    train images); its layer bank is built in the data set folder on first use, on the CPU
    so that every machine trains on the same bits. `instances` and `trajectories` replace the
    preset's (see `training_preset`), so a model can train on many more instances than the
    data set's own; `photos` dresses a share `photo_share` of the objects and backgrounds in
    photographs (`retrieval.sim.photos`), whatever the data set's own appearance.
    """
    folder = manifest.parent
    settings_path = folder / SYNTH_SETTINGS
    own, own_config = synth_settings(manifest)
    preset = training_preset(own, instances, trajectories)
    config = with_training_photos(own_config, photos, photo_share)
    bank_name = (BANK_FOLDER if preset == own
                 else f"{BANK_FOLDER}-{preset.instances}i-{preset.trajectories}t")
    if config != own_config:
        appearance = json.dumps(config.to_dict(), sort_keys=True).encode()
        bank_name += f"-photos-{hashlib.sha256(appearance).hexdigest()[:10]}"
    bank = load_or_build_layer_bank(folder / bank_name, preset, config, "cpu", progress)
    if len(bank) == 0:
        raise TrainDataError(f"{settings_path}: the preset has no train instances")
    data = bank_training_set(bank.instance, bank.trajectory, bank.exposure, bank.blur_value,
                             bank.box, folder / BANK_FOLDER, sharp_only)
    stream = CompositeStream(bank, background_bank(config), image_size,
                             np.asarray(data.items, dtype=np.int64), seed)
    described = json.dumps({"bank": bank.settings, "stream": STREAM_VERSION},
                           sort_keys=True)
    return data, stream, hashlib.sha256(described.encode()).hexdigest()


def training_preset(preset: Preset, instances: int | None, trajectories: int | None) -> Preset:
    """The preset whose train split is trained on: the data set's, or one scanning the first
    `instances` local indices of each category with `trajectories` trajectories each.

    Only indices in train slots become training instances (the split is a function of the
    index, `instance_split`), so no val or test instance of any preset is ever trained on.
    """
    if instances is None and trajectories is None:
        return preset
    instances = preset.instances if instances is None else instances
    trajectories = preset.trajectories if trajectories is None else trajectories
    if not 1 <= instances < DISTRACTOR_BASE:
        raise TrainDataError(f"training instances per category must be in 1..{DISTRACTOR_BASE - 1} "
                             f"(indices from {DISTRACTOR_BASE} on are distractors), got {instances}")
    if trajectories < 2:
        raise TrainDataError(f"training instances need at least 2 trajectories (a positive is "
                             f"another trajectory), got {trajectories}")
    return replace(preset, instances=instances, trajectories=trajectories)


def synth_settings(manifest: Path) -> tuple[Preset, SimConfig]:
    """The preset and simulator settings `synth` wrote beside `manifest` (its settings file)."""
    settings_path = manifest.parent / SYNTH_SETTINGS
    try:
        settings = json.loads(settings_path.read_text(encoding="utf-8"))
        return Preset(**settings["preset"]), SimConfig.from_dict(settings["sim"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TrainDataError(f"{settings_path}: unusable simulator settings: {exc}") from exc


class CompositeStream:
    """Training batches: bank rows composed over independent backgrounds, resized for the model.

    `rows` maps the training set's positions (what the sampler draws) to bank rows.
    """

    def __init__(self, bank: LayerBank, backgrounds: np.ndarray, image_size: tuple[int, int],
                 rows: np.ndarray, seed: int = 0) -> None:
        if backgrounds.shape[1:3] != bank.image_size:
            raise ValueError(f"backgrounds of {backgrounds.shape[1:3]} for layers of "
                             f"{bank.image_size}")
        self.bank = bank
        self.rows = rows
        self.backgrounds = backgrounds
        self.image_size = tuple(image_size)
        self.seed = seed

    def batch(self, positions: np.ndarray, epoch: int, position: int) -> dict[str, Any]:
        """{"pixels": uint8 [B, H, W, 3], "ok": int64 positions, "errors": [], "box": float32
        [B, 4] streak boxes after the flips, "background": int64 [B] background bank indices}."""
        positions = np.asarray(positions, dtype=np.int64)
        rows = self.rows[positions]
        if len(rows) > len(self.backgrounds):
            raise ValueError(f"a batch of {len(rows)} images needs at least as many backgrounds "
                             f"(bank has {len(self.backgrounds)})")
        rng = np.random.default_rng((self.seed, 17, epoch, position))
        noise_rng = torch.Generator().manual_seed(int(rng.integers(2**62)))
        chosen = rng.choice(len(self.backgrounds), size=len(rows), replace=False)
        flips = rng.random((len(rows), 4)) < 0.5  # object h/v, background h/v
        curves = rng.integers(len(CAMERA_CURVES), size=len(rows))
        read = rng.uniform(*READ_NOISE, size=len(rows))
        shot = rng.uniform(*SHOT_NOISE, size=len(rows))
        boxes = self.bank.box[rows].copy()
        boxes[:, 0] = np.where(flips[:, 0], 1 - boxes[:, 0], boxes[:, 0])
        boxes[:, 1] = np.where(flips[:, 1], 1 - boxes[:, 1], boxes[:, 1])
        layers = torch.stack([_flipped(self.bank.layer(int(row)), flips[i, 0], flips[i, 1])
                              for i, row in enumerate(rows)])
        backgrounds = torch.stack([
            _flipped(torch.from_numpy(self.backgrounds[chosen[i]]).permute(2, 0, 1), flips[i, 2],
                     flips[i, 3]) for i in range(len(rows))]).float() / 255.0
        noise = torch.randn(layers[:, :3].shape, generator=noise_rng)

        def per_image(values: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(values.astype(np.float32)).view(-1, 1, 1, 1)

        images = compose_layers(layers, backgrounds * backgrounds, torch.from_numpy(curves), noise,
                                per_image(read), per_image(shot)).numpy()
        pixels = np.stack([self._resized(image) for image in images])
        return {"pixels": torch.from_numpy(pixels), "ok": torch.from_numpy(positions),
                "errors": [], "box": torch.from_numpy(boxes),
                "background": torch.from_numpy(chosen.astype(np.int64))}

    def _resized(self, image: np.ndarray) -> np.ndarray:
        # The embedder resizes files with the same call, so training and inference agree.
        height, width = self.image_size
        if image.shape[:2] == (height, width):
            return image
        resized = Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR)
        return np.asarray(resized, dtype=np.uint8)


class StreamBatches(Dataset):
    """Batch `i` of one epoch's plan, for a DataLoader whose workers compose batches ahead."""

    def __init__(self, stream: CompositeStream, plan: list[np.ndarray], epoch: int) -> None:
        self.stream = stream
        self.plan = plan
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, position: int) -> dict[str, Any]:
        return self.stream.batch(self.plan[position], self.epoch, position)


def _flipped(image: torch.Tensor, horizontal: bool, vertical: bool) -> torch.Tensor:
    dims = [d for d, flip in ((-1, horizontal), (-2, vertical)) if flip]
    return image.flip(dims) if dims else image


def training_crop_boxes(true_boxes: torch.Tensor, predicted_fraction: float,
                        generator: torch.Generator) -> torch.Tensor:
    """Windows the crop head describes during training: jittered true boxes, and NaN rows
    (about `predicted_fraction` of them) where the network must use its own predicted box.

    Jitter makes the descriptor robust to the localiser's errors; predicted boxes teach it the
    windows it will get at inference.
    """
    count = true_boxes.shape[0]
    device = true_boxes.device

    def uniform(low: float, high: float, shape: tuple[int, ...]) -> torch.Tensor:
        return low + (high - low) * torch.rand(shape, generator=generator).to(device)

    sides = true_boxes[:, 2:] * uniform(*BOX_SCALE_JITTER, (count, 2))
    centres = true_boxes[:, :2] + true_boxes[:, 2:] * uniform(-BOX_SHIFT_JITTER, BOX_SHIFT_JITTER,
                                                             (count, 2))
    windows = torch.cat([centres, sides], dim=1)
    use_predicted = uniform(0.0, 1.0, (count,)) < predicted_fraction
    return torch.where(use_predicted[:, None], torch.full_like(windows, float("nan")), windows)
