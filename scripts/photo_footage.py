"""Slow-motion videos of objects dressed in held-out photographs, for `video-set`.

The stand-in for real footage that can be made here: test instances of the simulator, textured
with photos no model trained on, move over backgrounds cut from held-out photos, filmed as sharp
instant frames (a high-frame-rate camera; no blur is rendered). By default each trajectory is
its own video before its own scene (`--scene own`), so the scene says nothing about the object,
as in the simulator's data sets; `--scene shared` films all of an instance's trajectories in
one video before one scene, where a model can match the scene instead of the object. Sidecars
name the instance, its segments and the empty-scene frames, so `video-set` builds the benchmark
from the videos the way it builds one from a phone's:

    python scripts/photo_footage.py --out data/photo-footage
    blur-retrieval video-set data/photo-footage/*.mkv --out data/photo-footage-set --max-frames 25 -q
    blur-retrieval bench map --data data/photo-footage-set --methods blur-aware,standard

Videos are lossless FFV1 at 240 fps in Matroska, each written under a temporary name and
renamed when complete. Only instances whose camera curve is sRGB are filmed, so one
`video-set --curve srgb` (its default) inverts every video's curve.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np
import torch

from retrieval.fileio import write_json_atomic
from retrieval.sim.config import PHOTO_SPLITS, SimConfig
from retrieval.sim.layout import instance_split
from retrieval.sim.photos import SKIMAGE
from retrieval.sim.trajectory import sample_trajectory
from retrieval.video.encode import write_lossless_video
from retrieval.video.settings import CURVES
from retrieval.video.simulated import simulated_clips

_SEARCHED_INDICES = 200  # local instance indices scanned for test instances with an sRGB curve


def _write_video(video: Path, name: str, category: int, clips: list, scene_frames: int) -> None:
    """One video of `clips` (trajectories) after `scene_frames` frames of the first one's scene."""
    frames = len(clips[0].frames)
    empty = np.repeat(clips[0].scene[None], scene_frames, axis=0)
    write_lossless_video(video, np.concatenate([empty, *(clip.frames for clip in clips)]))
    starts = [scene_frames + t * frames for t in range(len(clips))]
    write_json_atomic(Path(f"{video}.json"), {
        "background": [0, scene_frames],
        "instances": [{"name": name, "category": f"c{category:03d}", "split": "test",
                       "segments": [[start, start + frames] for start in starts]}]})


def filmed_instances(config: SimConfig, category: int, count: int) -> list[int]:
    """The first `count` test instances of `category` whose camera curve is sRGB."""
    found = []
    for index in range(_SEARCHED_INDICES):
        if instance_split(category, index) != "test":
            continue
        if sample_trajectory(config, category, index, 0).camera_curve == CURVES["srgb"]:
            found.append(index)
            if len(found) == count:
                break
    return found


@click.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--categories", type=click.IntRange(1, 400), default=40, show_default=True)
@click.option("--instances", type=click.IntRange(min=1), default=5, show_default=True,
              help="Test instances filmed per category.")
@click.option("--trajectories", type=click.IntRange(min=2), default=3, show_default=True,
              help="Segments per video (video-set: the first third give queries).")
@click.option("--frames", type=click.IntRange(2, 128), default=25, show_default=True,
              help="Instant frames per trajectory (video-set --max-frames at most this).")
@click.option("--scene-frames", type=click.IntRange(min=1), default=5, show_default=True,
              help="Frames of the empty scene before the object moves.")
@click.option("--photos", default=SKIMAGE, show_default=True,
              help="Photo source ('skimage' or a folder of pictures).")
@click.option("--photo-split", type=click.Choice(PHOTO_SPLITS), default="heldout",
              show_default=True)
@click.option("--scene", type=click.Choice(["own", "shared"]), default="own", show_default=True,
              help="own: a video and a scene per trajectory; shared: one of each per instance.")
@click.option("--size", default="96x128", show_default=True, help="HxW of the frames.")
def main(out: Path, categories: int, instances: int, trajectories: int, frames: int,
         scene_frames: int, photos: str, photo_split: str, scene: str, size: str) -> None:
    torch.set_num_threads(1)
    height, width = (int(side) for side in size.lower().split("x"))
    config = SimConfig(height=height, width=width, steps=max(24, frames - 1), exposures=frames,
                       substeps=1, photos=photos, photo_split=photo_split, photo_share=1.0)
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    for category in range(categories):
        for instance in filmed_instances(config, category, instances):
            clips = simulated_clips(config, category, instance, trajectories, scene == "own")
            name = f"c{category:03d}_i{instance:06d}"
            videos = [[clip] for clip in clips] if scene == "own" else [clips]
            for number, filmed in enumerate(videos):
                stem = f"{name}_t{number}" if scene == "own" else name
                _write_video(out / f"{stem}.mkv", name, category, filmed, scene_frames)
                written += 1
    settings = {"config": config.to_dict(), "categories": categories, "instances": instances,
                "trajectories": trajectories, "scene_frames": scene_frames, "scene": scene,
                "videos": written}
    write_json_atomic(out / "photo_footage.json", settings)
    click.echo(json.dumps({"videos": written, "out": str(out)}))


if __name__ == "__main__":
    main()
