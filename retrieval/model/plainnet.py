"""Plain conv-BN-ReLU backbones, registered in timm so `--backbone plainnet_s` works like any
other timm name.

Why they exist: with no ImageNet weights (no model hub), every backbone here trains from
scratch on a 2-core CPU. Measured on the same crops and budget, a plain stack of 3x3
conv-BN-ReLU pairs learned instance identity several times faster than mobilenetv3_small_100,
whose depthwise blocks and squeeze-excitation train slowly from scratch at small batch sizes.
Four stages of two convolutions each, 2x2 max-pooling between stages (output stride 8).
"""

from __future__ import annotations

import torch
from timm.models import register_model
from torch import nn


def _conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]


class PlainNet(nn.Module):
    """Stages of two 3x3 conv-BN-ReLU, max-pooled between stages; timm's backbone interface."""

    def __init__(self, widths: tuple[int, ...], num_classes: int = 0, global_pool: str = "avg",
                 in_chans: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        previous = in_chans
        for stage, width in enumerate(widths):
            if stage:
                layers.append(nn.MaxPool2d(2))
            layers += _conv_bn_relu(previous, width) + _conv_bn_relu(width, width)
            previous = width
        self.features = nn.Sequential(*layers)
        self.num_features = previous
        self.global_pool = global_pool
        self.head = nn.Linear(previous, num_classes) if num_classes else nn.Identity()

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        if self.global_pool:
            features = features.mean(dim=(2, 3))
        return self.head(features)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(images))


def _create(widths: tuple[int, ...], pretrained: bool, kwargs: dict) -> PlainNet:
    if pretrained:
        raise ValueError("plain backbones have no pretrained weights; train them from scratch")
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir", "features_only"):
        kwargs.pop(key, None)
    return PlainNet(widths, **kwargs)


@register_model
def plainnet_s(pretrained: bool = False, **kwargs) -> PlainNet:
    """24-48-96-192 channels, 0.66 M parameters."""
    return _create((24, 48, 96, 192), pretrained, kwargs)


@register_model
def plainnet_m(pretrained: bool = False, **kwargs) -> PlainNet:
    """32-64-128-256 channels, 1.17 M parameters."""
    return _create((32, 64, 128, 256), pretrained, kwargs)
