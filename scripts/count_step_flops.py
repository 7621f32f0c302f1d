"""Floating-point operations of one training step (forward and backward) of the crop-head
network and its classification head, for each embedding width, crop size and backbone asked for.

    python scripts/count_step_flops.py --embedding-dim 128 --embedding-dim 256 --embedding-dim 512
    python scripts/count_step_flops.py --embedding-dim 256 --crop-size 48 --crop-size 64

Why: wall-clock rates of runs made one after the other on a shared 2-core machine move by
10-35 % with the machine alone, which is more than most recipe changes cost; counted operations
say what a change costs per step, independent of the machine.
"""

from __future__ import annotations

import itertools

import click
import timm
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from retrieval.model import BlurAwareNet
from retrieval.model.network import DEFAULT_BACKBONE, DEFAULT_CROP_SIZE, MarginSoftmaxHead


def step_flops(embedding_dim: int, batch: int, classes: int, size: tuple[int, int],
               crop_size: int = DEFAULT_CROP_SIZE, backbone: str = DEFAULT_BACKBONE) -> int:
    """Operations of one forward and backward pass of a batch (the crop head on its own boxes)."""
    torch.manual_seed(0)
    model = BlurAwareNet(backbone=backbone, embedding_dim=embedding_dim, head="crop",
                         crop_size=crop_size).train()
    head = MarginSoftmaxHead(embedding_dim, classes)
    images = torch.rand(batch, 3, *size)
    labels = torch.randint(0, classes, (batch,))
    with FlopCounterMode(display=False) as counter:
        output = model(images)
        loss = F.cross_entropy(head(output.embedding, labels), labels)
        loss = loss + (output.embedding @ output.embedding.T).mean()  # the batch's similarities
        loss.backward()
    return counter.get_total_flops()


def _known_backbones(_ctx: click.Context, _param: click.Parameter,
                     names: tuple[str, ...]) -> tuple[str, ...]:
    """Refuse an unknown name before any counting starts, rather than in timm's traceback."""
    unknown = [name for name in names if not timm.is_model(name)]
    if unknown:
        raise click.BadParameter(f"{', '.join(unknown)}: not a timm or plainnet backbone name")
    return names


@click.command()
@click.option("--embedding-dim", "dims", type=click.IntRange(min=1), multiple=True,
              default=(128,), show_default=True)
@click.option("--batch", default=128, show_default=True, type=click.IntRange(min=2))
@click.option("--classes", default=1120, show_default=True, type=click.IntRange(min=1),
              help="training instances (the small preset has 1,120)")
@click.option("--crop-size", "crop_sizes", type=click.IntRange(16, 512), multiple=True,
              default=(DEFAULT_CROP_SIZE,), show_default=True,
              help="side the crop head resamples crops to")
@click.option("--backbone", "backbones", multiple=True, default=(DEFAULT_BACKBONE,),
              show_default=True, callback=_known_backbones)
def main(dims: tuple[int, ...], batch: int, classes: int, crop_sizes: tuple[int, ...],
         backbones: tuple[str, ...]) -> None:
    reference = None
    for backbone, crop_size, dim in itertools.product(backbones, crop_sizes, dims):
        flops = step_flops(dim, batch, classes, (96, 128), crop_size, backbone)
        reference = reference or flops
        click.echo(f"{backbone} crop {crop_size:3d} embedding {dim:4d}: {flops / 1e9:10.4f} "
                   f"GFLOP per step ({flops / reference:.4f} x the first)")


if __name__ == "__main__":
    main()
