"""Start a fine-tune's classification head where its network already puts each instance.

`--init-from` copies a trained network but never its classification head (inference checkpoints
do not carry one row per training instance), so a fine-tune's head starts at random directions:
its loss is at chance (ln C) and, for its first hundreds of steps, its gradient pulls every
embedding toward a random class direction. Imprinting sets each class row to the mean of the
initial network's unit embeddings of that instance's training images instead, so the head starts
where the network already is.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F

from retrieval.model import BlurAwareNet
from retrieval.model.network import MarginSoftmaxHead

# Passes over the instances: each pass shows every instance K images (one batch plan's worth)
IMPRINT_PASSES = 2


def imprint_steps(num_classes: int, instances_per_batch: int, passes: int = IMPRINT_PASSES) -> int:
    """Batches that show every instance at least `passes` times when batches visit instances
    without replacement (PKSampler's queue): ceil(passes * C / P)."""
    return math.ceil(passes * num_classes / instances_per_batch)


@torch.no_grad()
def class_mean_directions(
    model: BlurAwareNet,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    num_classes: int,
    embedding_dim: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of unit embeddings per class over `batches` of (model input, class index) and the
    count of images behind each; the model runs in eval mode, as it embeds at inference."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(num_classes, embedding_dim)
    counts = torch.zeros(num_classes)
    try:
        for images, classes in batches:
            embedding = F.normalize(model(images).embedding.float(), dim=1).cpu()
            classes = classes.cpu()
            sums.index_add_(0, classes, embedding)
            counts.index_add_(0, classes, torch.ones(len(classes)))
    finally:
        model.train(was_training)
    return sums, counts


def imprint_head(
    head: MarginSoftmaxHead,
    model: BlurAwareNet,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    log: Callable[[str], None] | None = None,
) -> int:
    """Set each row of `head` to the unit mean embedding of its class; rows of classes the
    batches never showed keep their random start. Returns how many rows were set."""
    sums, counts = class_mean_directions(model, batches, head.num_classes, head.weight.shape[1])
    seen = counts > 0
    with torch.no_grad():
        rows = F.normalize(sums[seen], dim=1).to(head.weight.device, head.weight.dtype)
        head.weight[seen.to(head.weight.device)] = rows
    set_rows = int(seen.sum())
    if log is not None and set_rows < head.num_classes:
        log(f"imprinting: {head.num_classes - set_rows} of {head.num_classes} classes had no "
            "image; their rows stay random")
    return set_rows
