"""Simulator: blur severity, determinism, manifest, splits, roles, virtual rows, CLI errors."""

from __future__ import annotations

import math

import numpy as np
import pyarrow.compute as pc
import pytest
from click.testing import CliRunner
from PIL import Image

from benchmark.commands.main import main
from retrieval.images import load_rgb_array
from retrieval.manifest import MANIFEST_SCHEMA, manifest_items, read_manifest
from retrieval.sim import RenderRequest, SimConfig, blur_level, blur_severity, render_trajectories
from retrieval.sim.layout import PRESETS, Preset, instance_split
from retrieval.sim.objects import DISTRACTOR_BASE, object_spec, split_instance_id
from retrieval.sim.severity import blur_value, streak_box
from retrieval.synth import render_rows, synthesize

SMALL = SimConfig(height=48, width=64)


def _disk(radius: float, size: int = 41) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size] - size // 2
    return (xx**2 + yy**2 <= radius**2).astype(np.float64)


def test_sharp_opaque_disk_has_zero_severity_and_level_one():
    matte = _disk(12)
    assert blur_severity(matte) == 0.0
    assert blur_level(blur_severity(matte)) == 1


def test_known_coverage_matte():
    matte = np.zeros((20, 20))
    matte[5:15, 5:15] = 0.5  # erosion keeps the inner 8x8 block, all at 0.5
    matte[0, 0] = 1.0  # an isolated pixel is eroded away entirely
    assert blur_value(matte) == pytest.approx(0.5)
    assert blur_severity(matte) == pytest.approx(0.5)
    assert blur_level(0.5) == 5


def test_mixed_coverage_hand_computed():
    matte = np.zeros((7, 7))
    matte[1:6, 1:6] = 1.0
    matte[2:5, 2:5] = [[1.0, 0.2, 1.0], [0.4, 0.6, 1.0], [1.0, 1.0, 1.0]]
    # Erosion keeps the inner 3x3 only: mean = (7*1 ... ) -> (1+.2+1+.4+.6+1+1+1+1)/9
    assert blur_value(matte) == pytest.approx(7.2 / 9)


def test_empty_matte_and_edge_levels():
    assert blur_value(np.zeros((8, 8))) == 0.0
    assert blur_severity(np.zeros((8, 8))) == 1.0
    assert blur_level(1.0) == 10
    assert blur_level(0.0) == 1  # v = 1
    assert blur_level(0.1) == 1
    assert blur_level(0.30000000000000004) == 3  # float error does not push into level 4
    assert blur_level(0.3001) == 4
    with pytest.raises(ValueError):
        blur_level(1.5)
    with pytest.raises(ValueError):
        blur_value(np.zeros(5))


def test_streak_box_covers_matte():
    matte = np.zeros((10, 20))
    matte[2:4, 5:15] = 0.3
    assert streak_box(matte) == pytest.approx((0.5, 0.3, 0.5, 0.2))


def test_blur_grows_with_exposure_and_frames_are_deterministic():
    request = RenderRequest(category=3, instance=1, trajectory=4, exposures=(0, 5, 10))
    first = render_trajectories(SMALL, [request])[0]
    second = render_trajectories(SMALL, [request])[0]
    for exposure in (0, 5, 10):
        assert np.array_equal(first[exposure].image, second[exposure].image)
    severities = [blur_severity(first[e].alpha) for e in (0, 5, 10)]
    assert severities[0] < 0.05 < severities[1] < severities[2]
    assert first[0].image.shape == (48, 64, 3) and first[0].image.dtype == np.uint8


def test_row_renders_the_same_alone_or_in_a_batch():
    requests = [RenderRequest(c, 2, c + 1, (0, 3, 7)) for c in range(6)]
    together = render_trajectories(SMALL, requests)
    alone = render_trajectories(SMALL, [requests[4]])[0]
    for exposure in (0, 3, 7):
        assert np.array_equal(together[4][exposure].image, alone[exposure].image)
        assert np.array_equal(together[4][exposure].alpha, alone[exposure].alpha)


