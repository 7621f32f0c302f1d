"""The index speed benchmark at toy scale: its figures are checked for shape, never for speed."""

from __future__ import annotations

import json

import faiss
import numpy as np
import pytest

from benchmark.index_speed import (
    SPREAD,
    brute_force_top_k,
    faiss_threads,
    format_summary,
    latency_summary,
    mixture_points,
    resident_bytes,
    run_index_benchmark,
    serialized_bytes,
    synthetic_dataset,
    versus_brute_force,
)
from indexer.factory import EXACT_FACTORY, auto_factory
from indexer.tuning import exact_neighbours

N, DIM, QUERIES, THRESHOLD = 20_000, 32, 100, 1_000


@pytest.fixture(scope="module")
def report() -> dict:
    return run_index_benchmark(n=N, dim=DIM, queries=QUERIES, k=100, seed=0,
                               brute_force_queries=10, progress=False,
                               exact_threshold=THRESHOLD, latency_queries=10)


def test_report_describes_the_run_and_survives_json(report: dict) -> None:
    config = report["config"]
    assert (config["n"], config["dim"], config["queries"], config["k"]) == (N, DIM, QUERIES, 100)
    assert config["device"] == "cpu" and config["faiss_version"] == faiss.__version__
    assert config["generator"]["clusters"] == N // 100
    assert set(report["indexes"]) == {"exact", "auto"}
    assert json.loads(json.dumps(report)) == report


def test_each_index_is_built_the_way_index_build_would(report: dict) -> None:
    exact, auto = report["indexes"]["exact"], report["indexes"]["auto"]
    assert exact["factory"] == EXACT_FACTORY and exact["nprobe"] is None
    assert auto["factory"] == auto_factory(N, THRESHOLD) == "IVF512,Flat"
    assert auto["nprobe"] in {2 ** p for p in range(10)} and auto["tuned_recall"] >= 0.95


def test_figures_are_positive_and_consistent(report: dict) -> None:
    for figures in report["indexes"].values():
        for key in ("add_seconds", "build_seconds", "batch_qps", "single_qps", "p50_ms"):
            assert figures[key] > 0, key
        assert figures["p99_ms"] >= figures["p50_ms"]
        stages = figures["train_seconds"] + figures["add_seconds"] + figures["tune_seconds"]
        assert figures["build_seconds"] == pytest.approx(stages)
        assert figures["index_bytes"] >= N * DIM * 4  # both store every vector uncompressed
        assert isinstance(figures["rss_delta_bytes"], int)


def test_recall_is_measured_against_exact_search(report: dict) -> None:
    assert report["indexes"]["exact"]["recall"] == 1.0
    assert 0.0 <= report["indexes"]["auto"]["recall"] <= 1.0
    brute = report["brute_force"]
    assert brute["queries"] == 10 and brute["recall"] == 1.0
    assert brute["single_qps"] > 0 and brute["p99_ms"] >= brute["p50_ms"] > 0


def test_every_index_is_compared_with_brute_force(report: dict) -> None:
    for figures in report["indexes"].values():
        versus = figures["versus_brute_force"]
        assert versus["qps_ratio"] > 0 and versus["latency_ratio"] > 0
        assert versus["meets_recall"] == (figures["recall"] >= 0.95)
        assert isinstance(versus["meets_20x"], bool)


def test_summary_lists_every_index_and_the_brute_force(report: dict) -> None:
    summary = format_summary(report)
    assert "IDMap2,Flat" in summary and "IVF512,Flat" in summary
    assert "auto vs brute force" in summary and "matmul+argsort" in summary


def test_brute_force_returns_the_exact_neighbours() -> None:
    database, queries = synthetic_dataset(3_000, 5, 16, seed=3, clusters=30)
    truth = exact_neighbours(database, np.arange(3_000), queries, 20)
    found = np.stack([brute_force_top_k(database, query, 20) for query in queries])
    np.testing.assert_array_equal(found, truth)


