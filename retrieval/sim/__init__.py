"""Motion-blur simulator: procedural 3-D objects on cluttered backgrounds, exposure-integrated.

The names below are imported on first use, so that a light module of the package (`config`,
`layout`: the presets a command's options list) can be imported without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from retrieval.sim.config import SimConfig
    from retrieval.sim.render import RenderedImage, RenderRequest, render_trajectories
    from retrieval.sim.severity import blur_level, blur_severity, streak_box

_HOMES = {
    "RenderRequest": "render",
    "RenderedImage": "render",
    "SimConfig": "config",
    "blur_level": "severity",
    "blur_severity": "severity",
    "render_trajectories": "render",
    "streak_box": "severity",
}
__all__ = [
    "RenderRequest",
    "RenderedImage",
    "SimConfig",
    "blur_level",
    "blur_severity",
    "render_trajectories",
    "streak_box",
]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
