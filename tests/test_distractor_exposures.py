"""Several exposures of one distractor trajectory (`bench map --distractor-exposures`): the rows
the layout makes, the benchmark set and report that use it, and the renders it saves."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from benchmark.commands.main import main
from benchmark.protocol import ProtocolError, load_benchmark_set
from retrieval.model import BlurAwareNet, save_checkpoint
from retrieval.sim import raycast, render
from retrieval.sim.config import SimConfig
from retrieval.sim.layout import Preset, distractor_table
from retrieval.sim.objects import DISTRACTOR_BASE
from retrieval.synth import render_rows, synthesize

EXPOSURES = SimConfig().exposures  # 11: exposures 0..10
MINI = Preset(categories=2, instances=3, trajectories=3, height=32, width=48, distractors=4)


@pytest.fixture(scope="module")
def mini(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("mini")
    synthesize(folder, MINI, SimConfig(height=32, width=48, seed=3), progress=False)
    return folder


def _keys(table: dict[str, np.ndarray]) -> list[tuple[int, int, int]]:
    """(category, instance, trajectory) of every row of a distractor table."""
    return list(zip(*(table[name].tolist() for name in ("category", "instance", "trajectory"))))


def _trajectory(row) -> tuple[int, int, int]:
    return row.category, row.instance, row.trajectory


def test_every_exposure_of_a_trajectory_comes_in_one_run_of_rows() -> None:
    table = distractor_table(5 * EXPOSURES, 2, 0, EXPOSURES, images_per_object=20,
                             exposures_per_trajectory=EXPOSURES)
    keys = _keys(table)
    for run in range(5):
        rows = slice(run * EXPOSURES, (run + 1) * EXPOSURES)
        assert len(set(keys[rows])) == 1
        assert table["exposure"][rows].tolist() == list(range(EXPOSURES))
    # Runs alternate over the categories; an instance takes ceil(20 / 11) = 2 trajectories.
    assert [keys[run * EXPOSURES] for run in range(5)] == [
        (0, DISTRACTOR_BASE, 0), (1, DISTRACTOR_BASE, 0), (0, DISTRACTOR_BASE, 1),
        (1, DISTRACTOR_BASE, 1), (0, DISTRACTOR_BASE + 1, 0)]


@pytest.mark.parametrize("per_trajectory, exposures", [(2, [0, 10]), (3, [0, 5, 10]),
                                                         (4, [0, 3, 7, 10])])
def test_fewer_exposures_are_spread_from_sharp_to_the_longest(per_trajectory, exposures) -> None:
    table = distractor_table(per_trajectory, 1, 0, EXPOSURES, exposures_per_trajectory=per_trajectory)
    assert table["exposure"].tolist() == exposures
    assert len(set(_keys(table))) == 1


def test_one_exposure_per_trajectory_is_the_default_layout() -> None:
    default = distractor_table(500, 40, 7, EXPOSURES, 64)
    explicit = distractor_table(500, 40, 7, EXPOSURES, 64, exposures_per_trajectory=1)
    assert all(np.array_equal(default[name], explicit[name]) for name in default)


@pytest.mark.parametrize("per_trajectory", [0, EXPOSURES + 1])
def test_exposures_per_trajectory_outside_the_simulators_are_refused(per_trajectory) -> None:
    with pytest.raises(ValueError, match=f"exposures per trajectory must be in 1..{EXPOSURES}"):
        distractor_table(10, 2, 0, EXPOSURES, exposures_per_trajectory=per_trajectory)


def test_the_benchmark_set_takes_its_virtual_distractors_in_runs(mini: Path) -> None:
    bench = load_benchmark_set(mini, distractors=4 + 3 * EXPOSURES, distractor_exposures=EXPOSURES)
    assert (bench.manifest_distractors, bench.virtual_distractors) == (4, 3 * EXPOSURES)
    first = len(bench.database) - bench.virtual_distractors
    rows = [bench.database[i] for i in range(first - 4, len(bench.database))]
    stored, virtual = rows[:4], rows[4:]
    assert all(row.path is None for row in virtual)
    # The manifest's own 4 distractors (one per trajectory) are not repeated, so the runs of
    # their trajectories lack those exposures; every run is one block of rows, exposures rising.
    images = {(*_trajectory(row), row.exposure) for row in rows}
    assert len(images) == len(rows)
    blocks = [_trajectory(row) for n, row in enumerate(virtual)
              if n == 0 or _trajectory(virtual[n - 1]) != _trajectory(row)]
    assert len(blocks) == len(set(blocks))
    for block in blocks:
        exposures = [row.exposure for row in virtual if _trajectory(row) == block]
        missing = {row.exposure for row in stored if _trajectory(row) == block}
        assert exposures == sorted(exposures) and set(exposures) | missing <= set(range(EXPOSURES))
    full = [block for block in blocks if block[1] == DISTRACTOR_BASE + 1]
    assert full and [row.exposure for row in virtual if _trajectory(row) == full[0]] == list(range(EXPOSURES))


@pytest.mark.parametrize("per_trajectory", [0, EXPOSURES + 1])
def test_the_benchmark_set_refuses_exposures_the_data_set_lacks(mini: Path, per_trajectory) -> None:
    with pytest.raises(ProtocolError, match=rf"manifest.parquet: distractor exposures must be in "
                                            rf"1..{EXPOSURES}.*got {per_trajectory}"):
        load_benchmark_set(mini, distractors=20, distractor_exposures=per_trajectory)


def _frames_cast(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Rows in every instant frame the renderer ray casts from now on."""
    real = render.render_frame_chunked
    counts: list[int] = []

    def counting(batch: raycast.ObjectBatch, *args):
        counts.append(int(batch.start.shape[0]))
        return real(batch, *args)

    monkeypatch.setattr(render, "render_frame_chunked", counting)
    return counts


