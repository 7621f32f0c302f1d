"""The index commands with a real (tiny) checkpoint and real rendered files, not fakes."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from benchmark.commands.main import main
from retrieval.manifest import read_manifest
from retrieval.model import BlurAwareNet, save_checkpoint
from retrieval.sim.config import SimConfig
from retrieval.sim.layout import Preset
from retrieval.synth import synthesize


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    preset = Preset(categories=1, instances=20, trajectories=3, height=32, width=48, distractors=4)
    synthesize(root / "data", preset, SimConfig(height=32, width=48), splits=("test",), progress=False)
    torch.manual_seed(0)
    save_checkpoint(root / "net", BlurAwareNet("test_byobnet", embedding_dim=16).eval(),
                    {"image_size": [32, 48]})
    result = CliRunner().invoke(main, ["index", "build", str(root / "data"), "--out", str(root / "idx"),
                                       "--model", str(root / "net"), "--device", "cpu", "-q"])
    assert result.exit_code == 0, result.output
    return root


def test_every_indexed_image_finds_itself_first(built):
    paths = [str(built / "data" / p) for p in read_manifest(built / "data")["path"].to_pylist()]
    result = CliRunner().invoke(main, ["query", str(built / "idx"), *paths, "-k", "1", "--json",
                                       "--model", str(built / "net"), "--device", "cpu", "-q"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    assert answer["skipped"] == []
    assert [r["query"] for r in answer["results"]] == paths
    for result_row in answer["results"]:
        assert result_row["hits"][0]["path"] == result_row["query"]
        assert result_row["hits"][0]["score"] == pytest.approx(1.0, abs=1e-4)


def test_a_broken_query_is_skipped_and_the_rest_answered(built, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_text("not an image")
    good = str(built / "data" / read_manifest(built / "data")["path"][0].as_py())
    result = CliRunner().invoke(main, ["query", str(built / "idx"), good, str(broken), "--json",
                                       "-k", "2", "--model", str(built / "net"), "--device", "cpu", "-q"])
    assert result.exit_code == 1
    answer = json.loads(result.output)
    assert len(answer["results"]) == 1 and len(answer["results"][0]["hits"]) == 2
    assert answer["skipped"][0]["path"] == str(broken) and "not an image" in answer["skipped"][0]["error"]


def test_another_model_is_refused(built, tmp_path):
    torch.manual_seed(1)
    save_checkpoint(tmp_path / "other", BlurAwareNet("test_byobnet", embedding_dim=16).eval(),
                    {"image_size": [32, 48]})
    good = str(built / "data" / read_manifest(built / "data")["path"][0].as_py())
    result = CliRunner().invoke(main, ["query", str(built / "idx"), good, "--model", str(tmp_path / "other"),
                                       "--device", "cpu", "-q"])
    assert result.exit_code != 0
    assert "fingerprint" in result.output.lower()
