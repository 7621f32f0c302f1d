"""scripts/count_step_flops.py: a training step's operations per backbone, crop size and width."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROW = re.compile(r"(\S+) crop +(\d+) embedding +(\d+): +([\d.]+) GFLOP per step "
                 r"\(([\d.]+) x the first\)")


def _run(*options: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts/count_step_flops.py"), "--batch", "2",
         "--classes", "10", *options],
        capture_output=True, text=True, cwd=ROOT)


def _rows(*options: str) -> list[tuple[str, str, str, float, str]]:
    result = _run(*options)
    assert result.returncode == 0, result.stderr
    rows = [ROW.fullmatch(line) for line in result.stdout.splitlines()]
    assert rows and all(rows), result.stdout
    return [(b, c, d, float(flops), ratio) for b, c, d, flops, ratio in
            (row.groups() for row in rows)]


def test_a_wider_embedding_counts_more_operations_and_ratios_start_at_one():
    (first, second) = _rows("--embedding-dim", "16", "--embedding-dim", "64")
    assert first[:3] == ("plainnet_s", "48", "16") and second[:3] == ("plainnet_s", "48", "64")
    assert first[4] == "1.0000"
    assert second[3] > first[3] > 0 and float(second[4]) > 1.0


def test_a_larger_crop_counts_more_operations_for_every_width():
    rows = _rows("--embedding-dim", "16", "--embedding-dim", "32",
                 "--crop-size", "32", "--crop-size", "48")
    assert [(crop, dim) for _, crop, dim, _, _ in rows] == [
        ("32", "16"), ("32", "32"), ("48", "16"), ("48", "32")]
    small, large = rows[0][3], rows[2][3]
    assert large > small and rows[3][3] > rows[1][3]
    assert abs(float(rows[2][4]) - large / small) < 1e-3


def test_an_unknown_backbone_is_refused_by_name_before_counting():
    result = _run("--backbone", "nosuchnet")
    assert result.returncode == 2 and result.stdout == ""
    assert "nosuchnet: not a timm or plainnet backbone name" in result.stderr
