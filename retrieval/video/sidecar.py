"""What a video shows: instances and their frame segments, from a sidecar file or by default.

A sidecar is the video's file name plus ".json" (`mug.mp4.json` beside `mug.mp4`):

    {"background": [0, 40],
     "instances": [{"name": "red-mug", "category": "mug", "split": "test",
                    "segments": [[40, 100], [130, 190], [220, 280]]}]}

Frame ranges are [start, stop) indices of decoded frames. Each segment is one trajectory
of the named instance; its windows of rising blur start at its first frame, so a segment
should start with the object in view. Only "segments" and "name" are required: "category"
defaults to the name, "split" to "test", "background" (frames showing the scene without
the object) to the median of the whole clip. Without a sidecar the video is one instance
named after the file, in the test split, cut into equal consecutive segments. Instances
of the same name in several videos are one object filmed several times.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retrieval.video.decode import VideoError

SPLITS = ("train", "val", "test")
_VIDEO_KEYS = {"background", "instances"}
_INSTANCE_KEYS = {"name", "category", "split", "segments"}


@dataclass(frozen=True)
class InstanceSpec:
    name: str
    category: str
    split: str
    segments: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class VideoSpec:
    instances: tuple[InstanceSpec, ...]
    background: tuple[int, int] | None  # frames of the empty scene; None: the whole clip


def sidecar_path(video: Path) -> Path:
    return video.with_name(video.name + ".json")


def _frame_range(value: Any, where: str) -> tuple[int, int]:
    if (not isinstance(value, list) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
            or not 0 <= value[0] < value[1]):
        raise ValueError(f"{where} must be [start, stop] frame indices with 0 <= start < stop, "
                         f"got {json.dumps(value)}")
    return value[0], value[1]


def _unknown_keys(entry: dict, known: set[str], where: str) -> None:
    unknown = sorted(set(entry) - known)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; expected some of {sorted(known)}")


def _instance(entry: Any, index: int) -> InstanceSpec:
    where = f"instances[{index}]"
    if not isinstance(entry, dict):
        raise ValueError(f"{where} must be an object")
    _unknown_keys(entry, _INSTANCE_KEYS, where)
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{where}: 'name' must be a non-empty string")
    category = entry.get("category", name)
    if not isinstance(category, str) or not category.strip():
        raise ValueError(f"{where}: 'category' must be a non-empty string")
    split = entry.get("split", "test")
    if split not in SPLITS:
        raise ValueError(f"{where}: 'split' must be one of {', '.join(SPLITS)}, got {split!r}")
    segments = entry.get("segments")
    if not isinstance(segments, list) or not segments:
        raise ValueError(f"{where}: 'segments' must be a non-empty list of [start, stop]")
    ranges = tuple(_frame_range(s, f"{where}.segments[{i}]") for i, s in enumerate(segments))
    return InstanceSpec(name.strip(), category.strip(), split, ranges)


def _no_overlaps(instances: tuple[InstanceSpec, ...]) -> None:
    """Segments are disjoint, so no frame is both a query's and a database image's."""
    ranges = sorted(r for spec in instances for r in spec.segments)
    for before, after in zip(ranges, ranges[1:]):
        if after[0] < before[1]:
            raise ValueError(f"segments {list(before)} and {list(after)} overlap")


def parse_sidecar(data: Any) -> VideoSpec:
    """The spec a sidecar's JSON value describes; ValueError says what is wrong."""
    if not isinstance(data, dict):
        raise ValueError("must hold a JSON object")
    _unknown_keys(data, _VIDEO_KEYS, "top level")
    entries = data.get("instances")
    if not isinstance(entries, list) or not entries:
        raise ValueError("'instances' must be a non-empty list")
    instances = tuple(_instance(entry, i) for i, entry in enumerate(entries))
    names = [spec.name for spec in instances]
    twice = next((name for name in names if names.count(name) > 1), None)
    if twice is not None:
        raise ValueError(f"instance '{twice}' is listed twice; give all its segments in one entry")
    _no_overlaps(instances)
    background = data.get("background")
    return VideoSpec(instances, None if background is None else _frame_range(background, "background"))


def video_spec(video: Path, frame_count: int, segments: int) -> VideoSpec:
    """The sidecar's spec, or one test instance named after the file cut into `segments` parts.

    Frame ranges are checked against `frame_count`; every problem names the file.
    """
    path = sidecar_path(video)
    if not path.is_file():
        length = frame_count // segments
        if length == 0:
            raise VideoError(f"{video}: {frame_count} frames cannot make {segments} segments")
        ranges = tuple((i * length, (i + 1) * length) for i in range(segments))
        return VideoSpec((InstanceSpec(video.stem, video.stem, "test", ranges),), None)
    try:
        spec = parse_sidecar(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise VideoError(f"{path}: {exc}") from exc
    ranges = [r for i in spec.instances for r in i.segments] + ([spec.background] if spec.background else [])
    beyond = [r for r in ranges if r[1] > frame_count]
    if beyond:
        raise VideoError(f"{path}: frames {list(beyond[0])} lie beyond the video's {frame_count} frames")
    return spec
