"""Write a synthetic data set: PNG images plus `manifest.parquet` (the `synth` command).

Trajectories are rendered in batches with every exposure, labelled from their
averaged object mattes (blur severity, level, streak box), and only the images a
role needs are kept: all exposures for train/val, the first exposure of each blur
level 1..6 for query trajectories, one level-balanced exposure per database
trajectory. Distractors are added as rows (virtual ones need no rendering at all).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from retrieval.fileio import atomic_path, write_json_atomic
from retrieval.manifest import MANIFEST_NAME, ManifestRow, write_manifest
from retrieval.sim.config import SimConfig
from retrieval.sim.layout import (
    Preset,
    TrajectoryJob,
    distractor_table,
    plan_trajectories,
    select_database_exposure,
    select_query_exposures,
)
from retrieval.sim.objects import global_instance_id
from retrieval.sim.render import RenderedImage, RenderRequest, render_trajectories
from retrieval.sim.severity import blur_level, blur_severity, streak_box

SETTINGS_NAME = "synth.json"  # the preset and simulator settings a data set was made with
_ROLE_OF_SPLIT = {"train": "train", "val": "val"}
_PNG_LEVEL = 1  # fast zlib level: PNG is lossless either way, level 1 is ~4x faster


@dataclass
class _Row:
    path: str | None
    category: int
    instance: int
    trajectory: int
    exposure: int
    severity: float | None
    level: int | None
    box: tuple[float, float, float, float] | None
    split: str
    role: str


def image_relpath(split: str, category: int, instance: int, trajectory: int, exposure: int) -> str:
    return f"images/{split}/c{category:03d}/i{instance:06d}_t{trajectory:03d}_e{exposure:02d}.png"


def _labelled_row(job: TrajectoryJob, exposure: int, rendered: RenderedImage, role: str,
                  severity: float | None = None) -> _Row:
    """The manifest row of one rendered image; pass `severity` when it is already known."""
    severity = blur_severity(rendered.alpha) if severity is None else severity
    return _Row(
        path=image_relpath(job.split, job.category, job.instance, job.trajectory, exposure),
        category=job.category, instance=job.instance, trajectory=job.trajectory,
        exposure=exposure, severity=severity, level=blur_level(severity),
        box=streak_box(rendered.alpha), split=job.split, role=role,
    )


def _rows_for(job: TrajectoryJob, images: dict[int, RenderedImage]) -> list[tuple[_Row, RenderedImage]]:
    if job.kind == "all":
        role = _ROLE_OF_SPLIT[job.split]
        return [(_labelled_row(job, e, images[e], role), images[e]) for e in sorted(images)]
    severities = {e: blur_severity(images[e].alpha) for e in sorted(images)}
    levels = [blur_level(severity) for severity in severities.values()]
    if job.kind == "query":
        chosen, role = sorted(select_query_exposures(levels).values()), "query"
    else:
        chosen, role = [select_database_exposure(levels, job.trajectory)], "database"
    return [(_labelled_row(job, e, images[e], role, severities[e]), images[e]) for e in chosen]


def _batches(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _write_png(path: Path, pixels: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(pixels).save(tmp, format="PNG", compress_level=_PNG_LEVEL)


def _distractor_rows(preset: Preset, config: SimConfig, virtual: bool, render, write) -> list[_Row]:
    table = distractor_table(preset.distractors, preset.categories, config.seed, config.exposures)
    keys = list(zip(*(table[k].tolist() for k in ("category", "instance", "trajectory", "exposure"))))
    if virtual:
        return [_Row(None, c, i, t, e, None, None, None, "distractor", "distractor") for c, i, t, e in keys]
    rows = []
    for chunk in _batches(keys, 64):
        requests = [RenderRequest(c, i, t, (e,)) for c, i, t, e in chunk]
        for (c, i, t, e), images in zip(chunk, render(requests)):
            job = TrajectoryJob("distractor", c, i, t, "distractor")
            row = _labelled_row(job, e, images[e], "distractor")
            write(row, images[e])
            rows.append(row)
    return rows


def synthesize(
    out_dir: str | Path,
    preset: Preset,
    config: SimConfig,
    virtual: bool = False,
    device: str = "cpu",
    batch_size: int = 32,
    progress: bool = True,
    splits: Sequence[str] = ("train", "val", "test"),
) -> Path:
    """Render the data set described by `preset` into `out_dir`; returns the manifest path.

    `splits` limits which instance splits are rendered (a benchmark needs only "test");
    distractor rows are always added.
    """
    unknown = set(splits) - {"train", "val", "test"}
    if unknown:
        raise ValueError(f"unknown splits {sorted(unknown)}: choose from train, val, test")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [job for job in plan_trajectories(preset) if job.split in splits]
    all_exposures = tuple(range(config.exposures))
    total = len(jobs) + (0 if virtual else preset.distractors)
    bar = tqdm(total=total, unit="traj", desc="synth", disable=not progress, smoothing=0.1)
    rows: list[_Row] = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        pending = []

        def write(row: _Row, image: RenderedImage) -> None:
            if not virtual:
                pending.append(pool.submit(_write_png, out_dir / row.path, image.image))

        def render(requests: list[RenderRequest]) -> list[dict[int, RenderedImage]]:
            result = render_trajectories(config, requests, device)
            bar.update(len(requests))
            return result

        for chunk in _batches(jobs, batch_size):
            requests = [RenderRequest(j.category, j.instance, j.trajectory, all_exposures) for j in chunk]
            for job, images in zip(chunk, render(requests)):
                for row, image in _rows_for(job, images):
                    write(row, image)
                    rows.append(row)
            for future in pending:
                future.result()
            pending.clear()
        rows.extend(_distractor_rows(preset, config, virtual, render, write))
        for future in pending:
            future.result()
    bar.close()
    if virtual:
        for row in rows:
            row.path = None
    manifest = out_dir / MANIFEST_NAME
    write_manifest(manifest, _columns(rows), config)
    write_json_atomic(out_dir / SETTINGS_NAME, {
        "preset": asdict(preset), "sim": config.to_dict(), "virtual": virtual, "splits": list(splits),
        "rows": len(rows), "roles": _role_counts(rows), "query_levels": _query_levels(rows),
    })
    return manifest


def _role_counts(rows: list[_Row]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.role] = counts.get(row.role, 0) + 1
    return counts


def _query_levels(rows: list[_Row]) -> dict[str, float | int]:
    """Queries per blur level and each level's share (every level 1..6 should hold >= 10%)."""
    levels = [row.level for row in rows if row.role == "query"]
    summary: dict[str, float | int] = {}
    for level in range(1, 7):
        count = levels.count(level)
        summary[f"level_{level}"] = count
        summary[f"level_{level}_share"] = round(count / len(levels), 4) if levels else 0.0
    return summary


