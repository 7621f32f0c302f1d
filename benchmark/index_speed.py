"""Index speed at scale: the exact and auto indexes users get, against the published brute force.

Issue 4 asks, at a million vectors of the shipped model's dimension: build time, queries per
second at k = 100, single-query latency p50/p99 and memory of the exact and auto indexes, next to
the published code's search (a matrix product with the whole database, then a full argsort, one
query at a time) on the same vectors; the auto index must be at least 20x faster at
recall@100 >= 0.95. Indexes are built with the index layer's own steps (factory choice, training
on its sample, insertion in chunks, nprobe tuning) and searched through `RetrievalIndex`, so the
figures are those of `index build` and `index search`.
"""

from __future__ import annotations

import contextlib
import os
import platform
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from indexer import gpu, store
from indexer.build import build_faiss_index
from indexer.cluster.engine import Engine
from indexer.factory import AUTO, EXACT_FACTORY, EXACT_THRESHOLD
from indexer.index import RetrievalIndex
from indexer.sources import ID_COLUMN
from indexer.tuning import TARGET_RECALL, exact_neighbours
from retrieval.metrics import knn_recall

MIN_SPEEDUP = 20.0
LATENCY_QUERIES = 200
# Synthetic embeddings: ~100 points per cluster, noise of norm ~1 around each centre (cosine
# ~0.71 to it), centre variance decaying as 1 / (j + 1) over dimensions j. With a spread of 0.5 a
# query's top 100 is almost only its own cluster and IVF needs a single probe: too easy.
POINTS_PER_CLUSTER = 100
SPREAD = 1.0
SPECTRUM_DECAY = 1.0
GENERATION_CHUNK = 65_536
EXACT = "exact"
SYNTHETIC_MODEL = {"name": "synthetic", "fingerprint": "synthetic-mixture", "config": {}}


