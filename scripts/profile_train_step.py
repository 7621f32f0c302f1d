"""Where a training step's time goes: runs STEPS steps of the shipped blur-aware recipe under
cProfile and prints each stage's share of the wall time (data composition, the locator's pass,
the crop and the descriptor backbone's pass, the losses, the backward pass, the optimiser).

    python scripts/profile_train_step.py [--data data/small] [--steps 40]

Why: a model trained from scratch on 2 cores is limited by steps per hour (validation among
distractors rose at every epoch of the shipped 4,500-step run), so the cheapest gain is a
cheaper step; this says which part to make cheaper.
"""

from __future__ import annotations

import cProfile
import pstats
import tempfile
import time
from pathlib import Path

import click

from retrieval.train import TrainSettings, train

# (label, file suffix, function name): cumulative times of these calls.
STAGES = (
    ("compose the batch (CompositeStream.batch)", "train/stream.py", "batch"),
    ("forward pass, whole network", "model/network.py", "forward"),
    ("  locator backbone + blur/loc branches (_aux_features)", "model/network.py",
     "_aux_features"),
    ("  crop the object (crop_squares)", "model/crop.py", "crop_squares"),
    ("losses (total_loss)", "model/losses.py", "total_loss"),
    ("backward pass", "torch/_tensor.py", "backward"),
    ("optimiser step (Adam)", "torch/optim/adam.py", "step"),
)


@click.command()
@click.option("--data", "data_dir", default="data/small", show_default=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--steps", default=40, show_default=True, type=click.IntRange(min=5))
def main(data_dir: Path, steps: int) -> None:
    with tempfile.TemporaryDirectory(prefix="profile-train-step-") as out_dir:
        _profile(data_dir, steps, Path(out_dir))


def _profile(data_dir: Path, steps: int, out_dir: Path) -> None:
    settings = TrainSettings(
        data_dir=data_dir, out_dir=out_dir, method="blur-aware", instances_per_batch=32,
        images_per_instance=4, lr=2e-3, schedule="cosine", cls_weight=1.0, cls_margin=0.0,
        cls_scale=16.0, hard_negatives=True, precision="bf16", workers=0, epochs=1,
        steps_per_epoch=10 * steps, stop_at_step=steps, checkpoint_every=10 * steps,
        max_val_queries=10, progress=False)
    profile = cProfile.Profile()
    started = time.perf_counter()
    profile.runcall(train, settings)
    wall = time.perf_counter() - started
    stats = pstats.Stats(profile)
    # Batches are composed by the loader, outside _train_step: a step is both together.
    step_total = (_cumulative(stats, "train/trainer.py", "_train_step")
                  + _cumulative(stats, "train/stream.py", "batch"))
    click.echo(f"{steps} steps took {step_total:.1f} s ({step_total / steps:.3f} s/step, "
               f"under cProfile) of {wall:.1f} s wall (start-up included)")
    click.echo(f"{'stage':58} {'s/step':>7} {'share':>6}")
    for label, suffix, name in STAGES:
        seconds = _cumulative(stats, suffix, name)
        click.echo(f"{label:58} {seconds / steps:7.3f} {100 * seconds / step_total:5.1f}%")


def _cumulative(stats: pstats.Stats, suffix: str, name: str) -> float:
    """Cumulative seconds of the function `name` in a file ending in `suffix` (0 if not called)."""
    total = 0.0
    for (filename, _, function), (_, _, _, cumulative, _callers) in stats.stats.items():
        if function == name and filename.endswith(suffix):
            # Recursive entries would double count; these functions do not recurse.
            total += cumulative
    return total


if __name__ == "__main__":
    main()
