"""scripts/count_step_flops.py: a training step's operations per embedding width."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_a_wider_embedding_counts_more_operations_and_ratios_start_at_one():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts/count_step_flops.py"), "--batch", "2",
         "--classes", "10", "--embedding-dim", "16", "--embedding-dim", "64"],
        capture_output=True, text=True, check=True, cwd=ROOT)
    rows = [re.fullmatch(r"embedding +(\d+): +([\d.]+) GFLOP per step \(([\d.]+) x the first\)",
                         line) for line in result.stdout.splitlines()]
    assert all(rows) and len(rows) == 2
    (dim_a, flops_a, ratio_a), (dim_b, flops_b, ratio_b) = (row.groups() for row in rows)
    assert (dim_a, dim_b) == ("16", "64") and ratio_a == "1.0000"
    assert float(flops_b) > float(flops_a) > 0 and float(ratio_b) > 1.0