def _columns(rows: list[_Row]) -> dict[str, list]:
    boxes = [row.box for row in rows]
    return {
        "image_id": list(range(len(rows))),
        "path": [row.path for row in rows],
        "instance": [global_instance_id(row.category, row.instance) for row in rows],
        "category": [row.category for row in rows],
        "trajectory": [row.trajectory for row in rows],
        "exposure": [row.exposure for row in rows],
        "blur_severity": [row.severity for row in rows],
        "blur_level": [row.level for row in rows],
        **{
            name: [box[i] if box is not None else None for box in boxes]
            for i, name in enumerate(("bbox_cx", "bbox_cy", "bbox_w", "bbox_h"))
        },
        "split": [row.split for row in rows],
        "role": [row.role for row in rows],
    }


def render_rows(rows: Sequence[ManifestRow], device: str = "cpu") -> list[np.ndarray]:
    """Pixels (uint8 H x W x 3) of manifest rows rendered from their parameters.

    Rows of one trajectory share one render; results come back in the input order.
    """
    groups: dict[tuple, list[int]] = {}
    for index, row in enumerate(rows):
        if row.sim is None:
            raise ValueError(f"{row.describe()}: no simulator settings to render it from")
        key = (json.dumps(row.sim.to_dict(), sort_keys=True), row.category, row.instance, row.trajectory)
        groups.setdefault(key, []).append(index)
    out: list[np.ndarray | None] = [None] * len(rows)
    by_config: dict[str, list[tuple]] = {}
    for key in groups:
        by_config.setdefault(key[0], []).append(key)
    for keys in by_config.values():
        config = rows[groups[keys[0]][0]].sim
        requests = [
            RenderRequest(k[1], k[2], k[3], tuple(sorted({rows[i].exposure for i in groups[k]})))
            for k in keys
        ]
        for key, images in zip(keys, render_trajectories(config, requests, device)):
            for index in groups[key]:
                out[index] = images[rows[index].exposure].image
    return out  # type: ignore[return-value]

