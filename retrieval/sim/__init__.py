"""Motion-blur simulator: procedural 3-D objects on cluttered backgrounds, exposure-integrated."""

from retrieval.sim.config import SimConfig
from retrieval.sim.render import RenderedImage, RenderRequest, render_trajectories
from retrieval.sim.severity import blur_level, blur_severity, streak_box

__all__ = [
    "RenderRequest",
    "RenderedImage",
    "SimConfig",
    "blur_level",
    "blur_severity",
    "render_trajectories",
    "streak_box",
]
