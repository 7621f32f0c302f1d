"""How `video-set` cuts and labels videos: its settings and the camera curves it can invert, in
a module without torch or PyAV so that the command can show them as option defaults."""

from __future__ import annotations

from dataclasses import dataclass

# Names of the rows of the simulator's CAMERA_CURVES, in the order retrieval/sim/camera.py
# builds them.
CURVES = {"srgb": 0, "gamma1.8": 1, "gamma2.4": 2, "filmic": 3}


@dataclass(frozen=True)
class ClipSettings:
    max_frames: int = 32  # longest window: images average 1..max_frames frames
    segments: int = 3  # segments of a video without a sidecar
    long_side: int = 320  # larger frames are scaled down to this
    threshold: float = 0.1  # foreground: a channel differs from the scene by this fraction
    curve: str = "srgb"  # camera response curve (CURVES)
