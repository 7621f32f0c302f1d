"""--index-memory: the auto choice as a function of the budget, and a compressed build on tiny data."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from fakes import FakeEmbedder, virtual_source

from benchmark.commands.bench import bench
from benchmark.commands.index import index_group
from benchmark.index_speed import run_index_benchmark
from indexer.api import build_index, open_index
from indexer.errors import MemoryBudgetError
from indexer.factory import estimated_bytes, memory_candidates, memory_factory

N, DIM = 1_000_000, 128


def test_the_budget_picks_the_most_accurate_index_that_fits() -> None:
    sizes = {f: estimated_bytes(f, N, DIM) for f in memory_candidates(N, DIM)}
    assert list(sizes) == ["IDMap2,IVF4096,PQ64x4fs,RFlat", "IDMap2,IVF4096,PQ64x4fs,Refine(SQ8)",
                           "IVF4096,PQ64x4fs", "IVF4096,PQ32x4fs", "IVF4096,PQ16x4fs"]
    assert list(sizes.values()) == sorted(sizes.values(), reverse=True)
    for factory, size in sizes.items():
        assert memory_factory(N, DIM, size) == factory
    assert memory_factory(N, DIM, 10 * 2**30) == "IDMap2,IVF4096,PQ64x4fs,RFlat"
    assert memory_factory(N, DIM, 200 * 2**20) == "IDMap2,IVF4096,PQ64x4fs,Refine(SQ8)"
    assert memory_factory(N, DIM, 60 * 2**20) == "IVF4096,PQ64x4fs"
    assert memory_factory(1_000, DIM, 2**30) == "IDMap2,Flat"  # small and fits: exact
    with pytest.raises(MemoryBudgetError, match="--index-memory 1,000 bytes is too small"):
        memory_factory(N, DIM, 1_000)


def test_a_budget_below_the_flat_vectors_builds_and_searches_a_compressed_index(tmp_path: Path
                                                                              ) -> None:
    n, dim = 3_000, 16
    compressed = memory_candidates(n, dim)[1]
    budget = estimated_bytes(compressed, n, dim)
    assert budget < estimated_bytes("IDMap2,Flat", n, dim)
    build_index(virtual_source(n), FakeEmbedder(dim=dim), tmp_path / "idx", progress=False,
                memory=budget)
    info = open_index(tmp_path / "idx").info()
    assert info["factory"] == compressed == "IDMap2,IVF64,PQ8x4fs,Refine(SQ8)"
    assert info["tuned"]["recall"] >= 0.95
    rows = list(range(0, n, 301))
    _, ids = open_index(tmp_path / "idx").search_vectors(
        FakeEmbedder(dim=dim).vectors_of([{"row": r} for r in rows]), k=5)
    assert ids[:, 0].tolist() == rows


@pytest.mark.parametrize(("value", "message"), [
    ("lots", "expected a size such as 500MB"), ("0", "must be positive"), ("3XB", "expected a size"),
])
def test_a_bad_budget_is_a_usage_error_naming_the_option(tmp_path: Path, value: str,
                                                         message: str) -> None:
    result = CliRunner().invoke(index_group, ["build", str(tmp_path), "--out",
                                              str(tmp_path / "idx"), "--index-memory", value])
    assert result.exit_code == 2 and "--index-memory" in result.output and message in result.output


def test_a_budget_with_an_explicit_factory_is_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(index_group, ["build", str(tmp_path), "--out", str(tmp_path / "i"),
                                              "--factory", "Flat", "--index-memory", "1GB"])
    assert result.exit_code == 2 and "--index-memory" in result.output


def test_bench_index_builds_auto_within_the_budget_beside_exact(tmp_path: Path) -> None:
    n, dim = 3_000, 16
    compressed = memory_candidates(n, dim, 1_000)[1]
    # The estimate leaves out fast-scan padding (lists are stored in blocks of 32 codes), a few
    # per cent of the size at 3,000 vectors: a tenth more still picks the same index.
    budget = estimated_bytes(compressed, n, dim) * 11 // 10
    assert memory_factory(n, dim, budget, 1_000) == compressed
    report = run_index_benchmark(n=n, dim=dim, queries=20, k=10, brute_force_queries=0,
                                 progress=False, exact_threshold=1_000, latency_queries=2,
                                 memory=budget)
    exact, auto = report["indexes"]["exact"], report["indexes"]["auto"]
    assert report["config"]["index_memory"] == budget
    assert exact["factory"] == "IDMap2,Flat" and auto["factory"] == compressed
    assert auto["index_bytes"] <= budget < exact["index_bytes"] and exact["recall"] == 1.0
    if exact["peak_rss_bytes"] is not None:  # where Linux lets the peak be reset
        assert auto["peak_rss_bytes"] >= auto["rss_delta_bytes"]
        assert report["config"]["peak_rss_bytes"] >= max(exact["peak_rss_bytes"],
                                                         auto["peak_rss_bytes"])


def test_bench_index_takes_and_reports_the_budget() -> None:
    budget = estimated_bytes("IDMap2,IVF64,PQ8x4fs,Refine(SQ8)", 3_000, 16) * 11 // 10
    result = CliRunner().invoke(bench, ["index", "--n", "3000", "--dim", "16", "--queries", "20",
                                        "--k", "10", "--brute-force-queries", "0", "-q",
                                        "--index-memory", str(budget)])
    assert result.exit_code == 0, result.output
    assert "IDMap2,IVF64,PQ8x4fs,Refine(SQ8)" in result.output
    assert f"does not fit in {budget / 2**20:,.1f} MB" in result.output.split("exact: ")[-1]
    assert f"fits in {budget / 2**20:,.1f} MB" in result.output.split("auto: ")[-1]
    assert f"auto within --index-memory {budget / 2**20:,.1f} MB" in result.output


def test_bench_index_refuses_a_budget_without_the_auto_index() -> None:
    result = CliRunner().invoke(bench, ["index", "--n", "3000", "--factory", "exact",
                                        "--index-memory", "1GB"])
    assert result.exit_code == 2 and "--index-memory" in result.output and "--factory auto" in result.output
    with pytest.raises(ValueError, match="applies to the auto index"):
        run_index_benchmark(n=1_000, factories=("exact",), memory=2**20, progress=False)
