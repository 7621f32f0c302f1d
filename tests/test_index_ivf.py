"""Automatic index choice and nprobe tuning, on a 20k-vector set with a low exact threshold."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pytest
from click.testing import CliRunner
from fakes import FakeEmbedder, random_unit_vectors, virtual_source

from benchmark.commands.index import index_group
from indexer.api import build_index, open_index
from indexer.errors import InvalidFactoryError, UnsupportedOperationError
from indexer.factory import (
    auto_factory,
    create_index,
    ivf_list_count,
    pq_subquantizers,
    training_positions,
)
from indexer.tuning import (
    K_FACTORS,
    START_K_FACTOR,
    exact_neighbours,
    exact_top_k,
    nprobe_steps,
    recall_at_k,
    refine_stage,
    sample_queries,
    set_k_factor,
    set_nprobe,
    tune_index,
    tune_k_factor,
    tune_nprobe,
)

DIM = 16


@pytest.fixture(scope="module")
def ivf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ivf") / "idx"
    build_index(virtual_source(20_000), FakeEmbedder(dim=DIM), out, exact_threshold=1_000,
                progress=False)
    return out


def test_auto_builds_a_tuned_ivf_index_above_the_threshold(ivf_dir: Path) -> None:
    index = open_index(ivf_dir)
    info = index.info()
    assert info["factory"] == "IDMap2,IVF512,PQ8x4fs,RFlat"
    tuned = info["tuned"]
    assert tuned["recall"] >= 0.95 and tuned["recall_k"] == 100 and tuned["queries"] == 1000
    assert tuned["nprobe"] in nprobe_steps(512) and tuned["k_factor"] in K_FACTORS


def test_stored_recall_holds_on_fresh_queries(ivf_dir: Path) -> None:
    index = open_index(ivf_dir)
    embedder = FakeEmbedder(dim=DIM)
    database = embedder.vectors_of([{"row": n} for n in range(20_000)])
    queries = random_unit_vectors(200, DIM, seed=11)
    truth = exact_neighbours(database, np.arange(20_000), queries, 100)
    _, found = index.search_vectors(queries, k=100)
    assert recall_at_k(found, truth) >= 0.93  # tuned for 0.95 on another sample


def test_an_ivf_index_gives_back_the_vectors_it_holds(ivf_dir: Path) -> None:
    embedder = FakeEmbedder(dim=DIM)
    rows = [{"row": r} for r in (3, 4_000, 19_999)]
    index = open_index(ivf_dir)  # memory-mapped, read-only
    _, ids = index.search_vectors(embedder.vectors_of(rows), k=1)
    np.testing.assert_allclose(index.stored_vectors(ids[:, 0]), embedder.vectors_of(rows), atol=1e-6)


def test_ivf_finds_database_vectors_and_supports_removal(ivf_dir: Path, tmp_path: Path) -> None:
    embedder = FakeEmbedder(dim=DIM)
    rows = list(range(0, 20_000, 997))
    _, ids = open_index(ivf_dir).search_vectors(
        embedder.vectors_of([{"row": r} for r in rows]), k=1)
    assert ids[:, 0].tolist() == rows
    with pytest.raises(UnsupportedOperationError, match=r"'IDMap2,IVF512,PQ8x4fs,RFlat' index cannot"):
        open_index(ivf_dir, mmap=False).remove(ids=rows[:3])  # the refine stage cannot

    build_index(virtual_source(3_000), FakeEmbedder(dim=DIM), tmp_path / "flat-ivf",
                factory="IVF16,Flat", progress=False)
    index = open_index(tmp_path / "flat-ivf", mmap=False)
    index.remove(ids=rows[:3])
    _, ids = index.search_vectors(embedder.vectors_of([{"row": r} for r in rows[:3]]), k=5)
    assert not set(rows[:3]) & set(ids.ravel().tolist())


def test_ivf_index_is_memory_mapped(ivf_dir: Path) -> None:
    assert open_index(ivf_dir, mmap=True).info()["memory_mapped"] is True


@pytest.mark.parametrize(("n", "expected"), [
    (1, "IDMap2,Flat"), (100_000, "IDMap2,Flat"), (100_001, "IDMap2,IVF1024,PQ64x4fs,RFlat"),
    (1_000_000, "IDMap2,IVF4096,PQ64x4fs,RFlat"), (3_000_000, "IDMap2,IVF8192,PQ64x4fs,Refine(SQ8)"),
])
def test_auto_factory_by_size(n: int, expected: str) -> None:
    assert auto_factory(n) == expected


@pytest.mark.parametrize(("dim", "subquantizers"), [(128, 64), (48, 24), (7, 1), (1, 1), (9, 3)])
def test_pq_codes_cut_vectors_into_pairs_where_the_dimension_allows(dim: int, subquantizers: int
                                                                     ) -> None:
    assert pq_subquantizers(dim) == subquantizers
    assert auto_factory(200_000, dim=dim) == f"IDMap2,IVF2048,PQ{subquantizers}x4fs,RFlat"


def test_nprobe_steps_grow_by_about_a_factor_of_1_4_up_to_every_list() -> None:
    assert nprobe_steps(64) == [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64]
    assert nprobe_steps(1) == [1] and nprobe_steps(5) == [1, 2, 3, 4, 5]


def test_a_refine_stage_is_wrapped_for_ids_and_its_k_factor_is_tuned_and_reloaded(ivf_dir: Path
                                                                                   ) -> None:
    index, used = create_index("IVF4,PQ4x4fs,RFlat", 8)
    assert used == "IDMap2,IVF4,PQ4x4fs,RFlat" and isinstance(index, faiss.IndexIDMap2)
    tuned = open_index(ivf_dir).info()["tuned"]
    assert refine_stage(open_index(ivf_dir)._cpu).k_factor == tuned["k_factor"]


def test_the_smallest_k_factor_that_keeps_the_recall_is_chosen() -> None:
    vectors = random_unit_vectors(4_000, 16, seed=5)
    index, _ = create_index("IVF8,PQ4x4fs,RFlat", 16)
    index.train(vectors)
    index.add_with_ids(vectors, np.arange(4_000))
    queries = vectors[:100]
    scores, truth = exact_top_k(vectors, np.arange(4_000), queries, 20)
    set_nprobe(index, 8)  # every list: only the codes and the refine stage lose neighbours
    set_k_factor(index, K_FACTORS[0])
    top = recall_at_k(index.search(queries, 20)[1], truth)
    k_factor, recall = tune_k_factor(index, truth, queries, 0.9, None, top)
    assert recall >= 0.9 and refine_stage(index).k_factor == k_factor
    if k_factor > 1:
        smaller = K_FACTORS[K_FACTORS.index(k_factor) + 1]
        set_k_factor(index, smaller)
        assert recall_at_k(index.search(queries, 20)[1], truth) < 0.9


def coarse_refined_index(count: int = 5_000) -> tuple[faiss.Index, np.ndarray]:
    """Four lists of 4-byte codes: too coarse for 16 x k candidates to hold the exact top 20."""
    vectors = random_unit_vectors(count, 16, seed=3)
    index, _ = create_index("IVF4,PQ4x4fs,RFlat", 16)
    index.train(vectors)
    index.add_with_ids(vectors, np.arange(count))
    return index, vectors


def test_a_larger_k_factor_is_tried_when_every_list_misses_the_target() -> None:
    index, vectors = coarse_refined_index()
    queries = vectors[:200]
    truth = exact_neighbours(vectors, np.arange(len(vectors)), queries, 20)
    set_nprobe(index, 4)
    set_k_factor(index, START_K_FACTOR)
    assert recall_at_k(index.search(queries, 20)[1], truth) < 0.95  # every list, factor 16
    tuned = tune_index(index, vectors, np.arange(len(vectors)), np.arange(0), k=20)
    assert tuned["k_factor"] > START_K_FACTOR and tuned["recall"] >= 0.95
    assert refine_stage(index).k_factor == tuned["k_factor"]
    assert faiss.extract_index_ivf(index).nprobe == tuned["nprobe"]


def test_an_unreachable_target_leaves_the_largest_factor_and_every_list() -> None:
    index, vectors = coarse_refined_index()
    tuned = tune_index(index, vectors, np.arange(len(vectors)), np.arange(0), k=20, target=1.01)
    assert (tuned["k_factor"], tuned["nprobe"]) == (K_FACTORS[0], 4)
    assert tuned["recall"] >= 0.99  # 256 x 20 candidates: nearly every vector is re-scored


@pytest.mark.parametrize(("n", "nlist"), [(20_000, 512), (1_001, 16), (39, 1), (1, 1)])
def test_list_count_is_a_trainable_power_of_two(n: int, nlist: int) -> None:
    assert ivf_list_count(n) == nlist


def test_flat_factories_are_wrapped_for_stable_ids() -> None:
    index, used = create_index("Flat", 8)
    assert used == "IDMap2,Flat" and isinstance(index, faiss.IndexIDMap2)
    index, used = create_index("IVF4,Flat", 8)
    assert used == "IVF4,Flat"
    assert index.metric_type == faiss.METRIC_INNER_PRODUCT
    with pytest.raises(InvalidFactoryError, match="IVFx"):
        create_index("IVFx", 8)


def test_too_few_vectors_to_train_the_factory_are_named(tmp_path: Path) -> None:
    with pytest.raises(InvalidFactoryError, match=r"IVF64,Flat.*training points \(20\)"):
        build_index(virtual_source(20), FakeEmbedder(dim=DIM), tmp_path / "idx",
                    factory="IVF64,Flat", progress=False)


def test_training_sample_is_deterministic_and_bounded() -> None:
    index, _ = create_index("IVF4,Flat", 8)
    first = training_positions(index, 1_000)
    assert len(first) == 4 * 64 and np.array_equal(first, training_positions(index, 1_000))
    assert np.all(np.diff(first) > 0)
    assert np.array_equal(training_positions(index, 100), np.arange(100))


def test_recall_on_a_hand_computed_case() -> None:
    truth = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    found = np.array([[4, 3, 9, 1], [5, -1, -1, -1]])
    assert recall_at_k(found, truth) == pytest.approx((3 / 4 + 1 / 4) / 2)
    with pytest.raises(ValueError, match="same shape"):
        recall_at_k(found[:, :2], truth)


def test_recall_counts_a_result_tied_with_the_exact_cutoff() -> None:
    # Row 0: ids 3 and 9 score 0.5 like the exact 4th (id 4): exact search kept 4, the index 9.
    truth = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    found = np.array([[1, 2, 3, 9], [5, 6, 7, 10]])
    found_scores = np.array([[0.9, 0.8, 0.5, 0.5], [0.9, 0.8, 0.7, 0.5]], dtype=np.float32)
    cutoff = np.array([0.5, 0.6], dtype=np.float32)  # row 1: id 10 (0.5) is below the 4th (0.6)
    assert recall_at_k(found, truth) == pytest.approx((3 / 4 + 3 / 4) / 2)
    assert recall_at_k(found, truth, found_scores, cutoff) == pytest.approx((1 + 3 / 4) / 2)
    with pytest.raises(ValueError, match="both"):
        recall_at_k(found, truth, found_scores)


def test_tuning_reports_full_recall_when_the_index_returns_other_members_of_a_tie() -> None:
    # 300 copies of one vector: every query's exact top 100 is an arbitrary 100 of them.
    vectors = np.concatenate([np.tile(np.eye(4, dtype=np.float32)[:1], (300, 1)),
                              np.eye(4, dtype=np.float32)[1:]])
    index, _ = create_index("IDMap2,Flat", 4)
    ids = np.arange(len(vectors), dtype=np.int64)[::-1].copy()  # stored in another order
    index.add_with_ids(vectors[::-1].copy(), ids)
    tuned = tune_index(index, vectors, np.arange(len(vectors), dtype=np.int64),
                       np.zeros(0, np.int64), k=100)
    assert tuned == {}  # exact indexes are not tuned
    scores, truth = exact_top_k(vectors, np.arange(len(vectors), dtype=np.int64), vectors[:5], 100)
    found_scores, found = index.search(vectors[:5], 100)
    assert recall_at_k(found, truth) < 1.0
    assert recall_at_k(found, truth, found_scores, scores[:, -1]) == 1.0


def test_query_sample_avoids_the_training_sample() -> None:
    queries = sample_queries(1_000, np.arange(0, 1_000, 2), count=100)
    assert len(queries) == 100 and np.all(queries % 2 == 1)
    assert len(sample_queries(50, np.arange(50), count=100)) == 50


def test_tuning_stops_at_all_lists_when_the_target_is_out_of_reach() -> None:
    vectors = random_unit_vectors(2_000, 8, seed=2)
    index, _ = create_index("IVF16,Flat", 8)
    index.train(vectors)
    index.add_with_ids(vectors, np.arange(2_000))
    queries = vectors[:50]
    truth = exact_neighbours(vectors, np.arange(2_000), queries, 10)
    nprobe, recall = tune_nprobe(index, truth, queries, target=1.01)
    assert nprobe == 16 and recall == pytest.approx(1.0)
    nprobe, recall = tune_nprobe(index, truth, queries, target=0.5)
    assert nprobe < 16 and recall >= 0.5


def test_info_command_shows_the_measured_recall(ivf_dir: Path) -> None:
    tuned = open_index(ivf_dir).info()["tuned"]
    text = CliRunner().invoke(index_group, ["info", str(ivf_dir)]).output
    assert (f"nprobe {tuned['nprobe']}, k_factor {tuned['k_factor']}, "
            f"recall@100 {tuned['recall']:.3f} on 1000 queries (measured at 20000 vectors)") in text
