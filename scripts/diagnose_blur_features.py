"""What the blur branch's features do to retrieval: validation mAP@100 of a blur-aware model as
it is, and with the blur branch's hidden layer (what it feeds the embedding) replaced by its mean
over the validation images, so the embedding gets no per-image blur information.

    python scripts/diagnose_blur_features.py CHECKPOINT [--data data/small] [--queries 1000]
        [--distractors 10000]

If the embedding is better without that information, the blur features hurt the descriptor
directly; if it is worse, the model relies on them. Distractors are the training-time validation
distractors (`train --val-distractors`, cached in DATA/val_distractors; rendered if missing).
"""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np
import torch

from benchmark.commands.options import validation_set_options
from retrieval.embed import Embedder
from retrieval.model import load_checkpoint
from retrieval.train.diagnostics import summary_line, validation_among_distractors
from retrieval.train.validation import evaluate


class _MeanHidden:
    """Forward hook on the blur branch: records its hidden layer, or replaces it by a constant."""

    def __init__(self) -> None:
        self.total: torch.Tensor | None = None
        self.count = 0
        self.constant: torch.Tensor | None = None

    def __call__(self, module, inputs, output):
        hidden, prediction = output
        if self.constant is not None:
            return self.constant.to(hidden.dtype).expand_as(hidden), prediction
        summed = hidden.detach().float().sum(dim=0)
        self.total = summed if self.total is None else self.total + summed
        self.count += hidden.shape[0]
        return output

    def freeze(self) -> None:
        self.constant = (self.total / self.count)[None]


@click.command()
@validation_set_options
def main(checkpoint: str, data_dir: Path, queries: int, distractors: int) -> None:
    model, config = load_checkpoint(checkpoint)
    if model.blur_branch is None:
        raise click.UsageError(f"{checkpoint}: the model has no blur branch")
    size = tuple(config["image_size"])
    validation = validation_among_distractors(data_dir, queries, distractors, size)
    embedder = Embedder.from_model(model, {"image_size": list(size)})
    hook = _MeanHidden()
    handle = model.blur_branch.register_forward_hook(hook)
    try:
        as_is = evaluate(embedder, validation)
        hook.freeze()
        constant = evaluate(embedder, validation)
    finally:
        handle.remove()
    for name, metrics in (("as trained", as_is), ("blur features held at their mean", constant)):
        click.echo(summary_line(name, metrics))
    spread = np.linalg.norm(model.project.weight.detach().float().numpy(), axis=0)
    descriptor = model.descriptor[1].out_features
    half = model.blur_branch.hidden[0].out_features
    click.echo(f"projection weight norm per input: descriptor {spread[:descriptor].mean():.4f}, "
               f"blur hidden {spread[descriptor:descriptor + half].mean():.4f}, location hidden "
               f"{spread[descriptor + half:].mean():.4f}")


if __name__ == "__main__":
    main()
