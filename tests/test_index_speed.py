"""The index speed benchmark at toy scale: figures with known answers (recall of exact search, sizes
of the stored vectors, an under-probed IVF index and its tuning), never speed.

FAISS and exact search may order ids of equal scores differently, so neighbour lists are compared
tie-tolerantly: a returned id counts when it scores at least the exact k-th score.
"""

from __future__ import annotations

import json
import mmap

import faiss
import numpy as np
import pytest

from benchmark.index_speed import (
    SPREAD,
    brute_force_top_k,
    faiss_threads,
    latency_summary,
    mixture_points,
    resident_bytes,
    run_index_benchmark,
    serialized_bytes,
    synthetic_dataset,
    versus_brute_force,
)
from benchmark.index_speed_summary import format_summary
from indexer.build import build_faiss_index
from indexer.factory import EXACT_FACTORY, auto_factory
from indexer.tuning import (
    K_FACTORS,
    TARGET_RECALL,
    exact_neighbours,
    nprobe_steps,
    set_nprobe,
    tune_nprobe,
)

N, DIM, QUERIES, THRESHOLD = 20_000, 32, 100, 1_000
ROW_BYTES = 4 * DIM + 8  # a float32 vector and its int64 id
SCORE_TOLERANCE = 1e-5  # FAISS and numpy sum float32 products in different orders


def tie_tolerant_recall(found: np.ndarray, database: np.ndarray, queries: np.ndarray) -> float:
    """Share of found ids (distinct per query) scoring at least the exact k-th best score."""
    k = found.shape[1]
    assert all(len(set(row[row >= 0].tolist())) == (row >= 0).sum() for row in found)
    scores = queries @ database.T
    kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1 : k]
    found_scores = np.take_along_axis(scores, np.where(found >= 0, found, 0), axis=1)
    return float(((found >= 0) & (found_scores >= kth - SCORE_TOLERANCE)).sum() / found.size)


@pytest.fixture(scope="module")
def clustered() -> tuple[np.ndarray, np.ndarray]:
    """3,000 database vectors around 30 overlapping clusters, 100 held-out queries."""
    return synthetic_dataset(3_000, 100, 16, seed=0, clusters=30)


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
    assert auto["factory"] == auto_factory(N, THRESHOLD, DIM) == "IDMap2,IVF512,PQ16x4fs,RFlat"
    assert auto["nprobe"] in nprobe_steps(512) and auto["tuned_recall"] >= 0.95
    assert auto["k_factor"] in K_FACTORS


def test_index_sizes_are_those_of_the_stored_vectors(report: dict) -> None:
    # Both store every vector uncompressed with its id (the auto index in its refine stage); the
    # auto index adds 512 centroids, the PQ codebooks, per vector an 8-byte code and its list
    # entry's id, and per list up to 31 codes of padding (fast-scan blocks of 32); either adds a
    # header of well under 1 KB.
    exact, auto = report["indexes"]["exact"]["index_bytes"], report["indexes"]["auto"]["index_bytes"]
    assert N * ROW_BYTES <= exact <= N * ROW_BYTES + 1024
    centroids, codebooks = 512 * DIM * 4, 16 * 16 * 2 * 4
    assert N * (ROW_BYTES + 8 + 8) + centroids + codebooks <= auto
    assert auto <= N * (ROW_BYTES + 8 + 8) + centroids + codebooks + 512 * (31 * 8 + 64) + 4096


def test_recall_of_exact_search_is_one(report: dict) -> None:
    exact, brute = report["indexes"]["exact"], report["brute_force"]
    assert exact["recall"] == 1.0 and exact["versus_brute_force"]["meets_recall"] is True
    assert brute["queries"] == 10 and brute["recall"] == 1.0


def test_an_exact_index_finds_exactly_the_exact_neighbours_despite_ties(clustered) -> None:
    database, queries = clustered
    database = np.concatenate([database, database[:500]])  # duplicates: tied scores
    queries = np.concatenate([queries, database[:20]])  # queries with tied copies at rank 1-2
    built = build_faiss_index(database, np.arange(len(database)), EXACT_FACTORY, progress=False)
    scores, found = built.index.search(queries, 10)
    assert tie_tolerant_recall(found, database, queries) == 1.0
    np.testing.assert_allclose(scores, -np.sort(-(queries @ database.T), axis=1)[:, :10],
                               atol=SCORE_TOLERANCE)


def test_an_under_probed_ivf_index_misses_and_the_tuner_raises_nprobe(clustered) -> None:
    database, queries = clustered
    built = build_faiss_index(database, np.arange(len(database)), "IVF64,Flat", progress=False)
    truth = exact_neighbours(database, np.arange(len(database)), queries, 100)

    def recall_at(nprobe: int) -> float:
        set_nprobe(built.index, nprobe)
        return tie_tolerant_recall(built.index.search(queries, 100)[1], database, queries)

    assert recall_at(1) < 0.5  # one list of 64, clusters spill over several lists
    assert recall_at(64) == 1.0  # probing every list is exact search
    nprobe, recall = tune_nprobe(built.index, truth, queries)
    assert nprobe > 1 and recall >= TARGET_RECALL
    steps = nprobe_steps(64)
    previous = steps[steps.index(nprobe) - 1]
    assert recall_at(nprobe) >= TARGET_RECALL > recall_at(previous)  # the smallest that does


def test_summary_lists_every_index_and_the_brute_force(report: dict) -> None:
    summary = format_summary(report)
    assert "IDMap2,Flat" in summary and "IDMap2,IVF512,PQ16x4fs,RFlat" in summary
    assert "auto vs exact (IDMap2,Flat): " in summary and "x batch QPS" in summary
    assert "auto vs brute force" in summary and "matmul+argsort" in summary


def test_brute_force_returns_the_exact_neighbours() -> None:
    database, queries = synthetic_dataset(3_000, 5, 16, seed=3, clusters=30)
    found = np.stack([brute_force_top_k(database, query, 20) for query in queries])
    assert tie_tolerant_recall(found, database, queries) == 1.0
    assert (np.diff(np.take_along_axis(queries @ database.T, found, axis=1), axis=1) <= 0).all()


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
    # A fresh anonymous mapping: a heap block could reuse pages an earlier test left resident.
    with mmap.mmap(-1, 64 * 2**20) as block:
        before = resident_bytes()
        np.frombuffer(block, dtype=np.uint8)[:: mmap.PAGESIZE] = 1  # touch every page
        assert resident_bytes() - before >= 48 * 2**20


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
    assert versus_brute_force({**fast, "recall": 0.94}, brute)["meets_recall"] is False


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
