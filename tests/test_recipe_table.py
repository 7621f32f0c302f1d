"""scripts/recipe_table.py --curves: every validation of a run with the step minutes before it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def write_log(run: Path, records: list[dict]) -> None:
    run.mkdir(parents=True)
    lines = [json.dumps(record) for record in records]
    (run / "train_log.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def train(step: int, rate: float) -> dict:
    return {"event": "train", "step": step, "images_per_s": rate}


def validation(epoch: int, step: int, score: float, bl6: float, **extra) -> dict:
    return {"event": "validation", "epoch": epoch, "step": step, "map@100": score,
            "per_level": {"6": bl6}, **extra}


def test_curves_sum_step_minutes_and_replace_the_rates_after_a_break(tmp_path):
    # Intervals of 100 steps of 128 images. The ones right after the start and after the
    # validation logged 1 image/s (set-up and validation counted in): they take the run's
    # median, 64. Epoch 1: 200 + 100 + 100 s = 6.7 min; epoch 2: 200 + 200 s more = 13.3 min.
    write_log(tmp_path / "runs" / "a", [
        {"event": "start", "step": 0},
        train(100, 1.0), train(200, 128.0), train(300, 128.0),
        validation(1, 300, 0.5, 0.25,
                   without_distractors={"map@100": 0.75, "per_level": {"6": 0.5}}),
        train(400, 1.0), train(500, 64.0),
        validation(2, 500, 0.6, 0.3),
    ])
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts/recipe_table.py"), "--curves",
         str(tmp_path / "runs" / "a"), str(tmp_path / "runs" / "missing")],
        capture_output=True, text=True, check=True)
    lines = result.stdout.splitlines()
    assert lines[2:] == [
        "| a | 1 | 300 | 6.7 | 50.00 | 25.00 | 75.00 | 50.00 |",
        "| a | 2 | 500 | 13.3 | 60.00 | 30.00 | 60.00 | 30.00 |",
        "| missing | not run | | | | | | |",
    ]


def test_a_resumed_run_counts_the_steps_it_repeats_once(tmp_path):
    # Killed after step 300, resumed from the state of step 200: steps 201-300 are logged twice.
    write_log(tmp_path / "b", [
        {"event": "start", "step": 0},
        train(100, 64.0), train(200, 64.0), train(300, 64.0),
        {"event": "resume", "step": 200},
        train(300, 64.0), train(400, 64.0),
        validation(1, 400, 0.1, 0.05),
    ])
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts/recipe_table.py"), "--curves", str(tmp_path / "b")],
        capture_output=True, text=True, check=True)
    # 4 intervals of 100 steps x 128 images at 64 images/s: 800 s.
    assert result.stdout.splitlines()[2] == "| b | 1 | 400 | 13.3 | 10.00 | 5.00 | 10.00 | 5.00 |"


def test_step_minutes_count_the_batch_a_run_config_records(tmp_path):
    # The same log as above, 400 steps at 64 images/s, but its config.json records 128 x 2: 256
    # images a step, so 1,600 s (26.7 min) instead of the 800 s of the 128-image default.
    write_log(tmp_path / "c", [
        {"event": "start", "step": 0},
        train(100, 64.0), train(200, 64.0), train(300, 64.0), train(400, 64.0),
        validation(1, 400, 0.1, 0.05),
    ])
    (tmp_path / "c" / "config.json").write_text(json.dumps({"training": {"batch": [128, 2]}}),
                                                encoding="utf-8")
    script = str(ROOT / "scripts/recipe_table.py")
    curves = subprocess.run([sys.executable, script, "--curves", str(tmp_path / "c")],
                            capture_output=True, text=True, check=True)
    assert curves.stdout.splitlines()[2] == "| c | 1 | 400 | 26.7 | 10.00 | 5.00 | 10.00 | 5.00 |"
    table = subprocess.run([sys.executable, script, str(tmp_path), "c"],
                           capture_output=True, text=True, check=True)
    assert table.stdout.splitlines()[2].endswith("| 64 | 26.7 |")
