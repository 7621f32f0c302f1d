"""Write 8-bit RGB frames as a lossless video (FFV1 in Matroska, RGB kept exactly).

The footage stand-in (`scripts/photo_footage.py`) and the tests film simulator clips with it, so
what `video-set` decodes is bit for bit what the simulator rendered.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from retrieval.fileio import atomic_path


def write_lossless_video(path: Path, frames: np.ndarray, fps: int = 240) -> Path:
    """uint8 (T, H, W, 3) frames to `path`, written under a temporary name and renamed whole."""
    import av  # the optional [video] extra

    with atomic_path(path) as partial, av.open(str(partial), "w", format="matroska") as container:
        stream = container.add_stream("ffv1", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "bgr0"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path
