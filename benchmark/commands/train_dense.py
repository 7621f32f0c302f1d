"""`blur-retrieval train-dense`: train the dense network the re-ranker verifies with."""

from __future__ import annotations

from pathlib import Path

import click

from benchmark.commands.options import writable_folder
from retrieval.rerank.names import DEFAULT_DIM, DEFAULT_STRIDE, DENSE_CROP, STRIDES


@click.command("train-dense")
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              callback=writable_folder,
              help="Run folder: checkpoint (dense.safetensors, dense.json), log, state.")
@click.option("--steps", type=click.IntRange(min=1), default=1200, show_default=True)
@click.option("--pairs", type=click.IntRange(min=2), default=24, show_default=True,
              help="Image pairs per step.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=2e-3, show_default=True)
@click.option("--dim", type=click.IntRange(min=2), default=DEFAULT_DIM, show_default=True,
              help="Descriptor size per cell.")
@click.option("--stride", type=click.Choice([str(s) for s in STRIDES]), default=str(DEFAULT_STRIDE),
              show_default=True, help="Image pixels of the crop per descriptor cell.")
@click.option("--crop", type=click.IntRange(min=16), default=DENSE_CROP, show_default=True,
              help="Side in pixels of the object crop described (a multiple of 8).")
@click.option("--per-category", type=click.IntRange(min=1), default=4, show_default=True,
              help="Instances drawn together from one category, as look-alike negatives.")
@click.option("--val-every", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True)
@click.option("--resume", is_flag=True, help="Continue the run saved in --out.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def train_dense_command(data_dir: Path, out_dir: Path, steps: int, pairs: int, lr: float, dim: int,
                        stride: str, crop: int, per_category: int, val_every: int, seed: int, device: str,
                        resume: bool, quiet: bool) -> None:
    """Train blur-invariant dense descriptors on DATA_DIR's training instances (a `synth` data
    set: its train layer bank and simulator settings; val rows for validation)."""
    from retrieval.rerank.dense_train import DenseTrainSettings, train_dense
    from retrieval.train.errors import TrainDataError

    settings = DenseTrainSettings(str(data_dir), str(out_dir), steps=steps, pairs=pairs, lr=lr,
                                  dim=dim, stride=int(stride), crop=crop, per_category=per_category,
                                  val_every=val_every, seed=seed, device=device, resume=resume)
    try:
        summary = train_dense(settings, progress=not quiet)
    except (ValueError, TrainDataError) as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"trained {summary['steps']} steps; best validation match accuracy "
               f"{summary['best_match_accuracy']:.3f}; checkpoint: {summary['out']}")
