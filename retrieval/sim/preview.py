"""Contact sheets: one instance along one trajectory across all exposures, and the instances
of a category side by side (rows = instances, columns = trajectories x exposures)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

from retrieval.fileio import atomic_path
from retrieval.sim.config import SimConfig
from retrieval.sim.render import RenderRequest, render_trajectories
from retrieval.sim.severity import blur_level, blur_severity

_LABEL_HEIGHT = 14


def preview_sheet(config: SimConfig, category: int, instance: int, trajectory: int) -> Image.Image:
    """Tiles left to right by exposure, each captioned with its exposure (e=), blur level and
    blur severity."""
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
        caption = f"e={exposure} level {blur_level(severity)} severity {severity:.2f}"
        draw.text((x + 2, y + 1), caption, fill=(0, 0, 0))
    return sheet


def write_sheet(path: str | Path, sheet: Image.Image) -> Path:
    """Save a contact sheet as PNG, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")
    return path



def instance_sheet(config: SimConfig, category: int, instances: int = 6, trajectories: int = 3,
                   exposures: tuple[int, ...] = (0, 5, 10)) -> Image.Image:
    """Rows = instances of `category`, columns = each trajectory at each of `exposures`: what
    must tell instances apart (sharp) and what blur takes away (long exposures)."""
    requests = [RenderRequest(category, instance, trajectory, exposures)
                for instance in range(instances) for trajectory in range(trajectories)]
    images = render_trajectories(config, requests)
    columns = trajectories * len(exposures)
    tile_w, tile_h = config.width, config.height + _LABEL_HEIGHT
    sheet = Image.new("RGB", (columns * tile_w, instances * tile_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for index, rendered in enumerate(images):
        instance, trajectory = divmod(index, trajectories)
        for position, exposure in enumerate(exposures):
            x = (trajectory * len(exposures) + position) * tile_w
            y = instance * tile_h
            sheet.paste(Image.fromarray(rendered[exposure].image), (x, y + _LABEL_HEIGHT))
            draw.text((x + 2, y + 1), f"i{instance} t{trajectory} e{exposure}", fill=(0, 0, 0))
    return sheet
