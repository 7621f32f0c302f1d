"""Where a training step's time goes: runs STEPS steps of the shipped blur-aware recipe under
cProfile and prints each stage's share of the wall time (data composition, the locator's pass,
the crop and the descriptor backbone's pass, the losses, the backward pass, the optimiser).

    python scripts/profile_train_step.py [--data data/small] [--steps 40] [--backbone plainnet_m]

Why: a model trained from scratch on 2 cores is limited by steps per hour (validation among
distractors rose at every epoch of the shipped 4,500-step run), so the cheapest gain is a
cheaper step; this says which part to make cheaper.
"""

from __future__ import annotations

import cProfile
import inspect
import pstats
import tempfile
import time
from pathlib import Path

import click
import torch

from retrieval.model import BlurAwareNet
from retrieval.model.crop import crop_squares
from retrieval.model.losses import total_loss
from retrieval.model.network import DEFAULT_BACKBONE
from retrieval.train import TrainSettings, train
from retrieval.train.stream import CompositeStream
from retrieval.train.trainer import Trainer

# (label, function): cumulative times of these calls, matched by their code objects so that
# another function of the same name (a branch's forward inside the network's) is not counted.
STAGES = (
    ("compose the batch (CompositeStream.batch)", CompositeStream.batch),
    ("forward pass, whole network (BlurAwareNet.forward)", BlurAwareNet.forward),
    ("  locator backbone at half resolution (_aux_features)", BlurAwareNet._aux_features),
    ("  crop the object (crop_squares)", crop_squares),
    ("losses (total_loss)", total_loss),
    ("backward pass", torch.Tensor.backward),
    ("optimiser step (Adam)", torch.optim.Adam.step),
)


@click.command()
@click.option("--data", "data_dir", default="data/small", show_default=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--steps", default=40, show_default=True, type=click.IntRange(min=5))
@click.option("--backbone", default=DEFAULT_BACKBONE, show_default=True,
              help="What a step of another backbone costs (counted operations overstate it).")
def main(data_dir: Path, steps: int, backbone: str) -> None:
    with tempfile.TemporaryDirectory(prefix="profile-train-step-") as out_dir:
        _profile(data_dir, steps, Path(out_dir), backbone)


def _profile(data_dir: Path, steps: int, out_dir: Path, backbone: str) -> None:
    settings = TrainSettings(
        data_dir=data_dir, out_dir=out_dir, method="blur-aware", backbone=backbone,
        instances_per_batch=32, images_per_instance=4, lr=2e-3, schedule="cosine",
        cls_weight=1.0, cls_margin=0.0, cls_scale=16.0, hard_negatives=True, precision="bf16",
        workers=0, epochs=1, steps_per_epoch=10 * steps, stop_at_step=steps,
        checkpoint_every=10 * steps, max_val_queries=10, progress=False)
    profile = cProfile.Profile()
    started = time.perf_counter()
    profile.runcall(train, settings)
    wall = time.perf_counter() - started
    stats = pstats.Stats(profile)
    # Batches are composed by the loader, outside _train_step: a step is both together.
    step_total = _cumulative(stats, Trainer._train_step) + _cumulative(stats, CompositeStream.batch)
    click.echo(f"{backbone}: {steps} steps took {step_total:.1f} s "
               f"({step_total / steps:.3f} s/step, "
               f"under cProfile) of {wall:.1f} s wall (start-up included)")
    click.echo(f"{'stage':58} {'s/step':>7} {'share':>6}")
    for label, function in STAGES:
        seconds = _cumulative(stats, function)
        click.echo(f"{label:58} {seconds / steps:7.3f} {100 * seconds / step_total:5.1f}%")


def _cumulative(stats: pstats.Stats, function) -> float:
    """Cumulative seconds spent in `function` (its decorators unwrapped; 0 if never called)."""
    code = inspect.unwrap(function).__code__
    entry = stats.stats.get((code.co_filename, code.co_firstlineno, code.co_name))
    return entry[3] if entry else 0.0


if __name__ == "__main__":
    main()
