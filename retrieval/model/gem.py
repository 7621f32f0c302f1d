"""Generalised-mean (GeM) pooling with a learnable exponent.

GeM interpolates between average pooling (p = 1) and max pooling (p -> inf); learning p lets
each branch decide how much to focus on the strongest activations, which is what the published
method does with one GeM per branch.
"""

from __future__ import annotations

import torch
from torch import nn


class GeM(nn.Module):
    """Pool a feature map [B, C, H, W] to [B, C] as (mean(clamp(x, eps) ** p)) ** (1 / p).

    Features are clamped at `eps` because the power of a negative number is undefined and a zero
    would give an infinite gradient. The effective p is clamped at 1 so the pooling never turns
    into something below the average; below 1 the clamp has no gradient, so a p pushed there
    stays at plain average pooling. The pooling runs in float32 so that x ** p cannot overflow
    under float16 autocast.
    """

    def __init__(self, p: float = 3.0, eps: float = 1e-6, learnable: bool = True) -> None:
        super().__init__()
        if p < 1.0:
            raise ValueError(f"GeM exponent p must be >= 1, got {p}")
        if eps <= 0.0:
            raise ValueError(f"GeM eps must be > 0, got {eps}")
        self.eps = eps
        self.p = nn.Parameter(torch.tensor([float(p)]), requires_grad=learnable)

    def effective_p(self) -> torch.Tensor:
        return self.p.clamp(min=1.0)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.ndim != 4:
            raise ValueError(f"GeM expects a [B, C, H, W] feature map, got {tuple(features.shape)}")
        p = self.effective_p().float()
        powered = features.float().clamp(min=self.eps).pow(p)
        return powered.mean(dim=(-2, -1)).pow(1.0 / p)

    def extra_repr(self) -> str:
        return f"p={self.p.item():.4f}, eps={self.eps}"