def test_objects_turn_out_of_plane():
    # A box rotating during the exposure sweeps another streak than one that only slides
    # (same random draws: only the rotation range differs).
    request = RenderRequest(category=2, instance=0, trajectory=0, exposures=(0, 10))
    turning = render_trajectories(SimConfig(height=64, width=64), [request])[0]
    sliding = render_trajectories(SimConfig(height=64, width=64, max_rotation_deg=0.0), [request])[0]
    assert np.array_equal(turning[0].alpha, sliding[0].alpha)  # same start pose
    assert not np.array_equal(turning[10].alpha, sliding[10].alpha)


def test_instances_of_a_category_share_shape_and_family_but_not_texture():
    # Instance identity must be visible: every instance draws its own colours and pattern
    # (palettes turned round one colour wheel made unseen instances indistinguishable once
    # lit), while the shape template and the family of pattern kinds stay the category's.
    specs = [object_spec(3, instance) for instance in range(40)]
    colours = np.stack([spec.colors.reshape(-1) for spec in specs])
    gaps = np.linalg.norm(colours[:, None] - colours[None], axis=-1)[np.triu_indices(len(specs), 1)]
    assert np.median(gaps) > 0.3 and (gaps > 0.05).all()
    assert all(np.array_equal(spec.part_active, specs[0].part_active) for spec in specs)
    kinds = {(bool(s.pattern[6] > 0), bool(s.pattern[8] > 0), bool(s.pattern[9] > 0),
              bool(s.pattern[11] > 0)) for s in specs}
    assert len(kinds) == 2  # both kinds of the category's family, and only those
    frequencies = {round(float(s.pattern[6]), 6) for s in specs if s.pattern[6] > 0}
    assert len(frequencies) > 5


def test_splits_depend_on_instance_only():
    counts = {"train": 0, "val": 0, "test": 0}
    for category in range(40):
        for instance in range(40):
            counts[instance_split(category, instance)] += 1
    assert counts == {"train": 1120, "val": 240, "test": 240}
    assert instance_split(5, DISTRACTOR_BASE + 3) == "distractor"


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    preset = Preset(categories=3, instances=20, trajectories=4, height=48, width=64, distractors=12)
    synthesize(out, preset, SMALL, progress=False)
    return out, preset


def test_manifest_schema_and_ranges(tiny_dataset):
    out, _ = tiny_dataset
    table = read_manifest(out / "manifest.parquet")
    assert table.schema.names == MANIFEST_SCHEMA.names
    assert table["image_id"].to_pylist() == list(range(table.num_rows))
    severity = table["blur_severity"].to_numpy()
    assert np.all((severity >= 0) & (severity <= 1))
    levels = table["blur_level"].to_numpy()
    assert np.all((levels >= 1) & (levels <= 10))
    expected = [max(1, math.ceil(round(10 * float(s), 6))) for s in severity]
    assert levels.tolist() == expected
    for name in ("bbox_cx", "bbox_cy", "bbox_w", "bbox_h"):
        values = table[name].to_numpy()
        assert np.all((values >= 0) & (values <= 1))
    assert set(table["role"].to_pylist()) == {"train", "val", "query", "database", "distractor"}
    for path in table["path"].to_pylist():
        assert (out / path).is_file()


def test_query_levels_cover_one_to_six(tiny_dataset):
    out, _ = tiny_dataset
    table = read_manifest(out / "manifest.parquet")
    queries = table.filter(pc.equal(table["role"], "query"))
    levels = queries["blur_level"].to_numpy()
    assert set(levels.tolist()) <= set(range(1, 7))
    shares = np.bincount(levels, minlength=7)[1:7] / len(levels)
    assert np.all(shares >= 0.10), shares


