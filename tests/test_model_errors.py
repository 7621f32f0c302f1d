"""A model that cannot be loaded is a usage error in every command, and an index records where its
model lives so that it is found again from any working directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from fakes import FakeEmbedder, write_pngs

from benchmark.commands.main import main
from indexer.api import build_index, source_from_folder
from retrieval.model import BlurAwareNet, available_checkpoints, save_checkpoint

MISSING = "no/such/checkpoint"


@pytest.fixture
def index_by_missing_model(tmp_path: Path) -> Path:
    """An index whose manifest names a checkpoint folder that no longer exists."""
    write_pngs(tmp_path / "db", 3)
    build_index(source_from_folder(tmp_path / "db"), FakeEmbedder(), tmp_path / "idx",
                progress=False, model_name=str(tmp_path / "gone"))
    return tmp_path / "idx"


def _commands(tmp: Path) -> dict[str, list[str]]:
    db, idx, image = tmp / "db", tmp / "idx", next((tmp / "db").rglob("*.png"))
    return {
        "index build": ["index", "build", str(db), "--out", str(tmp / "new"), "--model", MISSING],
        "index add": ["index", "add", str(idx), str(db), "--model", MISSING],
        "query": ["query", str(idx), str(image), "-k", "1", "--model", MISSING],
        "demo": ["demo", "--out", str(tmp / "demo"), "--methods", MISSING, "--device", "cpu"],
        "bench map": ["bench", "map", "--data", str(db), "--methods", MISSING, "--device", "cpu"],
        "bench speed": ["bench", "speed", "--model", MISSING, "--device", "cpu"],
    }


@pytest.mark.parametrize("command", ["index build", "index add", "query", "demo", "bench map",
                                     "bench speed"])
def test_a_missing_model_is_a_usage_error_naming_what_to_pass(
        command: str, index_by_missing_model: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, _commands(tmp_path)[command])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert f"{MISSING!r} is neither a checkpoint folder nor a shipped name" in result.stderr
    assert ", ".join(available_checkpoints()) in result.stderr


def test_a_corrupt_checkpoint_is_a_usage_error_with_its_reason(tmp_path: Path) -> None:
    write_pngs(tmp_path / "db", 2)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    result = CliRunner().invoke(main, ["index", "build", str(tmp_path / "db"), "--out",
                                       str(tmp_path / "idx"), "--model", str(tmp_path / "broken")])
    assert result.exit_code == 2
    assert "cannot be loaded" in result.stderr and "not valid JSON" in result.stderr


def test_query_with_the_index_model_gone_says_which_fingerprint_to_bring(
        index_by_missing_model: Path, tmp_path: Path) -> None:
    image = next((tmp_path / "db").rglob("*.png"))
    result = CliRunner().invoke(main, ["query", str(index_by_missing_model), str(image), "-k", "1"])
    assert result.exit_code == 2
    assert "was built with it (fingerprint fake-model-v1)" in result.stderr


def test_serve_with_the_index_model_gone_is_a_usage_error(index_by_missing_model: Path) -> None:
    pytest.importorskip("fastapi")
    result = CliRunner().invoke(main, ["serve", str(index_by_missing_model), "--device", "cpu"])
    assert result.exit_code == 2
    assert "cannot serve" in result.output and "gone" in result.output


def test_an_index_built_with_a_relative_model_path_is_queried_from_elsewhere(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "work" / "models" / "net",
                    BlurAwareNet("test_byobnet", embedding_dim=16).eval(), {"image_size": [32, 48]})
    (image,) = write_pngs(tmp_path / "work" / "db", 1)
    monkeypatch.chdir(tmp_path / "work")
    built = CliRunner().invoke(main, ["index", "build", "db", "--out", "idx", "--model",
                                      "models/net", "--device", "cpu", "-q"])
    assert built.exit_code == 0, built.output
    manifest = json.loads((tmp_path / "work" / "idx" / "manifest.json").read_text())
    assert manifest["model"]["name"] == str(tmp_path / "work" / "models" / "net")

    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    found = CliRunner().invoke(main, ["query", "../work/idx", str(image), "-k", "1", "--json",
                                      "--device", "cpu"])
    assert found.exit_code == 0, found.output
    assert json.loads(found.stdout)["results"][0]["hits"][0]["path"] == str(image)


def test_a_shipped_model_is_recorded_by_its_name(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmark.commands import index as cli

    monkeypatch.setattr(cli, "load_embedder", lambda *args: FakeEmbedder())
    write_pngs(tmp_path / "db", 2)
    result = CliRunner().invoke(main, ["index", "build", str(tmp_path / "db"), "--out",
                                       str(tmp_path / "idx"), "--model", "standard", "-q"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "idx" / "manifest.json").read_text())["model"]["name"] == "standard"
