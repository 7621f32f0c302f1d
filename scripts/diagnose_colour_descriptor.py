"""How far colour alone tells look-alikes apart: validation mAP@100 among the training-time
validation distractors of (a) a trained model's embedding, (b) a hand-made colour histogram of
the crop around the model's predicted streak box, (c) both concatenated.

    python scripts/diagnose_colour_descriptor.py CHECKPOINT [--data data/small] [--bins 6]
        [--distractors 10000] [--weight 1.0]

If (b) or (c) beats (a) among distractors, the network leaves colour on the table: instances of
one category differ by their three paint colours and print, and a descriptor should use them.
The histogram is a 3-D RGB histogram of the crop (bins per channel), each pixel weighted by a
Gaussian centred on the crop, square-rooted (Hellinger) and L2-normalised.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmark.commands.options import validation_set_options
from retrieval.embed import Embedder, EmbedResult
from retrieval.model import NetOutput, load_checkpoint
from retrieval.model.crop import crop_squares, square_crop_boxes
from retrieval.train.diagnostics import summary_line, validation_among_distractors
from retrieval.train.validation import evaluate

CROP_PIXELS = 48


class ColourAndEmbedding(nn.Module):
    """Returns [model embedding | weight * colour histogram] so one pass yields both."""

    def __init__(self, model: nn.Module, bins: int, weight: float) -> None:
        super().__init__()
        self.model = model
        self.bins = bins
        self.weight = weight
        self.embedding_dim = model.embedding_dim + bins**3
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, CROP_PIXELS),
                                torch.linspace(-1, 1, CROP_PIXELS), indexing="ij")
        self.register_buffer("centre", torch.exp(-(xs**2 + ys**2) / (2 * 0.5**2)).flatten())

    def forward(self, images: torch.Tensor) -> NetOutput:
        out = self.model(images)
        squares = square_crop_boxes(out.box.float(), tuple(images.shape[-2:]))
        crops = crop_squares(images.float(), squares, CROP_PIXELS).clamp(0, 1)
        index = (crops * self.bins).long().clamp(max=self.bins - 1)
        flat = (index[:, 0] * self.bins + index[:, 1]) * self.bins + index[:, 2]
        hist = torch.zeros(len(images), self.bins**3)
        hist.scatter_add_(1, flat.flatten(1), self.centre.expand(len(images), -1).contiguous())
        hist = F.normalize(hist.sqrt(), dim=1) * self.weight
        return NetOutput(torch.cat([out.embedding.float(), hist], dim=1), None, None)


class Columns:
    """Stands in for an Embedder in `evaluate`: the columns [start, stop) of the whole vectors,
    re-normalised. The whole vectors of each list of items are embedded once and shared by every
    view (`evaluate` embeds two lists, queries + database and distractors, told apart here by
    length and item type), so the three descriptors cost one pass over the images."""

    def __init__(self, embedder: Embedder, cache: dict, start: int, stop: int | None) -> None:
        self.embedder, self.cache = embedder, cache
        self.start, self.stop = start, stop

    def embed(self, items: list, progress: bool = False) -> EmbedResult:
        key = (len(items), type(items[0]).__name__ if items else None)
        if key not in self.cache:
            self.cache[key] = self.embedder.embed(items, progress=progress)
        whole = self.cache[key]
        vectors = whole.vectors[:, self.start:self.stop]
        norms = np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return dataclasses.replace(whole, vectors=(vectors / norms).astype(np.float32))


@click.command()
@validation_set_options
@click.option("--bins", default=6, show_default=True, type=click.IntRange(2, 16))
@click.option("--weight", default=1.0, show_default=True, type=click.FloatRange(min=0),
              help="Weight of the histogram against the unit embedding in (c).")
def main(checkpoint: str, data_dir: Path, queries: int, distractors: int, bins: int,
         weight: float) -> None:
    model, config = load_checkpoint(checkpoint)
    if model.loc_branch is None:
        raise click.UsageError(f"{checkpoint}: the model has no localisation head to crop by")
    validation = validation_among_distractors(data_dir, queries, distractors,
                                              tuple(config["image_size"]))
    embedder, cache = Embedder(ColourAndEmbedding(model, bins, weight), config), {}
    dim = model.embedding_dim
    variants = {"(a) model embedding": Columns(embedder, cache, 0, dim),
                "(b) colour histogram": Columns(embedder, cache, dim, None),
                f"(c) both (histogram weight {weight})": Columns(embedder, cache, 0, None)}
    for name, view in variants.items():
        click.echo(summary_line(name, evaluate(view, validation)))


if __name__ == "__main__":
    main()
