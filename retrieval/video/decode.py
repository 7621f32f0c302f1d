"""Decode a video file into 8-bit RGB frames with PyAV (the optional `[video]` extra)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


class VideoError(ValueError):
    """A video (or its sidecar) that cannot be used; the message names the file."""


def require_pyav() -> None:
    """Fail early, with the install command, when PyAV is missing."""
    try:
        import av  # noqa: F401
    except ImportError as exc:
        raise VideoError("video-set decodes with PyAV: pip install 'blur-retrieval[video]'") from exc


def _scaled(width: int, height: int, long_side: int) -> tuple[int, int]:
    """Size with the long side at most `long_side` (aspect kept); smaller videos keep theirs."""
    scale = min(1.0, long_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def read_frames(path: Path, long_side: int) -> np.ndarray:
    """uint8 (T, H, W, 3) RGB frames of the first video stream, in display order.

    Frames larger than `long_side` are scaled down by area averaging as they are decoded,
    so memory holds only the small frames (about 230 kB each at 240x320); every frame gets
    the first frame's size.
    """
    import av

    if not path.is_file():
        raise VideoError(f"{path}: not found" if not path.exists() else f"{path}: not a file")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError(f"{path}: no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            frames, size = [], None
            for frame in container.decode(stream):
                size = size or _scaled(frame.width, frame.height, long_side)  # the first frame's
                frames.append(frame.to_ndarray(format="rgb24", width=size[0], height=size[1],
                                               interpolation="AREA"))
    except (av.error.FFmpegError, OSError) as exc:
        raise VideoError(f"{path}: cannot be decoded ({exc})") from exc
    if not frames:
        raise VideoError(f"{path}: holds no frames")
    return np.stack(frames)
