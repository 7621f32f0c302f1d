"""Blur-invariant dense descriptors: a small U-Net over the object crop, one unit vector per cell.

The global embedding says "probably the same object"; checking it needs local evidence that
survives motion blur. This network maps a square crop around the object's streak box to a grid
of L2-normalised descriptors (one per `stride` x `stride` cell), trained so that cells showing
the same surface point of an object match whether either image is sharp or blurred
(`retrieval.rerank.dense_train`). An encoder sees context at strides 1-8; the decoder brings
the coarse, blur-robust features back to the output stride and joins them with the finer skip
features there, so a cell's descriptor is both local and informed by its surroundings.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from retrieval.model.crop import crop_squares, square_crop_boxes
from retrieval.model.network import IMAGENET_MEAN, IMAGENET_STD
from retrieval.rerank.names import DEFAULT_DIM, DEFAULT_STRIDE, DENSE_CROP, STRIDES

WIDTHS = (24, 48, 96, 128)  # channels at strides 1, 2, 4, 8


def _block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
    )


class DenseFeatureNet(nn.Module):
    """[B, 3, S, S] crops in [0, 1] -> [B, dim, S/stride, S/stride] unit descriptors."""

    def __init__(self, dim: int = DEFAULT_DIM, stride: int = DEFAULT_STRIDE,
                 crop: int = DENSE_CROP) -> None:
        super().__init__()
        if stride not in STRIDES:
            raise ValueError(f"stride must be one of {STRIDES}, got {stride}")
        if crop % 8:
            raise ValueError(f"crop must be a multiple of 8, got {crop}")
        if dim < 2:
            raise ValueError(f"dim must be at least 2, got {dim}")
        self.dim, self.stride, self.crop = dim, stride, crop
        self.encoder = nn.ModuleList(
            [_block(3 if i == 0 else WIDTHS[i - 1], width) for i, width in enumerate(WIDTHS)])
        skip = WIDTHS[2] if stride == 4 else 0
        self.decoder = _block(WIDTHS[3] + skip, WIDTHS[2])
        self.head = nn.Conv2d(WIDTHS[2], dim, 1)
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1),
                             persistent=False)

    @property
    def grid(self) -> int:
        """Cells per side of the descriptor grid."""
        return self.crop // self.stride

    def architecture(self) -> dict:
        return {"dim": self.dim, "stride": self.stride, "crop": self.crop}

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        if crops.ndim != 4 or crops.shape[1] != 3 or crops.shape[-2:] != (self.crop, self.crop):
            raise ValueError(f"expected crops [B, 3, {self.crop}, {self.crop}], "
                             f"got {tuple(crops.shape)}")
        x = (crops - self.pixel_mean) / self.pixel_std
        skips = []
        for level, block in enumerate(self.encoder):
            if level:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        if self.stride == 4:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            x = torch.cat([x, skips[2]], dim=1)
        return F.normalize(self.head(self.decoder(x)).float(), dim=1)


def object_crops(images: torch.Tensor, boxes: torch.Tensor, crop: int = DENSE_CROP
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """The square crops the dense network describes, and their squares (cx, cy, side px).

    Same square rule as the crop head of the global model (`square_crop_boxes`), so the crop
    keeps the object's proportions whatever the motion direction.
    """
    squares = square_crop_boxes(boxes.float(), tuple(images.shape[-2:]))
    return crop_squares(images, squares, crop), squares


def cell_centres(squares: torch.Tensor, image_size: tuple[int, int], grid: int) -> torch.Tensor:
    """Image-pixel coordinates [B, grid*grid, 2] (x, y) of each descriptor cell's centre.

    Verification fits its transform in image pixels, so a match's geometry does not depend on
    how large either crop was.
    """
    height, width = image_size
    steps = (torch.arange(grid, dtype=torch.float32) + 0.5) / grid - 0.5  # [-0.5, 0.5) of a side
    side = squares[:, 2, None]
    xs = squares[:, 0, None] * width + steps[None, :] * side  # [B, grid]
    ys = squares[:, 1, None] * height + steps[None, :] * side
    grid_x = xs[:, None, :].expand(-1, grid, -1)
    grid_y = ys[:, :, None].expand(-1, -1, grid)
    return torch.stack([grid_x, grid_y], dim=-1).reshape(squares.shape[0], grid * grid, 2)
