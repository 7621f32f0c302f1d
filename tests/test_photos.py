"""Photo appearance: sources and their split, the config, rendering, the stream, the footage."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from PIL import Image

from benchmark.commands.main import main
from retrieval.sim import photos as photos_module
from retrieval.sim.config import SimConfig
from retrieval.sim.layout import Preset
from retrieval.sim.photos import (
    PhotoError,
    instance_photo,
    load_photos,
    photo_files,
    trajectory_background,
)
from retrieval.sim.render import RenderRequest, render_trajectories
from retrieval.synth import synthesize
from retrieval.train import layers as layers_module
from retrieval.train.errors import TrainDataError
from retrieval.train.layers import bank_settings, build_layer_bank
from retrieval.train.stream import background_bank, open_composite_stream
from retrieval.video.simulated import simulated_clips

ROOT = Path(__file__).resolve().parents[1]
SIZE = dict(height=48, width=64)


def _write_pictures(folder: Path, count: int) -> Path:
    """`count` pictures with structure at several scales; picture 1 is grey."""
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        rng = np.random.default_rng(index)
        coarse = rng.random((6, 6, 3))
        pixels = (np.kron(coarse, np.ones((12, 12, 1))) * 200 + rng.random((72, 72, 3)) * 55)
        image = Image.fromarray(pixels.astype(np.uint8))
        (image.convert("L") if index == 1 else image).save(folder / f"p{index:02d}.png")
    (folder / "notes.txt").write_text("not a picture")
    return folder


@pytest.fixture(scope="module")
def picture_dir(tmp_path_factory) -> Path:
    return _write_pictures(tmp_path_factory.mktemp("pictures"), 6)


def test_a_folders_every_third_picture_is_held_out_and_the_splits_are_disjoint(picture_dir):
    train = [p.name for p in photo_files(str(picture_dir), "train")]
    heldout = [p.name for p in photo_files(str(picture_dir), "heldout")]
    assert train == ["p00.png", "p01.png", "p03.png", "p04.png"]
    assert heldout == ["p02.png", "p05.png"]
    loaded = load_photos(str(picture_dir), "train")
    assert loaded.texture.shape == (4, photos_module.TEXTURE_SIDE, photos_module.TEXTURE_SIDE, 3)
    assert loaded.grey == (False, True, False, False)
    assert float(loaded.texture.min()) >= 0.0 and float(loaded.texture.max()) <= 1.0


def test_unusable_sources_are_refused_with_the_folder_or_file_named(tmp_path, monkeypatch):
    with pytest.raises(PhotoError, match="missing-folder"):
        photo_files(str(tmp_path / "missing-folder"), "train")
    few = _write_pictures(tmp_path / "two", 2)
    with pytest.raises(PhotoError, match=r"two: no heldout photos among its 2 pictures"):
        photo_files(str(few), "heldout")
    broken = _write_pictures(tmp_path / "broken", 3)
    (broken / "p00.png").write_bytes(b"not a png")
    with pytest.raises(PhotoError, match=r"p00\.png: not a readable picture"):
        load_photos(str(broken), "train")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(PhotoError, match=r"pip install 'blur-retrieval\[photos\]'"):
        photo_files("skimage", "train")


def test_settings_without_photos_are_written_as_before_photos_existed(picture_dir):
    assert not {"photos", "photo_split", "photo_share"} & set(SimConfig().to_dict())
    dressed = SimConfig(photos=str(picture_dir), photo_split="heldout", photo_share=0.25)
    stored = json.loads(json.dumps(dressed.to_dict()))
    assert stored["photos"] == str(picture_dir) and stored["photo_split"] == "heldout"
    assert SimConfig.from_dict(stored) == dressed
    with pytest.raises(ValueError, match="photo_split"):
        SimConfig(photos="x", photo_split="test")
    with pytest.raises(ValueError, match="photo_share"):
        SimConfig(photos="x", photo_share=1.5)


def test_an_instance_keeps_its_photo_as_the_share_grows(picture_dir):
    low = SimConfig(**SIZE, photos=str(picture_dir), photo_share=0.3)
    high = replace(low, photo_share=0.8)
    pairs = [(category, instance) for category in range(4) for instance in range(25)]
    at_low = [instance_photo(low, c, i) for c, i in pairs]
    at_high = [instance_photo(high, c, i) for c, i in pairs]
    worn_low = [m for m in at_low if m is not None]
    assert 15 <= len(worn_low) <= 45 and len(worn_low) < sum(m is not None for m in at_high)
    assert all(h == m for m, h in zip(at_low, at_high) if m is not None)
    assert {m.index for m in worn_low} == {0, 1, 2, 3}  # every train photo is used
    grey = [m for m in worn_low if m.index == 1]
    assert grey and all(max(m.tint) == pytest.approx(1.0) and min(m.tint) < 1.0 for m in grey)
    assert all(m.tint == (1.0, 1.0, 1.0) for m in worn_low if m.index != 1)


def _render(config: SimConfig, requests: list[RenderRequest]) -> list[np.ndarray]:
    return [r[e].image for r in render_trajectories(config, requests) for e in sorted(r)]


REQUESTS = [RenderRequest(category, instance, 0, (0, 5)) for category, instance in
            ((0, 1), (3, 4), (5, 2))]


def test_a_share_of_zero_renders_the_procedural_pixels_and_a_share_of_one_does_not(picture_dir):
    plain = _render(SimConfig(**SIZE), REQUESTS)
    none = _render(SimConfig(**SIZE, photos=str(picture_dir), photo_share=0.0), REQUESTS)
    every = _render(SimConfig(**SIZE, photos=str(picture_dir), photo_share=1.0), REQUESTS)
    assert all(np.array_equal(a, b) for a, b in zip(plain, none))
    assert all(not np.array_equal(a, b) for a, b in zip(plain, every))


def test_a_photo_row_renders_to_the_same_bits_alone_or_in_a_batch(picture_dir):
    config = SimConfig(**SIZE, photos=str(picture_dir), photo_share=1.0)
    together = _render(config, REQUESTS)
    alone = [image for request in REQUESTS for image in _render(config, [request])]
    assert all(np.array_equal(a, b) for a, b in zip(together, alone))


def test_train_and_held_out_photos_dress_an_object_differently(picture_dir):
    train = SimConfig(**SIZE, photos=str(picture_dir), photo_split="train", photo_share=1.0)
    held_out = replace(train, photo_split="heldout")
    differ = [not np.array_equal(a, b) for a, b in zip(_render(train, REQUESTS),
                                                        _render(held_out, REQUESTS))]
    assert all(differ)


def test_photo_backgrounds_are_crops_of_the_splits_photos(picture_dir):
    config = SimConfig(**SIZE, photos=str(picture_dir), photo_share=0.5)
    seeds = range(40)
    backgrounds = [trajectory_background(config, seed, 48, 64) for seed in seeds]
    photo = [seed for seed in seeds if np.random.default_rng([19, seed]).random() < 0.5]
    procedural = SimConfig(**SIZE)
    for seed, image in zip(seeds, backgrounds):
        assert image.shape == (48, 64, 3) and image.dtype == np.uint8
        same = np.array_equal(image, trajectory_background(procedural, seed, 48, 64))
        assert same == (seed not in photo)
    assert 10 <= len(photo) <= 30


@pytest.fixture(scope="module")
def stream_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("photo_stream")
    synthesize(root, Preset(categories=2, instances=10, trajectories=3, **SIZE),
               SimConfig(**SIZE), splits=("val",), progress=False)
    return root


def test_the_stream_trains_on_photos_in_a_bank_of_its_own(stream_data, picture_dir):
    manifest = stream_data / "manifest.parquet"
    _, plain, plain_print = open_composite_stream(manifest, (48, 64), False, 0, progress=False)
    _, dressed, dressed_print = open_composite_stream(manifest, (48, 64), False, 0, progress=False,
                                                      photos=str(picture_dir), photo_share=1.0)
    banks = sorted(p.name for p in stream_data.iterdir() if p.name.startswith("train_layers"))
    assert len(banks) == 2 and banks[0] == "train_layers" and "photos" in banks[1]
    assert plain_print != dressed_print
    assert len(plain.bank) == len(dressed.bank)
    assert not np.array_equal(plain.bank.pixels, dressed.bank.pixels)
    photo_config = SimConfig(**SIZE, photos=str(picture_dir), photo_split="train", photo_share=1.0)
    np.testing.assert_array_equal(dressed.backgrounds, background_bank(photo_config))
    with pytest.raises(TrainDataError, match="nowhere"):
        open_composite_stream(manifest, (48, 64), False, 0, progress=False,
                              photos=str(stream_data / "nowhere"))


def test_a_changed_train_picture_changes_the_layer_banks_settings(tmp_path):
    folder = _write_pictures(tmp_path / "pictures", 6)
    preset = Preset(categories=2, instances=10, trajectories=3, **SIZE)
    config = SimConfig(**SIZE, photos=str(folder), photo_split="train", photo_share=0.5)
    before = bank_settings(preset, config)
    Image.new("RGB", (40, 40), (9, 9, 9)).save(folder / "p02.png")  # held out: not this bank's
    assert bank_settings(preset, config) == before
    Image.new("RGB", (40, 40), (9, 9, 9)).save(folder / "p00.png")  # a train picture
    after = bank_settings(preset, config)
    assert after["photo_sha256"] != before["photo_sha256"]
    assert {k: v for k, v in after.items() if k != "photo_sha256"} == {
        k: v for k, v in before.items() if k != "photo_sha256"}
    assert "photo_sha256" not in bank_settings(preset, SimConfig(**SIZE))


def test_a_picture_changed_during_the_build_leaves_no_bank(tmp_path, monkeypatch):
    folder = _write_pictures(tmp_path / "pictures", 6)
    preset = Preset(categories=1, instances=10, trajectories=1, **SIZE)
    config = SimConfig(**SIZE, exposures=2, photos=str(folder), photo_split="train",
                       photo_share=1.0)
    render_one_batch = layers_module._render_batch

    def render_then_edit(task):
        Image.new("RGB", (40, 40), (9, 9, 9)).save(folder / "p00.png")  # a train picture
        return render_one_batch(task)

    monkeypatch.setattr(layers_module, "_render_batch", render_then_edit)
    bank = tmp_path / "bank"
    with pytest.raises(TrainDataError, match="photographs changed while the layer bank"):
        build_layer_bank(bank, preset, config, progress=False, processes=1)
    assert not (bank / "layers.json").exists() and not (bank / "layers.npz").exists()
    monkeypatch.setattr(layers_module, "_render_batch", render_one_batch)
    build_layer_bank(bank, preset, config, progress=False, processes=1)  # the rerun builds it
    assert json.loads((bank / "layers.json").read_text()) == json.loads(
        json.dumps(bank_settings(preset, config)))


def test_train_refuses_a_photo_source_it_cannot_use(stream_data, tmp_path):
    result = CliRunner().invoke(main, ["train", str(stream_data), "--out", str(tmp_path / "run"),
                                       "--photos", str(tmp_path / "nowhere"), "-q"])
    assert result.exit_code != 0
    assert "nowhere: photos must be 'skimage' or a folder of pictures" in result.output


@pytest.mark.parametrize(("scene", "videos_made"), [("own", 6), ("shared", 2)])
def test_photo_footage_makes_videos_that_video_set_turns_into_a_benchmark(
        picture_dir, tmp_path, scene, videos_made):
    pytest.importorskip("av")
    videos = tmp_path / "videos"
    command = [sys.executable, str(ROOT / "scripts/photo_footage.py"), "--out", str(videos),
               "--categories", "2", "--instances", "1", "--frames", "13", "--size", "48x64",
               "--photos", str(picture_dir), "--scene", scene]
    subprocess.run(command, check=True, capture_output=True, cwd=ROOT)
    made = sorted(videos.glob("*.mkv"))
    assert len(made) == videos_made and all(Path(f"{video}.json").is_file() for video in made)
    assert not list(videos.glob(".*"))  # no partial files left
    out = tmp_path / "set"
    result = CliRunner().invoke(main, ["video-set", *map(str, made), "--out", str(out),
                                       "--max-frames", "12", "-q"])
    assert result.exit_code == 0, result.output
    rows = pq.read_table(out / "manifest.parquet").to_pylist()
    assert {row["role"] for row in rows} == {"query", "database"}
    assert len({row["instance"] for row in rows}) == 2
    assert len({(row["instance"], row["trajectory"]) for row in rows}) == 6
    assert max(row["blur_level"] for row in rows if row["role"] == "query") >= 3


def test_synth_dresses_a_data_set_in_held_out_photos_and_records_it(picture_dir, tmp_path):
    out = tmp_path / "dressed"
    args = ["synth", str(out), "--preset", "tiny", "--categories", "1", "--instances", "7",
            "--size", "48x64", "--splits", "test", "--photos", str(picture_dir),
            "--photo-split", "heldout", "--photo-share", "1", "-q"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    stored = json.loads((out / "synth.json").read_text())["sim"]
    assert (stored["photos"], stored["photo_split"], stored["photo_share"]) == (
        str(picture_dir), "heldout", 1.0)
    bad = CliRunner().invoke(main, [*args[:2], "--photos", str(tmp_path / "none"), "-q"])
    assert bad.exit_code == 2 and "none: photos must be" in bad.output


def test_clips_filmed_in_their_own_scenes_share_the_object_but_not_the_background(picture_dir):
    config = SimConfig(**SIZE, exposures=5, substeps=1, photos=str(picture_dir), photo_share=1.0)
    shared = simulated_clips(config, 1, 2, 3)
    own = simulated_clips(config, 1, 2, 3, own_scenes=True)
    assert all(np.array_equal(clip.scene, shared[0].scene) for clip in shared)
    assert np.array_equal(own[0].frames, shared[0].frames)
    assert not np.array_equal(own[1].scene, own[0].scene)
    assert all(a.levels == b.levels for a, b in zip(shared, own))
