"""scripts/bench_map_1m_gpu.sh without a GPU: it says so, falls back to the CPU and runs the same
`bench map` end to end, here on the tiny preset with 200 virtual distractors and a toy network."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from retrieval.model import BlurAwareNet, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "bench_map_1m_gpu.sh"
BIN = Path(sys.executable).parent / "blur-retrieval"
DISTRACTORS = 200


def script_environment(folder: Path, **extra: str) -> dict[str, str]:
    """The script's settings for a tiny run into `folder`, with no GPU visible to torch or
    FAISS even on a machine that has one."""
    if shutil.which("bash") is None or not BIN.exists():
        pytest.skip("needs bash and the blur-retrieval entry point next to this Python")
    torch.manual_seed(0)
    net = BlurAwareNet("test_byobnet", embedding_dim=16, blur_head=True, loc_head=True)
    save_checkpoint(folder / "net", net.eval(), {"image_size": [32, 48]})
    env = {
        **os.environ, "BIN": str(BIN), "PYTHON": sys.executable, "OUT": str(folder / "report"),
        "PRESET": "tiny", "DISTRACTORS": str(DISTRACTORS), "METHODS": str(folder / "net"),
        "CUDA_VISIBLE_DEVICES": "", **extra,
    }
    if "DEVICE" not in extra:
        env.pop("DEVICE", None)
    return env


def run_script(folder: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), "-q", "--factory", "exact"], env=env, cwd=folder,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def fallback_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    folder = tmp_path_factory.mktemp("script")
    return run_script(folder, script_environment(folder)), folder / "report"


def test_without_a_gpu_the_script_says_why_and_runs_on_the_cpu(fallback_run) -> None:
    run, out = fallback_run
    assert run.returncode == 0, run.stdout + run.stderr
    assert "no GPU run here: torch sees no CUDA GPU" in run.stderr
    assert "Falling back to the CPU" in run.stderr
    assert f"bench map with {DISTRACTORS} distractors on cpu took" in run.stdout
    assert f"report in {out}/report.md" in run.stdout


def test_the_fallback_writes_the_whole_benchmark_report(fallback_run) -> None:
    run, out = fallback_run
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["device"] == "cpu" and report["config"]["workers"] == 0
    assert report["data"]["virtual_distractors"] == DISTRACTORS
    # the published layout: about 1,562 objects, each trajectory at all 11 exposures
    assert report["config"]["distractor_objects_requested"] == 1562
    assert report["config"]["distractor_exposures"] == 11
    assert (out / "report.md").is_file()


def test_device_cuda_insists_on_the_gpu_instead_of_falling_back(tmp_path: Path) -> None:
    run = run_script(tmp_path, script_environment(tmp_path, DEVICE="cuda"))
    assert run.returncode == 2 and "Falling back" not in run.stderr
    assert "device 'cuda' requested but torch sees no GPU" in run.stderr
    assert not (tmp_path / "report" / "report.json").exists()
