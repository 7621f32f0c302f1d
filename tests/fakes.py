"""Helpers shared by several test files (no test imports another test).

`FakeEmbedder` (from `fake_embedder`) follows the `retrieval.embed` contract without a network.
`tiny_reranker` is a real re-ranker with tiny
untrained networks; `MODELS` and `OTHER_DENSE` name the checkpoints of two dense caches.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from fake_embedder import PNG_MAGIC as PNG_MAGIC  # re-exported: the tests import them from here
from fake_embedder import FakeEmbedder as FakeEmbedder
from fake_embedder import FakeEmbedResult as FakeEmbedResult
from fake_embedder import SimulatedCrash as SimulatedCrash
from PIL import Image

from indexer.rerank.cache import ViewModels
from indexer.sources import Source
from retrieval.sim.config import SimConfig
from retrieval.sim.layout import Preset
from retrieval.synth import synthesize
from retrieval.train import TrainSettings


def synthesized(root: Path, preset: Preset) -> Path:
    """A data set written by `synth` in `root` with `preset`, at the preset's image size."""
    synthesize(root, preset, SimConfig(height=preset.height, width=preset.width), progress=False)
    return root


def tiny_train_settings(data_dir: Path, out_dir: Path, **overrides) -> TrainSettings:
    """A run of a few steps of timm's tiny test network on small images: seconds on a CPU."""
    tiny = dict(
        data_dir=data_dir, out_dir=out_dir, backbone="test_byobnet", image_size=(32, 48),
        embedding_dim=16, epochs=2, instances_per_batch=4, images_per_instance=2,
        steps_per_epoch=3, lr=1e-3, workers=0, log_every=1, checkpoint_every=100,
        progress=False,
    )
    return TrainSettings(**{**tiny, **overrides})


def write_pngs(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """`count` distinct 8x8 noise PNGs, split between two sub-folders to exercise recursion."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        path = folder / ("a" if i % 2 else "b") / f"img-{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def virtual_source(count: int, start: int = 0) -> Source:
    """Rows without files (like simulator distractors), with a label column."""
    numbers = list(range(start, start + count))
    return Source(
        items=[{"row": n} for n in numbers],
        metadata=pa.table({"path": [f"virtual/{n}" for n in numbers],
                           "label": [n % 7 for n in numbers]}),
        origin="<virtual rows>",
    )


def random_unit_vectors(count: int, dim: int, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((count, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def refuse_listing(monkeypatch: pytest.MonkeyPatch, locked: Path) -> None:
    """Make `os.scandir` of `locked` fail as a folder without read permission does (even as root)."""
    real_scandir = os.scandir

    def refusing_scandir(path: Any) -> Any:
        if not isinstance(path, int) and Path(path) == locked:  # shutil.rmtree lists by descriptor
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", refusing_scandir)


MODELS = ViewModels("dense", "blur-aware", "a" * 64, "locator-a")
OTHER_DENSE = ViewModels("dense", "blur-aware", "b" * 64, "locator-a")


def tiny_reranker(params: Any) -> Any:
    """A real `Reranker` of tiny untrained networks (a dense net, a `test_byobnet` locator) on
    32x48 inputs, the same for every call: two decodings of the same pixels give the same view."""
    import torch

    from retrieval.model import BlurAwareNet
    from retrieval.rerank.dense_net import DenseFeatureNet
    from retrieval.rerank.reranker import Reranker

    torch.manual_seed(0)
    locator = BlurAwareNet("test_byobnet", embedding_dim=16).eval()
    return Reranker(DenseFeatureNet(dim=8).eval(), locator, (32, 48), params)