def test_brute_force_on_a_hand_computed_case() -> None:
    database = np.array([[1, 0], [0, 1], [0.6, 0.8], [-1, 0]], dtype=np.float32)
    query = np.array([1, 0], dtype=np.float32)  # scores 1, 0, 0.6, -1
    assert brute_force_top_k(database, query, 3).tolist() == [0, 2, 1]


def test_synthetic_dataset_is_seeded_unit_float32_with_held_out_queries() -> None:
    database, queries = synthetic_dataset(1_000, 50, 24, seed=7, clusters=10)
    assert database.shape == (1_000, 24) and queries.shape == (50, 24)
    assert database.dtype == queries.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(database, axis=1), 1.0, atol=1e-5)
    again, _ = synthetic_dataset(1_000, 50, 24, seed=7, clusters=10)
    other, _ = synthetic_dataset(1_000, 50, 24, seed=8, clusters=10)
    np.testing.assert_array_equal(database, again)
    assert not np.array_equal(database, other)
    assert (queries @ database.T).max() < 1 - 1e-4  # no query is a database row


def test_points_sit_at_the_documented_angle_from_their_centre() -> None:
    centre = np.eye(128, dtype=np.float32)[:1]
    points = mixture_points(centre, 2_000, SPREAD, np.random.default_rng(0))
    expected = 1 / np.sqrt(1 + SPREAD**2)  # noise of norm ~SPREAD, orthogonal to the centre
    assert float((points @ centre[0]).mean()) == pytest.approx(expected, abs=0.01)


def test_serialized_bytes_matches_faiss_serialization() -> None:
    index = faiss.IndexFlatIP(8)
    index.add(np.random.default_rng(0).standard_normal((100, 8), dtype=np.float32))
    assert serialized_bytes(index) == len(faiss.serialize_index(index))


@pytest.mark.skipif(resident_bytes() is None, reason="no /proc on this system")
def test_resident_bytes_follow_an_allocation() -> None:
    before = resident_bytes()
    block = np.ones(16 * 2**20, dtype=np.float32)  # 64 MiB, every page touched
    assert resident_bytes() - before >= 48 * 2**20
    del block


def test_latency_summary_on_hand_computed_times() -> None:
    summary = latency_summary([0.001, 0.003])
    assert summary["single_qps"] == pytest.approx(500.0)
    assert summary["p50_ms"] == pytest.approx(2.0)
    assert summary["p99_ms"] == pytest.approx(2.98)  # linear interpolation between 1 and 3 ms


def test_twenty_fold_is_required_of_throughput_and_latency() -> None:
    brute = {"single_qps": 10.0, "p50_ms": 100.0}
    fast = {"batch_qps": 400.0, "p50_ms": 2.0, "recall": 0.96}
    slow_single = {"batch_qps": 400.0, "p50_ms": 10.0, "recall": 0.99}
    assert versus_brute_force(fast, brute) == {
        "qps_ratio": 40.0, "latency_ratio": 50.0, "meets_20x": True, "meets_recall": True}
    assert versus_brute_force(slow_single, brute)["meets_20x"] is False


def test_threads_are_restored_after_the_block() -> None:
    before = faiss.omp_get_max_threads()
    with faiss_threads(1):
        assert faiss.omp_get_max_threads() == 1
    assert faiss.omp_get_max_threads() == before


@pytest.mark.parametrize("arguments, message", [
    ({"n": 50, "k": 100}, "larger than the database"),
    ({"queries": 10, "brute_force_queries": 11}, "brute_force_queries"),
    ({"factories": ("auto", "auto")}, "distinct"),
    ({"factories": ()}, "non-empty"),
    ({"omp_threads": 0}, "omp_threads"),
    ({"dim": 0}, "positive"),
    ({"spread": 0.0}, "spread"),
])
def test_bad_arguments_are_refused_before_any_work(arguments: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        run_index_benchmark(**{"n": 1_000, "progress": False, **arguments})
