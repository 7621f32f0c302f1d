"""`bench sim` and `bench speed` run end to end at toy scale and write well-formed JSON.

Timings are not asserted (machines are shared and noisy): only that every figure is there,
positive, and that the ratios are the quotients of the figures they compare.
"""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from benchmark.commands.main import main
from retrieval.model import BlurAwareNet, save_checkpoint


def test_bench_sim_reports_rates_and_ratios(tmp_path):
    out = tmp_path / "sim.json"
    result = CliRunner().invoke(main, ["bench", "sim", "--sizes", "32x48", "--batch", "2",
                                       "--seconds", "0.1", "--backbone", "test_byobnet",
                                       "--json", str(out)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:2] == ["size", "sim"]  # the table has its header
    assert lines[-1] == f"wrote {out}"
    row = json.loads(out.read_text())["results"][0]
    assert row["size"] == "32x48"
    forward = row["test_byobnet_forward_img_s"]
    assert min(row["simulator_dataset_img_s"], row["simulator_on_demand_img_s"], forward) > 0
    assert row["ratio_dataset"] == pytest.approx(row["simulator_dataset_img_s"] / forward)


def test_bench_speed_measures_every_stage(tmp_path):
    torch.manual_seed(0)
    net = BlurAwareNet("test_byobnet", embedding_dim=16)
    save_checkpoint(tmp_path / "net", net.eval(), {"image_size": [32, 48]})
    out = tmp_path / "speed.json"
    result = CliRunner().invoke(main, [
        "bench", "speed", "--model", str(tmp_path / "net"), "--batch-size", "4", "--images", "8",
        "--vectors", "2000", "--seconds", "0.1", "--queries", "6", "--workers", "0", "-q",
        "--json", str(out),
    ])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == f"wrote {out}"
    report = json.loads(out.read_text())
    embedding = report["embedding"]
    assert embedding["ratio"] == pytest.approx(embedding["embed_files_img_s"] / embedding["forward_img_s"])
    assert (embedding["images"], embedding["workers"], embedding["decode_threads"]) == (
        8, 0, torch.get_num_threads())
    query = report["query"]
    assert (query["queries"], query["k"], query["index"]) == (6, 100, "auto")
    assert query["factory"] == report["index"]["indexes"]["auto"]["factory"]
    for stage in ("decode", "embed", "search"):
        assert 0 < query[stage]["p50_ms"] <= query[stage]["p99_ms"]
        assert query["end_to_end"]["p50_ms"] >= query[stage]["p50_ms"]
    assert (f"one query end to end (6 queries of one PNG file, auto index {query['factory']} over 2,000"
            in result.output)
    assert report["simulator"]["dataset_img_s"] > 0
    assert set(report["index"]["indexes"]) == {"exact", "auto"}
    assert report["index"]["config"]["n"] == 2000 and report["index"]["config"]["dim"] == 16
