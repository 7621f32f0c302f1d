"""`video-set` on simulated footage: the simulator renders the sharp instant frames of a
trajectory (one per motion step, as a high-frame-rate camera would film it), PyAV encodes
them losslessly, and the recovered images and levels are compared with the simulator's own
blurred renders of that trajectory, whose matte (the truth) the video never sees."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from PIL import Image

from benchmark.commands.main import main
from benchmark.protocol import load_benchmark_set
from indexer.sources import source_from
from retrieval.manifest import manifest_items
from retrieval.sim.config import SimConfig
from retrieval.train.data import select_training_rows
from retrieval.video.encode import write_lossless_video
from retrieval.video.light import CURVES, averaged_windows, linear_table, to_display
from retrieval.video.motion import foreground_masks, scene_background, window_labels
from retrieval.video.sidecar import parse_sidecar
from retrieval.video.simulated import SimulatedClip, simulated_clips

FRAMES = 25  # instant frames per trajectory: exposures 0..24 of one step each
HEIGHT, WIDTH = 96, 128
CONFIG = SimConfig(height=HEIGHT, width=WIDTH, exposures=FRAMES, substeps=1)
CATEGORY, INSTANCE = 1, 2  # an sRGB trajectory whose streak passes blur level 6 by frame 10
SCENE_FRAMES = 5  # frames of the empty scene before the object moves


@pytest.fixture(scope="module")
def clips() -> list[SimulatedClip]:
    return simulated_clips(CONFIG, CATEGORY, INSTANCE, 3)


def _video_set(*args: str):
    return CliRunner().invoke(main, ["video-set", *args, "-q"])


def _rows(out: Path) -> list[dict]:
    return pq.read_table(out / "manifest.parquet").to_pylist()


def test_every_display_value_goes_to_linear_light_and_back_unchanged():
    values = np.arange(256, dtype=np.uint8)
    for curve in CURVES:
        linear = np.repeat(linear_table(curve)[values][None, :, None], 3, axis=2)  # (1, 256, 3)
        np.testing.assert_array_equal(to_display(linear, curve)[0, :, 0], values)
        assert linear[0, 0, 0] == 0.0 and linear[0, 255, 0] == 1.0


def test_averaging_a_still_frame_gives_it_back():
    frame = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(1, 2, 3, 3) * 14
    windows = dict(averaged_windows(np.repeat(frame, 4, axis=0), [1, 4], "srgb"))
    assert sorted(windows) == [1, 4]
    np.testing.assert_array_equal(windows[4], frame[0])


def test_window_levels_of_a_sliding_square_follow_the_streak():
    """A 10x10 square moving 2 px per frame. Over 3 frames the streak covers columns 5..18;
    erosion keeps columns 6..17 of rows 6..13, where the matte is 1/3, 2/3, 2/3, 1 (x6), 2/3,
    2/3, 1/3: mean 28/36, so BS = 2/9 and level 3. Over 2 frames it is 1/2, 1 (x8), 1/2: mean
    9/10, BS = 0.1 up to float error, kept on level 1."""
    masks = np.zeros((3, 20, 30), dtype=bool)
    for frame in range(3):
        masks[frame, 5:15, 5 + 2 * frame : 15 + 2 * frame] = True
    labels = window_labels(masks)
    assert [label.severity for label in labels] == pytest.approx([0.0, 0.1, 2 / 9])
    assert [label.level for label in labels] == [1, 1, 3]
    assert labels[2].box == pytest.approx((12 / 30, 10 / 20, 14 / 30, 10 / 20))


def test_video_set_recovers_the_simulators_blurred_renders_and_levels(tmp_path, clips):
    """Every window of a train-split segment is written, so every exposure is compared.

    Tolerances: 1 display level (of 255) per pixel, from rounding each filmed frame to 8 bits,
    except where a frame of the window is saturated (255: the camera clips a highlight the
    simulator averages unclipped); blur levels exact, as the scene frames give the true
    background and the masks are then the simulator's mattes up to anti-aliased edges.
    """
    clip = clips[0]
    still = np.repeat(clip.scene[None], SCENE_FRAMES, axis=0)
    video = write_lossless_video(tmp_path / "sim.mkv", np.concatenate([still, clip.frames]))
    (tmp_path / "sim.mkv.json").write_text(json.dumps({
        "background": [0, SCENE_FRAMES],
        "instances": [{"name": "sim", "split": "train",
                       "segments": [[SCENE_FRAMES, SCENE_FRAMES + FRAMES]]}],
    }))
    result = _video_set(str(video), "--out", str(tmp_path / "out"), "--max-frames", str(FRAMES),
                        "--curve", clip.curve)
    assert result.exit_code == 0, result.output
    rows = _rows(tmp_path / "out")
    assert [row["exposure"] for row in rows] == list(range(FRAMES))
    assert {row["role"] for row in rows} == {"train"}
    for row in rows:
        exposure = row["exposure"]
        image = np.asarray(Image.open(tmp_path / "out" / row["path"])).astype(int)
        saturated = (clip.frames[: exposure + 1] == 255).any(axis=0)
        difference = np.abs(image - clip.blurred[exposure])
        assert difference[~saturated].max(initial=0) <= 1, exposure
    assert clip.levels[-1] >= 6
    assert [row["blur_level"] for row in rows] == clip.levels


def test_levels_from_the_clip_median_match_the_truth(clips):
    """Without scene frames the background is the clip's median. This object passes through
    every pixel in under half the frames, so the median is the scene and the levels are exact;
    a slower one would show in the median (scripts/video_level_check.py measures how often)."""
    for clip in clips:
        masks = foreground_masks(clip.frames, scene_background(clip.frames), 0.1)
        assert [label.level for label in window_labels(masks)] == clip.levels


def test_video_set_gives_protocol_roles_that_bench_index_and_train_accept(tmp_path, clips):
    """Without a sidecar a video is one test instance in three segments: queries from the
    first (one per level 1..6 reached), one database image from each of the others."""
    video = write_lossless_video(tmp_path / "mug.mkv", np.concatenate([clip.frames for clip in clips]))
    result = _video_set(str(video), "--out", str(tmp_path / "test"), "--max-frames", str(FRAMES))
    assert result.exit_code == 0, result.output
    rows = _rows(tmp_path / "test")
    queries = [row for row in rows if row["role"] == "query"]
    database = [row for row in rows if row["role"] == "database"]
    assert {row["trajectory"] for row in queries} == {0}
    assert [row["trajectory"] for row in database] == [1, 2]
    assert [row["blur_level"] for row in queries] == list(range(1, 7))
    assert {row["split"] for row in rows} == {"test"}
    bench = load_benchmark_set(tmp_path / "test")
    assert len(bench.queries) == 6 and len(bench.database) == 2
    assert len(source_from(tmp_path / "test").items) == len(rows)
    settings = json.loads((tmp_path / "test" / "video_set.json").read_text())
    assert settings["instances"][0]["name"] == "mug"
    assert settings["query_levels"] == {str(level): 1 for level in range(1, 7)}

    (tmp_path / "mug.mkv.json").write_text(json.dumps({"instances": [
        {"name": "mug", "split": "train", "segments": [[0, FRAMES], [FRAMES, 2 * FRAMES]]},
    ]}))
    result = _video_set(str(video), "--out", str(tmp_path / "train"), "--max-frames", "8")
    assert result.exit_code == 0, result.output
    items, table = manifest_items(tmp_path / "train")
    training = select_training_rows(items, table, tmp_path / "train" / "manifest.parquet")
    assert training.num_classes == 1 and len(training.items) == 16


def test_bad_and_short_videos_are_named_and_the_rest_written(tmp_path, clips):
    good = write_lossless_video(tmp_path / "good.mkv", np.concatenate([clip.frames for clip in clips]))
    short = write_lossless_video(tmp_path / "short.mkv", clips[0].frames[:20])
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    missing = tmp_path / "missing.mov"
    result = _video_set(str(broken), str(good), str(short), str(missing), "--out", str(tmp_path / "o"),
                        "--max-frames", "8")
    assert result.exit_code == 1
    assert f"skipped: {broken}: cannot be decoded" in result.stderr
    assert f"skipped: {missing}: not found" in result.stderr
    assert (f"skipped: {short}: segment [0, 6) of 'short' holds 6 frames, fewer than the 8 its "
            "longest window averages (lower --max-frames, or --segments)") in result.stderr
    assert {row["instance"] for row in _rows(tmp_path / "o")} == {0}  # good.mkv alone
    assert json.loads((tmp_path / "o" / "video_set.json").read_text())["skipped"] == [
        line.removeprefix("skipped: ") for line in result.stderr.splitlines()]

    result = _video_set(str(broken), "--out", str(tmp_path / "none"))
    assert result.exit_code == 1
    assert "no video could be used; nothing written" in result.stderr
    assert not (tmp_path / "none" / "manifest.parquet").exists()


@pytest.mark.parametrize(("sidecar", "message"), [
    ([], "must hold a JSON object"),
    ({"instances": [{"name": "a", "segments": [[0, 9]]}], "fps": 240},
     "top level: unknown keys ['fps']; expected some of ['background', 'instances']"),
    ({"instances": [{"name": "a", "segments": [[5, 5]]}]},
     "instances[0].segments[0] must be [start, stop] frame indices with 0 <= start < stop, got [5, 5]"),
    ({"instances": [{"name": "a", "split": "holdout", "segments": [[0, 9]]}]},
     "instances[0]: 'split' must be one of train, val, test, got 'holdout'"),
    ({"instances": [{"name": "a", "segments": [[0, 9]]}, {"name": "b", "segments": [[8, 20]]}]},
     "segments [0, 9] and [8, 20] overlap"),
    ({"instances": [{"name": "a", "segments": [[0, 9]]}, {"name": "a", "segments": [[9, 20]]}]},
     "instance 'a' is listed twice; give all its segments in one entry"),
])
def test_sidecar_errors_say_what_is_wrong(sidecar, message):
    with pytest.raises(ValueError) as caught:
        parse_sidecar(sidecar)
    assert str(caught.value) == message


def test_a_sidecar_error_names_the_sidecar_and_skips_its_video(tmp_path, clips):
    video = write_lossless_video(tmp_path / "a.mkv", clips[0].frames)
    (tmp_path / "a.mkv.json").write_text(json.dumps({"instances": [
        {"name": "a", "segments": [[0, 30]]}]}))
    result = _video_set(str(video), "--out", str(tmp_path / "o"), "--max-frames", "4")
    assert result.exit_code == 1
    assert f"{tmp_path / 'a.mkv.json'}: frames [0, 30] lie beyond the video's 25 frames" in result.stderr


def test_an_instance_named_differently_in_a_later_video_skips_that_video(tmp_path, clips):
    videos = []
    for name, split in (("a", "test"), ("b", "train")):
        videos.append(str(write_lossless_video(tmp_path / f"{name}.mkv", clips[0].frames)))
        (tmp_path / f"{name}.mkv.json").write_text(json.dumps({"instances": [
            {"name": "mug", "split": split, "segments": [[0, 12], [12, 25]]}]}))
    result = _video_set(*videos, "--out", str(tmp_path / "o"), "--max-frames", "4")
    assert result.exit_code == 1
    assert result.stderr == (f"skipped: {videos[1]}: instance 'mug' is category 'mug', split 'train' "
                             "here but 'mug', 'test' in an earlier video\n")
    assert {row["split"] for row in _rows(tmp_path / "o")} == {"test"}


def test_simulated_clips_need_one_instant_frame_per_step():
    with pytest.raises(ValueError, match=r"substeps=1\), got 0"):
        simulated_clips(SimConfig(height=HEIGHT, width=WIDTH), CATEGORY, INSTANCE, 1)
