"""The `video-set` command: a blur benchmark from slow-motion videos (retrieval/video/)."""

from __future__ import annotations

from pathlib import Path

import click

from benchmark.commands.options import writable_folder
from retrieval.video.settings import CURVES, ClipSettings

EXIT_SKIPPED = 1  # some videos were left out; the rest were written


@click.command("video-set")
@click.argument("videos", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              callback=writable_folder,
              help="Folder for the images, manifest.parquet and video_set.json.")
@click.option("--max-frames", type=click.IntRange(1, 128), default=ClipSettings.max_frames,
              show_default=True,
              help="Longest window: images average 1..N consecutive frames; every segment must "
                   "hold N frames.")
@click.option("--segments", type=click.IntRange(min=1), default=ClipSettings.segments,
              show_default=True,
              help="Equal segments (trajectories) of a video without a sidecar; the first third "
                   "give queries, the rest database images.")
@click.option("--long-side", type=click.IntRange(16, 4096), default=ClipSettings.long_side,
              show_default=True, help="Frames larger than this are scaled down (aspect kept).")
@click.option("--threshold", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=ClipSettings.threshold, show_default=True,
              help="Object mask: pixels whose largest channel differs from the scene background "
                   "by more than this fraction of the display range.")
@click.option("--curve", type=click.Choice(list(CURVES)), default=ClipSettings.curve,
              show_default=True,
              help="Camera response curve inverted to average frames in linear light.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def video_set_command(videos, out_dir, max_frames, segments, long_side, threshold, curve, quiet):
    """Make a benchmark set in OUT from high-frame-rate VIDEOS of moving objects.

    Each video is one object instance cut into --segments trajectories, or what its sidecar
    VIDEO.json names (instances, frame segments, split, background frames; see
    retrieval/video/sidecar.py). Windows of 1..N consecutive frames averaged in linear light
    are images of rising blur, labelled by the simulator's blur level of the averaged object
    mask. Exits 1 when some videos were skipped (each is named on stderr; the rest are written).
    """
    from retrieval.video.build import SETTINGS_NAME, build_video_set
    from retrieval.video.decode import VideoError, require_pyav

    try:
        require_pyav()
    except VideoError as exc:
        raise click.UsageError(str(exc)) from exc
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = ClipSettings(max_frames=max_frames, segments=segments, long_side=long_side,
                            threshold=threshold, curve=curve)
    result = build_video_set(list(videos), out_dir, settings, progress=not quiet)
    for message in result.skipped:
        click.echo(f"skipped: {message}", err=True)
    if result.manifest is None:
        raise click.ClickException("no video could be used; nothing written")
    click.echo(f"wrote {result.manifest} ({result.rows} images)")
    click.echo(f"wrote {out_dir / SETTINGS_NAME}")
    if result.skipped:
        click.get_current_context().exit(EXIT_SKIPPED)
