"""A picture of one verification: query and candidate side by side, matches drawn between them.

Inliers of the fitted transform are green lines, the other mutual matches faint red, so a
reader sees at a glance whether the evidence is a consistent mapping of the object or noise.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageDraw

from retrieval.fileio import atomic_path
from retrieval.rerank.verify import Verification

GAP = 12  # pixels between the two images
INLIER = (40, 200, 60)
OUTLIER = (220, 60, 60)


def draw_matches(query: np.ndarray, candidate: np.ndarray, verification: Verification,
                 out_path: str | os.PathLike, scale: int = 4, caption: str = "") -> None:
    """Write a PNG: uint8 (H, W, 3) `query` left, `candidate` right, both `scale` times larger."""
    if query.shape != candidate.shape or query.ndim != 3:
        raise ValueError(f"query {query.shape} and candidate {candidate.shape} must be equal "
                         "(H, W, 3) images")
    height, width = query.shape[:2]
    big = (width * scale, height * scale)
    caption_height = 18 if caption else 0
    sheet = Image.new("RGB", (2 * big[0] + GAP, big[1] + caption_height), (255, 255, 255))
    sheet.paste(Image.fromarray(query).resize(big, Image.Resampling.NEAREST), (0, 0))
    sheet.paste(Image.fromarray(candidate).resize(big, Image.Resampling.NEAREST), (big[0] + GAP, 0))
    draw = ImageDraw.Draw(sheet)
    offset = big[0] + GAP
    order = np.argsort(verification.inlier_mask, kind="stable")  # inliers drawn last, on top
    for i in order:
        (x0, y0), (x1, y1) = verification.source[i] * scale, verification.target[i] * scale
        inlier = bool(verification.inlier_mask[i])
        draw.line([(x0, y0), (x1 + offset, y1)], fill=INLIER if inlier else OUTLIER,
                  width=2 if inlier else 1)
        if inlier:
            for x, y in ((x0, y0), (x1 + offset, y1)):
                draw.ellipse([x - 2, y - 2, x + 2, y + 2], outline=INLIER)
    if caption:
        draw.text((4, big[1] + 3), caption, fill=(0, 0, 0))
    with atomic_path(out_path) as path:
        sheet.save(path, format="PNG")
