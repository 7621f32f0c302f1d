"""One video's trajectories: its segments' first frames and their windows' blur labels."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retrieval.video.decode import VideoError, read_frames
from retrieval.video.motion import WindowLabel, foreground_masks, scene_background, window_labels
from retrieval.video.settings import ClipSettings
from retrieval.video.sidecar import InstanceSpec, video_spec


@dataclass(frozen=True)
class Segment:
    """One trajectory: the first `max_frames` frames of a segment and their windows' labels."""

    video: Path
    instance: InstanceSpec
    frames: tuple[int, int]  # [start, stop) of the segment in the video
    pixels: np.ndarray  # uint8 (max_frames, H, W, 3)
    labels: list[WindowLabel]  # labels[e]: the window of e + 1 frames


def video_segments(video: Path, settings: ClipSettings) -> list[Segment]:
    """Every segment of `video`, in sidecar order; any unusable part fails the whole file."""
    frames = read_frames(video, settings.long_side)
    spec = video_spec(video, len(frames), settings.segments)
    scene = frames if spec.background is None else frames[spec.background[0] : spec.background[1]]
    background = scene_background(scene)
    segments = []
    for instance in spec.instances:
        for start, stop in instance.segments:
            where = f"{video}: segment [{start}, {stop}) of '{instance.name}'"
            if stop - start < settings.max_frames:
                raise VideoError(f"{where} holds {stop - start} frames, fewer than the "
                                 f"{settings.max_frames} its longest window averages (lower "
                                 "--max-frames, or --segments)")
            pixels = frames[start : start + settings.max_frames]
            masks = foreground_masks(pixels, background, settings.threshold)
            if not masks[0].any():
                raise VideoError(f"{where}: no moving object in its first frame (it differs "
                                 "nowhere from the scene background)")
            segments.append(Segment(video, instance, (start, stop), pixels, window_labels(masks)))
    return segments
