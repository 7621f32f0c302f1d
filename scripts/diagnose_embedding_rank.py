"""How many of its dimensions a model's vectors use, whom its queries rank above the right
answer, and whether re-weighting the vectors' directions (learned whitening) would help.

    python scripts/diagnose_embedding_rank.py CHECKPOINT [--data data/small] [--queries 1000]
        [--distractors 10000] [--whiten-batches 100] [--power 0.25 --power 0.5]

On the val set of DATA (with its cached validation distractors, as training validates):
- the spread of the val database's vectors over directions: the participation ratio (the number
  of directions the variance effectively spans) and how many directions hold 50/90/99 % of it;
- for each query, the val database images scored above its best positive: of its own category
  (look-alikes) or of another;
- with --whiten-batches N: validation mAP@100 after a learned whitening, fitted on N training
  batches of 32 instances x 4 images from the composite stream (never on val images), that
  scales the directions along which one instance's images differ by their spread to -POWER.
If whitening gains little, the weak directions carry little the network learned: the vectors
are narrow because of what training asks of them, not because of how they are weighted.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click
import numpy as np
from tqdm import tqdm

from benchmark.commands.options import validation_set_options
from retrieval.embed import Embedder
from retrieval.model import load_checkpoint
from retrieval.sim.objects import INSTANCE_STRIDE
from retrieval.train import embedding_stats as stats
from retrieval.train.data import PKSampler
from retrieval.train.diagnostics import summary_line, validation_among_distractors
from retrieval.train.stream import open_composite_stream
from retrieval.train.validation import ValidationVectors, embed_validation, score_vectors

WHITENING_SEED = 12345  # the training batches the whitening is fitted on (not a run's seed)


@click.command()
@validation_set_options
@click.option("--whiten-batches", default=0, show_default=True, type=click.IntRange(min=0),
              help="Training batches to fit a learned whitening on (0: no whitening).")
@click.option("--power", "powers", multiple=True, default=(0.25, 0.5), show_default=True,
              type=click.FloatRange(min=0, max=1), help="Whitening strength (0.5: full).")
def main(checkpoint: str, data_dir: Path, queries: int, distractors: int, whiten_batches: int,
         powers: tuple[float, ...]) -> None:
    model, config = load_checkpoint(checkpoint)
    size = tuple(config["image_size"])
    validation = validation_among_distractors(data_dir, queries, distractors, size)
    if validation is None:
        raise click.UsageError(f"{data_dir}: the data set has no val rows")
    embedder = Embedder.from_model(model, {"image_size": list(size)})
    vectors = embed_validation(embedder, validation)
    _print_spread(vectors.database)
    _print_confusions(vectors)
    click.echo(summary_line("as trained", score_vectors(vectors)))
    if whiten_batches:
        fit_vectors, fit_labels = _training_vectors(embedder, data_dir, size, whiten_batches)
        for power in powers:
            mean, matrix = stats.intra_class_whitening(fit_vectors, fit_labels, power)
            whitened = replace(
                vectors, queries=stats.whiten(vectors.queries, mean, matrix),
                database=stats.whiten(vectors.database, mean, matrix),
                distractors=(None if vectors.distractors is None
                             else stats.whiten(vectors.distractors, mean, matrix)))
            click.echo(summary_line(f"whitened, power {power:g}", score_vectors(whitened)))


def _print_spread(database: np.ndarray) -> None:
    shares = stats.variance_shares(database)
    held = ", ".join(f"{int(100 * f)} % in {stats.components_for(shares, f)}"
                     for f in (0.5, 0.9, 0.99))
    click.echo(f"val database vectors: {database.shape[1]} dimensions, participation ratio "
               f"{stats.participation_ratio(shares):.1f}; variance {held} directions")
    click.echo("largest shares (%): " + " ".join(f"{100 * s:.1f}" for s in shares[:16]))


def _print_confusions(vectors: ValidationVectors) -> None:
    groups = vectors.database_labels // INSTANCE_STRIDE
    counts = stats.rank_confusions(
        vectors.queries @ vectors.database.T, vectors.query_labels,
        vectors.query_labels // INSTANCE_STRIDE, vectors.database_labels, groups)
    click.echo(f"val database images scored above a query's best positive ({counts['queries']} "
               f"queries): {counts['same_group_above']} of its category, "
               f"{counts['other_group_above']} of others ({len(np.unique(groups))} categories); "
               f"best-scored wrong image of its category for "
               f"{100 * counts['nearest_wrong_same_group']:.1f} % of queries")


def _training_vectors(embedder: Embedder, data_dir: Path, size: tuple[int, int],
                      batches: int) -> tuple[np.ndarray, np.ndarray]:
    """Vectors and instance classes of `batches` batches of the training stream, 32 instances
    (or all, if fewer) x 4 images each."""
    data, stream, _ = open_composite_stream(data_dir / "manifest.parquet", size, False,
                                            WHITENING_SEED, progress=False)
    sampler = PKSampler(data.classes, data.trajectories, min(32, data.num_classes), 4,
                        WHITENING_SEED)
    vectors, labels = [], []
    plan = sampler.epoch_batches(0, batches)
    for position, rows in enumerate(tqdm(plan, desc="whitening batches", unit="batch")):
        pixels = stream.batch(rows, 0, position)["pixels"].numpy()
        vectors.append(embedder.embed(list(pixels)).vectors)
        labels.append(data.classes[rows])
    return np.concatenate(vectors), np.concatenate(labels)


if __name__ == "__main__":
    main()
