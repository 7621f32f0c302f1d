"""The terminal summary of a `bench index` report: one row per index, the speed-up against
brute force and exact search, and whether each index fits the memory budget."""

from __future__ import annotations

from typing import Any

from benchmark.index_speed import EXACT, MIN_SPEEDUP
from indexer.tuning import TARGET_RECALL


def format_summary(report: dict[str, Any]) -> str:
    """A plain-text table of a `run_index_benchmark` report, for the terminal."""
    config = report["config"]
    lines = [
        f"{config['n']:,} vectors x {config['dim']} dims, {config['queries']} queries, "
        f"k={config['k']}, device {config['device']}, {config['omp_threads']} FAISS threads"
        + _budget_words(config.get("index_memory")),
        f"{'index':<10} {'factory':<34} {'nprobe/kf':>9} {'train s':>8} {'add s':>7} {'tune s':>7} "
        f"{'size MB':>8} {'RSS MB':>7} {'QPS':>9} {'p50 ms':>8} {'p99 ms':>8} {'recall':>7}",
    ]
    for name, row in report["indexes"].items():
        rss = "n/a" if row["rss_delta_bytes"] is None else f"{row['rss_delta_bytes'] / 2**20:.0f}"
        nprobe = "-" if row["nprobe"] is None else str(row["nprobe"])
        if row.get("k_factor") is not None:
            nprobe += f"/{row['k_factor']}"
        lines.append(
            f"{name:<10} {row['factory']:<34} {nprobe:>9} {row['train_seconds']:>8.1f} "
            f"{row['add_seconds']:>7.1f} {row['tune_seconds']:>7.1f} "
            f"{row['index_bytes'] / 2**20:>8.0f} {rss:>7} {row['batch_qps']:>9.1f} "
            f"{row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f} {row['recall']:>7.4f}"
        )
    lines += versus_exact_lines(report["indexes"])
    lines += budget_lines(report)
    if config.get("peak_rss_bytes") is not None:
        lines.append(f"process peak RSS over the run: {config['peak_rss_bytes'] / 2**20:,.1f} MB "
                     f"(an outside tool may see only the last index's: each one resets the peak)")
    brute = report["brute_force"]
    if brute is None:
        return "\n".join(lines)
    lines.append(
        f"{'brute':<10} {'matmul+argsort':<34} {'-':>9} {'':>8} {'':>7} {'':>7} {'':>8} {'':>7} "
        f"{brute['single_qps']:>9.1f} {brute['p50_ms']:>8.2f} {brute['p99_ms']:>8.2f} "
        f"{brute['recall']:>7.4f}   ({brute['queries']} queries)"
    )
    for name, row in report["indexes"].items():
        versus = row["versus_brute_force"]
        verdict = "PASS" if versus["meets_20x"] and versus["meets_recall"] else "FAIL"
        lines.append(
            f"{name} vs brute force: {versus['qps_ratio']:.1f}x QPS, "
            f"{versus['latency_ratio']:.1f}x p50 latency, recall {row['recall']:.4f} -> "
            f"{verdict} (needs {MIN_SPEEDUP:.0f}x both and recall >= {TARGET_RECALL})"
        )
    return "\n".join(lines)


def _budget_words(memory: int | None) -> str:
    return "" if memory is None else f", auto within --index-memory {memory / 2**20:,.1f} MB"


def budget_lines(report: dict[str, Any]) -> list[str]:
    """Under a memory budget: each index's size and peak RSS against it."""
    memory = report["config"].get("index_memory")
    if memory is None:
        return []
    lines = []
    for name, row in report["indexes"].items():
        peak = row.get("peak_rss_bytes")
        peak_words = ("" if peak is None else
                      f", process peak RSS while built and searched {peak / 2**20:,.1f} MB")
        fits = "fits" if row["index_bytes"] <= memory else "does not fit"
        lines.append(f"{name}: {row['index_bytes'] / 2**20:,.1f} MB, {fits} in "
                     f"{memory / 2**20:,.1f} MB{peak_words}")
    return lines


def versus_exact_lines(indexes: dict[str, dict[str, Any]]) -> list[str]:
    """One line per index against exact search measured in the same run (when it was)."""
    exact = indexes.get(EXACT)
    if exact is None:
        return []
    return [
        f"{name} vs exact ({exact['factory']}): {row['batch_qps'] / exact['batch_qps']:.1f}x batch QPS, "
        f"build {row['build_seconds']:.1f} s vs {exact['build_seconds']:.1f} s, size "
        f"{row['index_bytes'] / 2**20:.0f} vs {exact['index_bytes'] / 2**20:.0f} MB, "
        f"recall {row['recall']:.4f}"
        for name, row in indexes.items() if name != EXACT
    ]
