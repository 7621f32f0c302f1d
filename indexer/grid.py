"""A contact sheet of each query beside its top hits, to judge retrieval results at a glance."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageOps

from retrieval.fileio import atomic_path

THUMB = 160
CAPTION = 18
GAP = 6
MAX_HITS = 8
BACKGROUND = (255, 255, 255)
PLACEHOLDER = (200, 200, 200)
QUERY_FRAME = (30, 90, 200)
CORRECT_FRAME = (20, 160, 60)
WRONG_FRAME = (210, 40, 40)


@dataclass(frozen=True)
class GridRow:
    query: str  # path of the query image
    hits: list[tuple[str | None, float]]  # (path or None for a virtual row, score), best first
    caption: str = "query"  # under the query, e.g. its blur level and severity
    correct: list[bool] | None = None  # per hit, when known: framed green (True) or red


def draw_grid(rows: Sequence[GridRow], out_path: str | os.PathLike, thumb: int = THUMB,
              max_hits: int = MAX_HITS) -> None:
    """Write a PNG with one line per query: the query (framed blue), then its hits with scores,
    framed green or red where the row says whether each hit is correct."""
    if not rows:
        raise ValueError("no query results to draw")
    columns = 1 + min(max_hits, max(len(row.hits) for row in rows))
    cell_w, cell_h = thumb + GAP, thumb + CAPTION + GAP
    sheet = Image.new("RGB", (columns * cell_w + GAP, len(rows) * cell_h + GAP), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for r, row in enumerate(rows):
        top = GAP + r * cell_h
        cells = [(row.query, row.caption), *((p, f"#{i + 1}  {s:.3f}")
                                             for i, (p, s) in enumerate(row.hits[:max_hits]))]
        frames = [QUERY_FRAME, *(None if row.correct is None else
                                 CORRECT_FRAME if good else WRONG_FRAME
                                 for good in (row.correct or [None] * len(row.hits))[:max_hits])]
        for c, ((path, caption), frame) in enumerate(zip(cells, frames)):
            left = GAP + c * cell_w
            sheet.paste(_thumbnail(path, thumb), (left, top))
            draw.text((left + 2, top + thumb + 2), caption, fill=(0, 0, 0))
            if frame is not None:
                draw.rectangle((left - 2, top - 2, left + thumb + 1, top + thumb + 1),
                               outline=frame, width=2)
    with atomic_path(out_path) as tmp:
        sheet.save(tmp, format="PNG")


def _thumbnail(path: str | None, size: int) -> Image.Image:
    """The image fitted in a size x size tile, or a grey tile saying it has no picture."""
    tile = Image.new("RGB", (size, size), PLACEHOLDER)
    picture = None if path is None else _load_rgb(path)
    if picture is None:
        ImageDraw.Draw(tile).text((6, size // 2 - 6), "no picture", fill=(80, 80, 80))
        return tile
    picture.thumbnail((size, size))
    tile.paste(picture, ((size - picture.width) // 2, (size - picture.height) // 2))
    return tile


def _load_rgb(path: str) -> Image.Image | None:
    """Upright RGB pixels of `path`, or None when it cannot be read (the sheet still draws)."""
    try:
        with Image.open(path) as image:
            return ImageOps.exif_transpose(image).convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