def _longest_exposures(rows: list) -> int:
    """Steps 0..longest exposure, summed over the distinct trajectories of `rows`."""
    longest: dict[tuple, int] = {}
    for row in rows:
        longest[_trajectory(row)] = max(longest.get(_trajectory(row), 0), row.exposure)
    return sum(exposure + 1 for exposure in longest.values())


def test_a_run_of_exposures_costs_the_ray_casts_of_its_longest_alone(
        mini: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    count = 4 * EXPOSURES
    runs = load_benchmark_set(mini, distractors=4 + count, distractor_exposures=EXPOSURES).database
    single = load_benchmark_set(mini, distractors=4 + count).database
    in_runs = [runs[i] for i in range(len(runs) - count, len(runs))]
    one_each = [single[i] for i in range(len(single) - count, len(single))]
    frames = _frames_cast(monkeypatch)
    pixels = render_rows(in_runs)
    cast_in_runs = sum(frames)
    frames.clear()
    render_rows(one_each)
    # A trajectory costs one ray-cast frame per step up to its longest exposure, however many
    # of its exposures are asked for.
    assert cast_in_runs == _longest_exposures(in_runs) and sum(frames) == _longest_exposures(one_each)
    assert sum(frames) >= 3 * cast_in_runs
    # Sharing the render changes no pixel: each image is the one its row renders alone.
    last = len(runs) - 1
    assert np.array_equal(pixels[-1], render_rows([runs[last]])[0])


def test_bench_map_records_and_reports_the_exposures(tmp_path: Path) -> None:
    net = BlurAwareNet("test_byobnet", embedding_dim=16, blur_head=True, loc_head=True)
    save_checkpoint(tmp_path / "net", net.eval(), {"image_size": [32, 48]})
    out = tmp_path / "report"
    result = CliRunner().invoke(main, [
        "bench", "map", "--preset", "tiny", "--distractors", "120", "--distractor-exposures",
        str(EXPOSURES), "--methods", str(tmp_path / "net"), "--factory", "exact", "--device", "cpu",
        "--workers", "0", "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["distractor_exposures"] == EXPOSURES
    assert report["data"]["virtual_distractors"] == 120
    assert f"{EXPOSURES} exposures of each virtual distractor trajectory" in (out / "report.md").read_text()
    refused = CliRunner().invoke(main, [
        "bench", "map", "--preset", "tiny", "--distractors", "120", "--distractor-exposures", "12",
        "--methods", str(tmp_path / "net"), "--device", "cpu", "--out", str(tmp_path / "no"), "-q"])
    assert refused.exit_code != 0 and "distractor exposures must be in 1..11" in refused.output
    assert not (tmp_path / "no" / "report.json").exists()
