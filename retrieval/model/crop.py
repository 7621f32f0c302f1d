"""Cutting the object out of an image: square crops around a (predicted or true) streak box.

Finding the object is the hard part of describing it: a whole 96x128 image is mostly
background, and a network trained from scratch on a small budget learns the background
instead of the object. The crop head describes only a square window around the streak box,
resampled to a fixed size, so the descriptor always sees the object at about the same scale.
The square keeps the object's proportions (a stretched crop would change its shape with the
motion direction).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CROP_MARGIN = 1.15  # the crop's side is the box's longer side times this
MIN_CROP_PIXELS = 8.0  # no crop narrower than this many image pixels


def square_crop_boxes(boxes: torch.Tensor, image_size: tuple[int, int],
                      margin: float = CROP_MARGIN) -> torch.Tensor:
    """[B, 4] normalised (cx, cy, w, h) streak boxes -> [B, 3] (cx, cy, side in pixels).

    The side is the box's longer side in pixels times `margin`, at least MIN_CROP_PIXELS.
    """
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be [B, 4] (cx, cy, w, h), got {tuple(boxes.shape)}")
    height, width = image_size
    side = torch.maximum(boxes[:, 2] * width, boxes[:, 3] * height) * margin
    return torch.stack([boxes[:, 0], boxes[:, 1], side.clamp(min=MIN_CROP_PIXELS)], dim=1)


def crop_squares(images: torch.Tensor, squares: torch.Tensor, size: int) -> torch.Tensor:
    """Resample each image's square (cx, cy normalised, side in pixels) to [B, C, size, size].

    Bilinear sampling with zeros outside the image. A square much larger than `size` is
    sampled from a copy of the image smoothed in proportion, so thin stripes do not alias.
    Differentiable in the pixels (not used for the box, which is treated as given).
    """
    if images.ndim != 4 or squares.shape != (images.shape[0], 3):
        raise ValueError(f"images [B, C, H, W] and squares [B, 3] expected, got "
                         f"{tuple(images.shape)} and {tuple(squares.shape)}")
    height, width = images.shape[-2:]
    squares = squares.to(images.dtype)
    cx, cy, side = squares.unbind(1)
    theta = torch.zeros(images.shape[0], 2, 3, dtype=images.dtype, device=images.device)
    theta[:, 0, 0] = side / width
    theta[:, 0, 2] = 2 * cx - 1
    theta[:, 1, 1] = side / height
    theta[:, 1, 2] = 2 * cy - 1
    grid = F.affine_grid(theta, [images.shape[0], images.shape[1], size, size], align_corners=False)
    source = _smoothed_for_downsampling(images, side / size)
    return F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _smoothed_for_downsampling(images: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """Per image, a 3x3 box-filtered copy where the crop shrinks by 2x or more.

    One fixed extra level keeps the cost flat; crops that shrink more than 4x are rare
    (streaks longer than half the image) and only alias mildly.
    """
    shrinks = ratio >= 2.0
    if not bool(shrinks.any()):
        return images
    smoothed = F.avg_pool2d(images, 3, stride=1, padding=1, count_include_pad=False)
    return torch.where(shrinks[:, None, None, None], smoothed, images)