def test_splits_and_roles_are_disjoint(tiny_dataset):
    out, _ = tiny_dataset
    rows = read_manifest(out / "manifest.parquet").to_pylist()
    split_of: dict[int, set] = {}
    for row in rows:
        split_of.setdefault(row["instance"], set()).add(row["split"])
    assert all(len(splits) == 1 for splits in split_of.values())
    query_traj = {(r["instance"], r["trajectory"]) for r in rows if r["role"] == "query"}
    db_traj = {(r["instance"], r["trajectory"]) for r in rows if r["role"] == "database"}
    assert query_traj and db_traj and not query_traj & db_traj
    # one database image per database trajectory
    db_rows = [r for r in rows if r["role"] == "database"]
    assert len(db_rows) == len(db_traj)
    distractors = {r["instance"] for r in rows if r["role"] == "distractor"}
    assert all(split_instance_id(i)[1] >= DISTRACTOR_BASE for i in distractors)
    assert not distractors & {r["instance"] for r in rows if r["role"] != "distractor"}


def test_same_arguments_give_byte_identical_output(tiny_dataset, tmp_path):
    out, preset = tiny_dataset
    synthesize(tmp_path, preset, SMALL, progress=False)
    assert (tmp_path / "manifest.parquet").read_bytes() == (out / "manifest.parquet").read_bytes()
    table = read_manifest(out / "manifest.parquet")
    for path in table["path"].to_pylist()[::37]:
        assert (tmp_path / path).read_bytes() == (out / path).read_bytes()


def test_virtual_rows_render_the_stored_pixels(tiny_dataset, tmp_path):
    out, preset = tiny_dataset
    synthesize(tmp_path, preset, SMALL, virtual=True, progress=False)
    stored, _ = manifest_items(out)
    virtual, table = manifest_items(tmp_path)
    assert table["path"].null_count == table.num_rows
    picks = list(range(0, len(stored), 29))
    pixels = render_rows([virtual[i] for i in picks])
    for index, image in zip(picks, pixels):
        assert np.array_equal(image, load_rgb_array(stored[index].path)), stored[index].describe()


def test_every_preset_has_a_sensible_plan():
    for preset in PRESETS.values():
        assert preset.categories >= 4 and preset.instances >= 20


@pytest.mark.parametrize(
    "args, message",
    [
        (["--size", "10x10"], "between 16 and 4096"),
        (["--size", "big"], "HEIGHTxWIDTH"),
        (["--preset", "huge"], "huge"),
        (["--categories", "0"], "0"),
        (["--trajectories", "-1"], "-1"),
        (["--splits", "train,bogus"], "subset of train,val,test"),
    ],
)
def test_bad_synth_arguments_give_click_errors(tmp_path, args, message):
    result = CliRunner().invoke(main, ["synth", str(tmp_path / "out"), *args])
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "out" / "manifest.parquet").exists()


def test_synth_command_writes_manifest_and_preview(tmp_path):
    result = CliRunner().invoke(main, [
        "synth", str(tmp_path / "ds"), "--preset", "tiny", "--categories", "1", "--instances", "3",
        "--trajectories", "2", "--size", "32x48", "--distractors", "5", "--virtual", "-q",
        "--preview", str(tmp_path / "preview.png"),
        "--preview-instances", str(tmp_path / "instances.png"),
    ])
    assert result.exit_code == 0, result.output
    table = read_manifest(tmp_path / "ds")
    assert table.filter(pc.equal(table["role"], "distractor")).num_rows == 5
    assert (tmp_path / "preview.png").stat().st_size > 0
    with Image.open(tmp_path / "instances.png") as sheet:  # 6 instances x (3 trajectories x 3)
        assert sheet.size == (9 * 48, 6 * (32 + 14))


def test_synth_can_render_only_the_test_split(tmp_path):
    preset = Preset(categories=1, instances=20, trajectories=2, height=32, width=48, distractors=3)
    synthesize(tmp_path, preset, SimConfig(height=32, width=48), splits=("test",), progress=False)
    roles = set(read_manifest(tmp_path)["role"].to_pylist())
    assert roles == {"query", "database", "distractor"}
