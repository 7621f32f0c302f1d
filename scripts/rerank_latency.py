"""Cost of one query with re-ranking, end to end, on this machine: p50/p99 per K, side by side.

    .venv/bin/python scripts/rerank_latency.py data/small --dense dense \
        --json docs/figures/rerank_latency.json

Indexes the test split's database files (with the dense cache that `index build --dense`
writes), then times one query file at a time, in turns: global search only, and re-ranked
top K for each K, with cached candidate views and with views described on demand. Each time
covers decode, embed, search, the query's own dense view, and verification.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmark.protocol import load_benchmark_set
from indexer.api import build_index, rerank_search, source_from_paths
from indexer.rerank.cache import cache_items, read_cache, view_models
from retrieval.embed import load_embedder
from retrieval.fileio import write_json_atomic
from retrieval.rerank.names import SHIPPED_DENSE
from retrieval.rerank.reranker import load_reranker


def _summary(seconds: list[float]) -> dict:
    values = np.asarray(seconds) * 1000
    return {"p50_ms": float(np.percentile(values, 50)), "p99_ms": float(np.percentile(values, 99)),
            "mean_ms": float(values.mean()), "queries": len(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--dense", default=SHIPPED_DENSE)
    parser.add_argument("--ks", default="20,50")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    ks = [int(k) for k in args.ks.split(",")]

    bench = load_benchmark_set(args.data / "manifest.parquet", 0)
    database = [row.path for row in bench.database]
    queries = [row.path for row in bench.queries]
    picked = [queries[int(i)] for i in
              np.random.default_rng(0).choice(len(queries), args.queries + 5, replace=False)]
    embedder = load_embedder("blur-aware", device="cpu")
    reranker = load_reranker(args.dense, "blur-aware", "cpu")
    models = view_models(args.dense, "blur-aware")
    with tempfile.TemporaryDirectory() as folder:
        index, result = build_index(source_from_paths(database), embedder, Path(folder) / "index")
        started = time.perf_counter()
        indexed = [database[i] for i in result.ordinals]
        info, failed = cache_items(index.directory, models, reranker, result.ids, indexed)
        cache_seconds = time.perf_counter() - started
        cached = read_cache(index.directory, models)
        variants = {"global only": lambda path: index.search_images([path], embedder, 10)}
        for k in ks:
            variants[f"rerank {k}, cached views"] = (
                lambda path, k=k: rerank_search(index, [path], embedder, reranker, 10, k, cached))
            variants[f"rerank {k}, views on demand"] = (
                lambda path, k=k: rerank_search(index, [path], embedder, reranker, 10, k, None))
        times: dict[str, list[float]] = {name: [] for name in variants}
        for number, path in enumerate(picked):
            for name, run in variants.items():  # in turns, so load changes hit every variant
                start = time.perf_counter()
                run(path)
                if number >= 5:  # warm-up queries are not counted
                    times[name].append(time.perf_counter() - start)
    report = {"database": len(database), "dense": args.dense,
              "dense_cache": {"views": len(result.ids) - len(failed), "bytes": info.bytes,
                              "seconds": cache_seconds},
              "latency": {name: _summary(values) for name, values in times.items()}}
    print(json.dumps(report, indent=1))
    if args.json:
        write_json_atomic(args.json, report)


if __name__ == "__main__":
    main()
