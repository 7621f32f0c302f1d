"""Helpers shared by several test files (no test imports another test)."""

from __future__ import annotations

from pathlib import Path

from retrieval.train import TrainSettings


def tiny_train_settings(data_dir: Path, out_dir: Path, **overrides) -> TrainSettings:
    """A run of a few steps of timm's tiny test network on small images: seconds on a CPU."""
    tiny = dict(
        data_dir=data_dir, out_dir=out_dir, backbone="test_byobnet", image_size=(32, 48),
        embedding_dim=16, epochs=2, instances_per_batch=4, images_per_instance=2,
        steps_per_epoch=3, lr=1e-3, workers=0, log_every=1, checkpoint_every=100,
        progress=False,
    )
    return TrainSettings(**{**tiny, **overrides})
