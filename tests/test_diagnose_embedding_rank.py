"""scripts/diagnose_embedding_rank.py on a tiny trained model: spread, confusions, whitening."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from fakes import tiny_train_settings

from retrieval.sim.config import SimConfig
from retrieval.sim.layout import Preset
from retrieval.synth import synthesize
from retrieval.train import train

ROOT = Path(__file__).resolve().parents[1]


def test_the_diagnosis_reports_spread_confusions_and_whitened_scores(tmp_path):
    data = tmp_path / "data"
    synthesize(data, Preset(categories=3, instances=10, trajectories=3, height=48, width=64),
               SimConfig(height=48, width=64), progress=False)
    outcome = train(tiny_train_settings(data, tmp_path / "run", epochs=1))
    assert outcome.checkpoint is not None
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts/diagnose_embedding_rank.py"), str(outcome.checkpoint),
         "--data", str(data), "--distractors", "4", "--whiten-batches", "1", "--power", "0.25"],
        capture_output=True, text=True, check=True, cwd=ROOT)
    lines = result.stdout.splitlines()
    spread = re.fullmatch(r"val database vectors: 16 dimensions, participation ratio ([\d.]+); "
                          r"variance 50 % in (\d+), 90 % in (\d+), 99 % in (\d+) directions",
                          lines[0])
    assert spread, lines[0]
    ratio, *held = spread.groups()
    assert 1.0 <= float(ratio) <= 16.0
    assert [int(n) for n in held] == sorted(int(n) for n in held)
    assert re.fullmatch(r"val database images scored above a query's best positive \(\d+ "
                        r"queries\): \d+ of its category, \d+ of others \(3 categories\); .*",
                        lines[2])
    assert lines[3].startswith("as trained: mAP@100 ") and "among 4 distractors" in lines[3]
    assert lines[4].startswith("whitened, power 0.25: mAP@100 ")
    assert len(lines) == 5
