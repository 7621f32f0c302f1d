"""What a training run depends on (`TrainSettings`), its learning-rate schedule, and how it ended
(`TrainOutcome`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from retrieval.model import DEFAULT_BACKBONE, DEFAULT_CROP_SIZE
from retrieval.model.losses import LossConfig, LossWeights
from retrieval.train.errors import TrainError

SCHEDULES = ("constant", "cosine")
# Settings that may change between a run and its resumption: they do not change what is trained
# (device and precision change only the rounding, so a run can move to another machine).
# init_from's path may move; the weights it named are checked by their fingerprint instead.
FREE_ON_RESUME = {"data_dir", "out_dir", "workers", "device", "precision", "resume", "init_from",
                  "stop_at_step", "progress", "checkpoint_every", "log_every", "val_batch_size"}


@dataclass(frozen=True)
class TrainSettings:
    """Everything a run depends on; see `blur-retrieval train --help` for each option."""

    data_dir: Path
    out_dir: Path
    method: str = "blur-aware"
    losses: frozenset[str] | None = None  # None: the method's own losses
    backbone: str = DEFAULT_BACKBONE
    head: str | None = None  # None: "crop" when the method has a localisation head, else "global"
    crop_size: int = DEFAULT_CROP_SIZE
    predicted_crop_fraction: float = 0.5  # share of crops from predicted boxes by the last step
    pretrained: bool = False
    backbone_weights: Path | None = None
    init_from: str | None = None  # checkpoint folder or shipped name whose weights start the run
    imprint_head: bool = False  # with init_from: class rows start at the class mean embeddings
    image_size: tuple[int, int] = (96, 128)
    embedding_dim: int = 128
    epochs: int = 30
    instances_per_batch: int = 16  # P
    images_per_instance: int = 4  # K
    lr: float = 1e-4
    schedule: str = "constant"
    steps_per_epoch: int | None = None  # None: one pass over the training images
    checkpoint_every: int = 500
    log_every: int = 10
    seed: int = 0
    workers: int | None = None  # None: default_workers()
    hard_negatives: bool = False
    # P instances come as P/Q categories x Q instances each (look-alike batches); 1: at random
    instances_per_category: int = 1
    memory_size: int = 0  # cross-batch memory of this many embeddings as extra negatives; 0: none
    memory_start: float = 0.1  # share of the run after which the memory is read
    train_instances: int | None = None  # local indices scanned per category (train slots only)
    train_trajectories: int | None = None  # trajectories per training instance
    photos: str = ""  # photo source textures/backgrounds come from (sim.photos); "": the data set's
    photo_share: float = 0.5  # share of instances and backgrounds that wear photos
    val_distractors: int = 0  # virtual distractors in the validation database
    detach_blur: bool = False  # the blur branch learns from L_be only (BlurAwareNet.forward)
    isolate_blur: bool = False  # no gradient from the blur branch into the backbone it reads
    be_weight: float = 1.0  # weight of the blur-estimation loss in the total (published)
    blur_input: str = "image"  # what the blur branch pools (BlurAwareNet's BLUR_INPUTS)
    cls_margin: float = 0.15  # additive cosine margin of the classification head (published)
    cls_weight: float = 0.1  # weight of the classification loss in the total (published)
    cls_scale: float = 30.0  # logit scale of the classification head (published)
    con_margin: float = 0.7  # distance beyond which negatives stop costing (published)
    con_negatives: int = 5  # negatives mined per anchor, pairs and balanced kinds (published: 5)
    con_loss: str = "pairs"  # L_con's kind (losses.CONTRASTIVE_KINDS): pairs, balanced or softmax
    con_temperature: float = 0.1  # of the softmax kind
    spread_weight: float = 0.0  # weight of the spread-out regulariser (model.spread); 0: off
    max_val_queries: int | None = 2000
    val_batch_size: int = 64
    device: str = "cpu"
    precision: str = "auto"  # of the training forward pass: auto | fp32 | bf16 (training_precision)
    resume: bool = False
    stop_at_step: int | None = None  # pause after this global step (state saved)
    progress: bool = True


@dataclass(frozen=True)
class TrainOutcome:
    status: str  # "finished", "paused" (stop_at_step reached) or "interrupted" (signal)
    step: int
    epochs_done: int
    best_metric: float | None  # best validation mAP@100 so far
    checkpoint: Path | None  # the inference checkpoint folder, once one was written
    skipped_images: int
    signal: str | None = None


class LearningRateFactor:
    """Multiplier of the base learning rate at a step (a class, so the schedule is stateless)."""

    def __init__(self, schedule: str, total_steps: int) -> None:
        self.schedule = schedule
        self.total_steps = max(1, total_steps)

    def __call__(self, step: int) -> float:
        if self.schedule == "constant":
            return 1.0
        return 0.5 * (1.0 + math.cos(math.pi * min(step, self.total_steps) / self.total_steps))


def loss_config(settings: TrainSettings, losses: frozenset[str]) -> LossConfig:
    """The losses a run trains, weighed and shaped as its settings say (TrainError if invalid)."""
    try:
        return LossConfig(enabled=losses,
                          weights=LossWeights(cls=settings.cls_weight, be=settings.be_weight,
                                              spread=settings.spread_weight),
                          margin=settings.con_margin, num_negatives=settings.con_negatives,
                          hard_negatives=settings.hard_negatives,
                          con_kind=settings.con_loss, temperature=settings.con_temperature)
    except ValueError as exc:
        raise TrainError(str(exc)) from exc
