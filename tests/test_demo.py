"""The demo's code path end to end on a tiny configuration with tiny checkpoints."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import benchmark.commands.demo as demo
from retrieval.model import BlurAwareNet, save_checkpoint
from retrieval.sim.layout import Preset


@pytest.fixture
def tiny_checkpoints(tmp_path):
    paths = []
    for seed, heads in enumerate((True, False)):
        torch.manual_seed(seed)
        net = BlurAwareNet("test_byobnet", embedding_dim=16, blur_head=heads, loc_head=heads)
        save_checkpoint(tmp_path / f"net{seed}", net.eval(), {"image_size": [32, 48]})
        paths.append(str(tmp_path / f"net{seed}"))
    return paths


def test_demo_synthesizes_indexes_queries_and_reports(tiny_checkpoints, tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "DEMO_PRESET", Preset(categories=2, instances=20, trajectories=3,
                                                    height=32, width=48, distractors=6))
    out = tmp_path / "demo"
    args = ["--out", str(out), "--device", "cpu", "--methods", ",".join(tiny_checkpoints), "-q"]
    result = CliRunner().invoke(demo.demo_command, args)
    assert result.exit_code == 0, result.output
    assert "BL6" in result.output and "demo finished" in result.output
    with Image.open(out / "demo_queries.png") as grid:
        assert grid.width > 0 and grid.height > 0
    index_manifest = json.loads((out / "index" / "manifest.json").read_text())
    roles = json.loads((out / "data" / "synth.json").read_text())["roles"]
    assert index_manifest["count"] == roles["database"] + roles["distractor"]
    assert index_manifest["model"]["name"] == tiny_checkpoints[0]  # the model that made the vectors
    report = json.loads((out / "report" / "report.json").read_text())
    assert [m["name"] for m in report["config"]["methods"]] == tiny_checkpoints
    assert list(report["results"]) == tiny_checkpoints
    assert (out / "report" / "map_by_blur_level.png").is_file()
    written = [line.removeprefix("wrote ") for line in result.output.splitlines()
               if line.startswith("wrote ")]  # a line for every file written
    grids = sorted(str(path) for path in (out / "report" / "grids").glob("*.png"))
    assert grids and set(grids) <= set(written)
    for name in ("demo_queries.png", "report/report.md", "report/report.json",
                 "report/map_by_blur_level.png"):
        assert str(out / name) in written
    assert len(written) == len(set(written)) == 4 + len(grids)