def mixture_centres(clusters: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """Unit centres whose variance decays over dimensions, so that neighbourhoods overlap.

    Real descriptors put most of their variance in a few directions; isotropic centres in 128
    dimensions would be almost orthogonal and make every cluster trivially separable.
    """
    scales = (np.arange(1, dim + 1, dtype=np.float32) ** -SPECTRUM_DECAY) ** 0.5
    centres = rng.standard_normal((clusters, dim), dtype=np.float32) * scales
    return centres / np.linalg.norm(centres, axis=1, keepdims=True)


def mixture_points(centres: np.ndarray, count: int, spread: float, rng: np.random.Generator,
                   progress: bool = False) -> np.ndarray:
    """`count` unit float32 rows, each a random centre plus Gaussian noise of norm ~`spread`.

    Written chunk by chunk into one array: a million rows never need a second copy.
    """
    dim = centres.shape[1]
    points = np.empty((count, dim), dtype=np.float32)
    with tqdm(total=count, unit="vec", desc="generating", disable=not progress,
              dynamic_ncols=True) as bar:
        for start in range(0, count, GENERATION_CHUNK):
            block = points[start:start + GENERATION_CHUNK]
            rng.standard_normal(block.shape, dtype=np.float32, out=block)
            block *= spread / np.sqrt(dim)
            block += centres[rng.integers(len(centres), size=len(block))]
            block /= np.linalg.norm(block, axis=1, keepdims=True)
            bar.update(len(block))
    return points


def synthetic_dataset(n: int, queries: int, dim: int, seed: int, clusters: int,
                      spread: float = SPREAD, progress: bool = False
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Database and query embeddings drawn from one Gaussian mixture on the unit sphere.

    Uniform noise on the sphere is both unlike real embeddings and the worst case for an
    inverted file; a mixture of clusters (about n / 100 of them in the benchmark) is closer to a
    database of instances. Queries come from their own random stream: fresh points of the same
    clusters, never database rows.
    """
    centre_seed, database_seed, query_seed = np.random.SeedSequence(seed).spawn(3)
    centres = mixture_centres(clusters, dim, np.random.default_rng(centre_seed))
    database = mixture_points(centres, n, spread, np.random.default_rng(database_seed), progress)
    query_vectors = mixture_points(centres, queries, spread, np.random.default_rng(query_seed))
    return database, query_vectors


def resident_bytes() -> int | None:
    """Resident set size of this process, from /proc/self/statm; None where there is no /proc."""
    try:
        resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
    except FileNotFoundError:
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def reset_peak_resident() -> bool:
    """Lower this process's peak RSS (VmHWM) to its current RSS; False where Linux's
    /proc/self/clear_refs is missing or refuses, and the peak then covers the whole process."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_resident_bytes() -> int | None:
    """Peak RSS (VmHWM) of this process since it started or since `reset_peak_resident`."""
    try:
        status = Path("/proc/self/status").read_text()
    except FileNotFoundError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return None


def serialized_bytes(index: faiss.Index) -> int:
    """Size of the index as saved, counted while FAISS writes it (serialize_index copies it all)."""
    total = 0

    def count(chunk: bytes) -> int:
        nonlocal total
        total += len(chunk)
        return len(chunk)

    faiss.write_index(index, faiss.PyCallbackIOWriter(count))
    return total


def brute_force_top_k(database: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    """The published search: score the whole database, sort all of it, keep the first k."""
    scores = database @ query
    return np.argsort(-scores)[:k]


def build_index_from_vectors(kind: str, vectors: np.ndarray, device: str,
                             exact_threshold: int = EXACT_THRESHOLD, progress: bool = False,
                             memory: int | None = None, engine: Engine | None = None
                             ) -> tuple[RetrievalIndex, dict[str, Any]]:
    """`indexer.build.build_faiss_index` (what `index build` runs after embedding) on ids 0..n-1.

    `kind` is "exact", "auto" or a FAISS factory string; `memory` (bytes, "auto" only) is the
    budget of `index build --index-memory`; `engine` that of `index build --engine` (a remote one
    fills IVF indexes in parallel parts). The index is kept in memory only.
    """
    n, dim = vectors.shape
    ids = np.arange(n, dtype=np.int64)
    wanted = EXACT_FACTORY if kind == EXACT else kind
    rss_before = resident_bytes()
    built = build_faiss_index(vectors, ids, wanted, device, exact_threshold, progress,
                              memory if kind == AUTO else None, engine)
    faiss_index, factory, tuned = built.index, built.factory, built.tuned
    train_seconds, add_seconds, tune_seconds = (built.seconds[s] for s in ("train", "add", "tune"))
    manifest = store.Manifest(model=SYNTHETIC_MODEL, dim=dim, factory=factory, count=n,
                              next_id=n, tuned=tuned)
    index = RetrievalIndex(Path(f"<in-memory {kind} index>"), faiss_index,
                           pa.table({ID_COLUMN: ids}), manifest, read_only=True,
                           memory_mapped=False, device=device)
    rss_after = resident_bytes()
    figures = {
        "factory": factory,
        "nprobe": tuned.get("nprobe"),
        "k_factor": tuned.get("k_factor"),
        "tuned_recall": tuned.get("recall"),
        "train_seconds": train_seconds,
        "add_seconds": add_seconds,
        "tune_seconds": tune_seconds,
        "build_seconds": train_seconds + add_seconds + tune_seconds,
        "index_bytes": serialized_bytes(faiss_index),
        "rss_delta_bytes": None if rss_before is None else rss_after - rss_before,
    }
    return index, figures


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """Per-query wall time: queries per second over the loop, and the p50/p99 latency."""
    values = np.asarray(seconds, dtype=np.float64)
    return {
        "single_qps": float(len(values) / values.sum()),
        "p50_ms": float(np.percentile(values, 50) * 1e3),
        "p99_ms": float(np.percentile(values, 99) * 1e3),
    }


def measure_search(search: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]],
                   queries: np.ndarray, k: int, latency_queries: int, progress: bool = False
                   ) -> tuple[dict[str, float], np.ndarray]:
    """Batched QPS over all `queries`, then the latency of `latency_queries` one-query calls.

    Returns the figures and the ids found by the batched search.
    """
    search(queries[:1], k)  # warm-up: thread pool, page faults, GPU copy
    start = time.perf_counter()
    _, found = search(queries, k)
    batch_seconds = time.perf_counter() - start
    latencies = []
    for query in tqdm(queries[:latency_queries], unit="query", desc="single queries",
                      disable=not progress, dynamic_ncols=True, leave=False):
        start = time.perf_counter()
        search(query[None, :], k)
        latencies.append(time.perf_counter() - start)
    figures = {"batch_qps": len(queries) / batch_seconds, "batch_seconds": batch_seconds,
               **latency_summary(latencies)}
    return figures, found


def measure_brute_force(database: np.ndarray, queries: np.ndarray, k: int,
                        progress: bool = False) -> tuple[dict[str, float], np.ndarray]:
    """Time `brute_force_top_k` query by query; returns the figures and the ids found."""
    latencies, found = [], []
    for query in tqdm(queries, unit="query", desc="brute force", disable=not progress,
                      dynamic_ncols=True):
        start = time.perf_counter()
        found.append(brute_force_top_k(database, query, k))
        latencies.append(time.perf_counter() - start)
    return latency_summary(latencies), np.stack(found).astype(np.int64)


def versus_brute_force(index: dict[str, Any], brute: dict[str, Any]) -> dict[str, Any]:
    """Speed-ups over the published search; 20x is required of both throughput and latency."""
    qps_ratio = index["batch_qps"] / brute["single_qps"]
    latency_ratio = brute["p50_ms"] / index["p50_ms"]
    return {
        "qps_ratio": qps_ratio,
        "latency_ratio": latency_ratio,
        "meets_20x": min(qps_ratio, latency_ratio) >= MIN_SPEEDUP,
        "meets_recall": index["recall"] >= TARGET_RECALL,
    }


def run_index_benchmark(n: int = 1_000_000, dim: int = 128, queries: int = 1000, k: int = 100,
                        seed: int = 0, device: str = "cpu",
                        factories: Sequence[str] = (EXACT, "auto"),
                        brute_force_queries: int = 50, progress: bool = True,
                        exact_threshold: int = EXACT_THRESHOLD,
                        latency_queries: int = LATENCY_QUERIES,
                        omp_threads: int | None = None, spread: float = SPREAD,
                        with_index: Callable[[str, RetrievalIndex], None] | None = None,
                        memory: int | None = None, engine: Engine | None = None
                        ) -> dict[str, Any]:
    """Build and search each index kind on synthetic embeddings; a JSON-able report.

    Recall@k of every index is measured against exact search on the same queries. Brute force
    always runs on the CPU with numpy, as the published code does. `omp_threads` caps FAISS's
    threads for this run (default: FAISS's own choice): on a machine shared with other work,
    threads waiting for each other can dominate the latency of one-query searches. `spread` sets
    how loose the synthetic clusters are (see `synthetic_dataset`): looser is harder for IVF.
    `with_index(kind, index)` is called once each index is measured, before it is freed, so a
    caller can time its own queries on the same index (`bench speed` times whole image queries).
    `memory` (bytes) is the budget the "auto" index must fit in, as `index build --index-memory`
    gives it; each index's row says whether its size fits. `engine`: where IVF indexes are
    filled (`indexer.build.build_faiss_index`).
    """
    _check_arguments(n, dim, queries, k, factories, brute_force_queries, latency_queries,
                     omp_threads, spread, memory)
    device = gpu.resolve_device(device)
    clusters = max(1, n // POINTS_PER_CLUSTER)
    with faiss_threads(omp_threads):
        start = time.perf_counter()
        database, query_vectors = synthetic_dataset(n, queries, dim, seed, clusters, spread, progress)
        generator = {"clusters": clusters, "spread": spread, "spectrum_decay": SPECTRUM_DECAY,
                     "seconds": time.perf_counter() - start}
        truth = exact_neighbours(database, np.arange(n, dtype=np.int64), query_vectors, k)
        indexes, peaks = {}, []
        for kind in factories:
            peaks.append(peak_resident_bytes())  # each index resets the peak to measure its own
            indexes[kind] = _benchmark_index(kind, database, query_vectors, truth, device,
                                             exact_threshold, latency_queries, progress,
                                             with_index, memory, engine)
        brute = None
        if brute_force_queries:
            brute = _benchmark_brute_force(database, query_vectors[:brute_force_queries],
                                           truth[:brute_force_queries], progress)
            for figures in indexes.values():
                figures["versus_brute_force"] = versus_brute_force(figures, brute)
        config = _config(n, dim, queries, k, seed, device, exact_threshold, latency_queries)
        config["index_memory"] = memory
        config["engine"] = None if engine is None else engine.name
        peaks.append(peak_resident_bytes())
        config["peak_rss_bytes"] = None if None in peaks else max(peaks)
    return {"config": {**config, "generator": generator}, "indexes": indexes, "brute_force": brute}


@contextlib.contextmanager
def faiss_threads(count: int | None) -> Iterator[None]:
    """FAISS's OpenMP threads set to `count` inside the block (None: left alone), then restored."""
    default = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(count or default)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(default)


def _check_arguments(n: int, dim: int, queries: int, k: int, factories: Sequence[str],
                     brute_force_queries: int, latency_queries: int, omp_threads: int | None,
                     spread: float, memory: int | None = None) -> None:
    if memory is not None and (memory <= 0 or AUTO not in factories):
        raise ValueError(f"a memory budget ({memory}) must be positive and applies to the "
                         f"auto index; factories are {tuple(factories)!r}")
    if omp_threads is not None and omp_threads < 1:
        raise ValueError(f"omp_threads must be positive or None, got {omp_threads}")
    if min(n, dim, queries, k, latency_queries) < 1:
        raise ValueError(f"n, dim, queries, k and latency_queries must be positive; got n={n}, "
                         f"dim={dim}, queries={queries}, k={k}, latency_queries={latency_queries}")
    if not spread > 0:
        raise ValueError(f"spread must be positive, got {spread}")
    if k > n:
        raise ValueError(f"k={k} is larger than the database (n={n})")
    if not 0 <= brute_force_queries <= queries:
        raise ValueError(f"brute_force_queries must lie in [0, queries={queries}], "
                         f"got {brute_force_queries}")
    if not factories or len(set(factories)) != len(factories):
        raise ValueError(f"factories must be a non-empty list of distinct names, got {factories!r}")


def _config(n: int, dim: int, queries: int, k: int, seed: int, device: str, exact_threshold: int,
            latency_queries: int) -> dict[str, Any]:
    return {
        "n": n, "dim": dim, "queries": queries, "k": k, "seed": seed, "device": device,
        "exact_threshold": exact_threshold, "latency_queries": latency_queries,
        "faiss_version": faiss.__version__, "numpy_version": np.__version__,
        "omp_threads": faiss.omp_get_max_threads(),
        "machine": {"platform": platform.platform(), "arch": platform.machine(),
                    "cpu_count": os.cpu_count(), "python": platform.python_version()},
    }


def _benchmark_index(kind: str, database: np.ndarray, queries: np.ndarray, truth: np.ndarray,
                     device: str, exact_threshold: int, latency_queries: int, progress: bool,
                     with_index: Callable[[str, RetrievalIndex], None] | None,
                     memory: int | None = None, engine: Engine | None = None
                     ) -> dict[str, Any]:
    """Build, search and score one index; it is freed on return so the next one's RSS is its own.

    Its peak RSS covers building and searching it, on top of the database and queries already
    resident (None where the peak cannot be reset to exclude the indexes measured before)."""
    peak_reset = reset_peak_resident()
    index, figures = build_index_from_vectors(kind, database, device, exact_threshold, progress,
                                              memory, engine)
    search_figures, found = measure_search(index.search_vectors, queries, truth.shape[1],
                                           latency_queries, progress)
    peak = peak_resident_bytes() if peak_reset else None
    if with_index is not None:
        with_index(kind, index)
    return {**figures, **search_figures, "peak_rss_bytes": peak, "recall": knn_recall(found, truth)}


def _benchmark_brute_force(database: np.ndarray, queries: np.ndarray, truth: np.ndarray,
                           progress: bool) -> dict[str, Any]:
    figures, found = measure_brute_force(database, queries, truth.shape[1], progress)
    return {**figures, "queries": len(queries), "recall": knn_recall(found, truth)}
