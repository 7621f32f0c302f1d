"""Write a video benchmark set: PNG images, `manifest.parquet` and `video_set.json`.

Every video is measured first, so that each instance's trajectories (its segments across
all usable videos) are known before roles are given; a bad video is reported and left
out without stopping the others.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from retrieval.fileio import atomic_path, write_json_atomic
from retrieval.manifest import MANIFEST_NAME, MANIFEST_SCHEMA, write_manifest
from retrieval.sim.objects import global_instance_id
from retrieval.synth import image_relpath
from retrieval.video.clip import Segment, video_segments
from retrieval.video.decode import VideoError
from retrieval.video.light import averaged_windows
from retrieval.video.roles import chosen_exposures
from retrieval.video.settings import ClipSettings

SETTINGS_NAME = "video_set.json"  # settings, instances and their trajectories, skipped videos


@dataclass
class VideoSetResult:
    manifest: Path | None  # None when no video could be used (nothing is written then)
    rows: int = 0
    skipped: list[str] = field(default_factory=list)  # one message per video left out, naming it


@dataclass
class _Instance:
    category: int  # index of the category name, numbered as first seen
    local: int  # index within the category, numbered as first seen
    category_name: str
    split: str
    segments: list[Segment]  # its trajectories, in order

    @property
    def instance_id(self) -> int:
        return global_instance_id(self.category, self.local)


def _add_video(instances: dict[str, _Instance], video: Path, segments: list[Segment]) -> None:
    """Take a video's segments, unless one names a known instance differently (VideoError)."""
    for segment in segments:
        spec, known = segment.instance, instances.get(segment.instance.name)
        if known is not None and (known.category_name, known.split) != (spec.category, spec.split):
            raise VideoError(f"{video}: instance '{spec.name}' is category '{spec.category}', split "
                             f"'{spec.split}' here but '{known.category_name}', '{known.split}' in "
                             "an earlier video")
    categories = {entry.category_name: entry.category for entry in instances.values()}
    for segment in segments:
        spec = segment.instance
        if spec.name not in instances:
            category = categories.setdefault(spec.category, len(categories))
            local = sum(1 for entry in instances.values() if entry.category == category)
            instances[spec.name] = _Instance(category, local, spec.category, spec.split, [])
        instances[spec.name].segments.append(segment)


def _write_png(path: Path, pixels: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(pixels).save(tmp, format="PNG", compress_level=1)  # fast; lossless anyway


def _write_instance(out_dir: Path, instance: _Instance, curve: str) -> tuple[list[dict], list[dict]]:
    """Write an instance's chosen windows: (manifest rows without image_id, trajectory notes)."""
    rows, notes = [], []
    for trajectory, segment in enumerate(instance.segments):
        levels = [label.level for label in segment.labels]
        role, exposures = chosen_exposures(instance.split, trajectory, len(instance.segments), levels)
        for count, image in averaged_windows(segment.pixels, [e + 1 for e in exposures], curve):
            exposure = count - 1
            label = segment.labels[exposure]
            path = image_relpath(instance.split, instance.category, instance.local, trajectory, exposure)
            _write_png(out_dir / path, image)
            rows.append({
                "path": path, "instance": instance.instance_id, "category": instance.category,
                "trajectory": trajectory, "exposure": exposure, "blur_severity": label.severity,
                "blur_level": label.level, **dict(zip(("bbox_cx", "bbox_cy", "bbox_w", "bbox_h"),
                                                      label.box)),
                "split": instance.split, "role": role,
            })
        notes.append({"trajectory": trajectory, "video": str(segment.video),
                      "frames": list(segment.frames), "role": role, "exposures": exposures,
                      "window_levels": levels})
    return rows, notes


def build_video_set(videos: Sequence[Path], out_dir: Path, settings: ClipSettings,
                    progress: bool = True) -> VideoSetResult:
    """Measure every video, then write the images and manifest of those that could be used."""
    instances: dict[str, _Instance] = {}
    skipped = []
    for video in tqdm(videos, unit="video", desc="video-set", disable=not progress):
        try:
            _add_video(instances, video, video_segments(video, settings))
        except VideoError as exc:
            skipped.append(str(exc))
    if not instances:
        return VideoSetResult(None, 0, skipped)
    rows, described = [], []
    for name, instance in instances.items():
        written, notes = _write_instance(out_dir, instance, settings.curve)
        rows.extend(written)
        described.append({"name": name, "category": instance.category_name,
                          "instance_id": instance.instance_id, "split": instance.split,
                          "trajectories": notes})
    for image_id, row in enumerate(rows):
        row["image_id"] = image_id
    manifest = out_dir / MANIFEST_NAME
    write_manifest(manifest, {name: [row[name] for row in rows] for name in MANIFEST_SCHEMA.names}, None)
    query_levels = Counter(row["blur_level"] for row in rows if row["role"] == "query")
    write_json_atomic(out_dir / SETTINGS_NAME, {
        "settings": asdict(settings), "rows": len(rows), "roles": Counter(row["role"] for row in rows),
        "query_levels": {str(level): query_levels[level] for level in sorted(query_levels)},
        "instances": described, "skipped": skipped,
    })
    return VideoSetResult(manifest, len(rows), skipped)
