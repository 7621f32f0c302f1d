"""The measures behind `bench speed`: bare forward, rounds taken in turn, one query end to end.

The figures themselves are not asserted (machines are shared and noisy), only their structure.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from benchmark.index_speed import build_index_from_vectors
from benchmark.speed import _rates, forward_throughput, query_latency
from retrieval.embed import Embedder
from retrieval.images import ImageLoadError
from retrieval.model import BlurAwareNet


def test_forward_throughput_measures_and_restores_the_model_mode() -> None:
    torch.manual_seed(0)
    model = BlurAwareNet("test_byobnet", embedding_dim=16).train()
    rate = forward_throughput(model, (32, 48), batch_size=2, seconds=0.05)
    assert math.isfinite(rate) and rate > 0
    assert model.training


def test_compared_works_take_rounds_in_turn_until_each_has_run_long_enough(monkeypatch) -> None:
    clock, log = [0.0], []
    monkeypatch.setattr("benchmark.speed.time.perf_counter", lambda: clock[0])

    def work(name: str, items: int, seconds: float):
        def run(round_index: int) -> int:
            log.append((name, round_index))
            clock[0] += seconds
            return items
        return run

    tick = 1 / 1024  # exact in binary, so the sums below are exact
    rates = _rates({"slow": work("slow", 2, 4 * tick), "fast": work("fast", 1, tick)}, 10 * tick)
    # one warm-up round each, then rounds in turn until the fast one too has run 10 ticks
    assert log == [(name, r) for r in range(11) for name in ("slow", "fast")]
    assert rates == {"slow": 2 / (4 * tick), "fast": 1 / tick}


@pytest.fixture(scope="module")
def tiny_embedder() -> Embedder:
    torch.manual_seed(0)
    return Embedder.from_model(BlurAwareNet("test_byobnet", embedding_dim=16).eval(),
                               {"image_size": [32, 48]}, batch_size=4, workers=0)


def test_query_latency_times_each_stage_of_every_counted_query(tiny_embedder, tmp_path) -> None:
    rng = np.random.default_rng(0)
    files = []
    for number in range(3):
        files.append(tmp_path / f"q{number}.png")
        Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(files[-1])
    database = rng.standard_normal((500, 16)).astype(np.float32)
    database /= np.linalg.norm(database, axis=1, keepdims=True)
    index, _ = build_index_from_vectors("exact", database, "cpu")

    report = query_latency(tiny_embedder, index, files, k=10, queries=5, warmup=1)
    assert (report["queries"], report["warmup"], report["k"]) == (5, 1, 10)
    for stage in ("decode", "embed", "search"):
        assert 0 < report[stage]["p50_ms"] <= report[stage]["p99_ms"]
        assert report["end_to_end"]["p50_ms"] >= report[stage]["p50_ms"]
    assert report["end_to_end"]["single_qps"] == pytest.approx(
        1e3 / (1e3 / report["decode"]["single_qps"] + 1e3 / report["embed"]["single_qps"]
               + 1e3 / report["search"]["single_qps"]))


def test_query_latency_names_a_query_file_that_cannot_be_read(tiny_embedder, tmp_path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_text("not an image")
    index, _ = build_index_from_vectors("exact", np.eye(16, dtype=np.float32), "cpu")
    with pytest.raises(ImageLoadError, match="broken.png"):
        query_latency(tiny_embedder, index, [broken], k=1, queries=1, warmup=0)
    with pytest.raises(ValueError, match="queries >= 1"):
        query_latency(tiny_embedder, index, [broken], k=1, queries=0)
