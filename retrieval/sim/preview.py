"""Contact sheet of one instance along one trajectory across all exposures."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

from retrieval.fileio import atomic_path
from retrieval.sim.config import SimConfig
from retrieval.sim.render import RenderRequest, render_trajectories
from retrieval.sim.severity import blur_level, blur_severity

_LABEL_HEIGHT = 14


def preview_sheet(config: SimConfig, category: int, instance: int, trajectory: int) -> Image.Image:
    """Tiles left to right by exposure, each captioned with its exposure and blur level."""
    request = RenderRequest(category, instance, trajectory, tuple(range(config.exposures)))
    images = render_trajectories(config, [request])[0]
    columns = min(config.exposures, 6)
    rows = -(-config.exposures // columns)
    tile_w, tile_h = config.width, config.height + _LABEL_HEIGHT
    sheet = Image.new("RGB", (columns * tile_w, rows * tile_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for exposure in range(config.exposures):
        rendered = images[exposure]
        severity = blur_severity(rendered.alpha)
        x, y = (exposure % columns) * tile_w, (exposure // columns) * tile_h
        sheet.paste(Image.fromarray(rendered.image), (x, y + _LABEL_HEIGHT))
        caption = f"e={exposure} BL {blur_level(severity)} BS {severity:.2f}"
        draw.text((x + 2, y + 1), caption, fill=(0, 0, 0))
    return sheet


def write_preview(path: str | Path, config: SimConfig, category: int = 0, instance: int = 0,
                  trajectory: int = 0) -> Path:
    sheet = preview_sheet(config, category, instance, trajectory)
    path = Path(path)
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")
    return path

