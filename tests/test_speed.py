"""The bare-network throughput measure of `bench speed` (the figures themselves are not tested)."""

from __future__ import annotations

import math

import torch

from benchmark.speed import forward_throughput
from retrieval.model import BlurAwareNet


def test_forward_throughput_measures_and_restores_the_model_mode() -> None:
    torch.manual_seed(0)
    model = BlurAwareNet("test_byobnet", embedding_dim=16).train()
    rate = forward_throughput(model, (32, 48), batch_size=2, seconds=0.05)
    assert math.isfinite(rate) and rate > 0
    assert model.training
