"""Choose the re-ranking parameters on the validation split (never on test) and store them.

    .venv/bin/python scripts/tune_rerank.py data/small --dense runs/dense --k 50 \
        --write retrieval/checkpoints/dense/dense.json

Val queries against the val database (unseen instances, the benchmark's protocol), first stage
`--locator`'s global vectors (exact search), then every combination of the grid below; the
chosen one maximises overall mAP@100 among those that lose nothing at blur level 1 (ties: the
smaller weight). Inlier counts are computed once per (min_similarity, threshold) and reused for
every weight and cap. The whole grid goes to `--report` as JSON.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from retrieval.embed import load_embedder
from retrieval.fileio import write_json_atomic
from retrieval.manifest import manifest_items
from retrieval.metrics import rank_by_scores
from retrieval.rerank.names import DEFAULT_LOCATOR, SHIPPED_DENSE
from retrieval.rerank.reranker import load_reranker
from retrieval.rerank.verify import RerankParams, rerank_order, verify
from retrieval.train.validation import TOP_K, build_validation_set, score_ranking

WEIGHTS = (0.02, 0.05, 0.1, 0.2, 0.4, 1.0)
CAPS = (8, 16, 32, 64)
MIN_SIMILARITIES = (0.8, 0.9, 0.95, 0.97)
THRESHOLDS = (1.0, 1.5, 2.5)  # cells


def _map(ranked: np.ndarray, query_labels: np.ndarray, database_labels: np.ndarray,
         levels: np.ndarray) -> dict:
    overall, per_level = score_ranking(ranked, query_labels, database_labels, levels)
    return {"all": overall["mean"], **per_level}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--dense", default=SHIPPED_DENSE)
    parser.add_argument("--locator", default=DEFAULT_LOCATOR)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--max-queries", type=int, default=1000)
    parser.add_argument("--report", type=Path, default=Path("runs/tune_rerank.json"))
    parser.add_argument("--write", type=Path, help="dense.json to store the chosen parameters in")
    args = parser.parse_args()

    started = time.perf_counter()
    items, table = manifest_items(args.data / "manifest.parquet")
    val = build_validation_set(items, table, args.data / "manifest.parquet", args.max_queries)
    embedder = load_embedder(args.locator, device="cpu")
    result = embedder.embed(val.queries + val.database)
    if result.errors:
        raise SystemExit(f"val images failed to embed: {result.errors[0][1]}")
    queries, database = result.vectors[:len(val.queries)], result.vectors[len(val.queries):]
    scores = queries @ database.T
    ranked = rank_by_scores(scores, TOP_K)
    base = _map(ranked, val.query_instances, val.database_instances, val.query_levels)
    reranker = load_reranker(args.dense, args.locator, "cpu")
    views, errors = reranker.describe_items(val.queries + val.database)
    if errors:
        raise SystemExit(f"val images failed to describe: {errors[0][1]}")
    query_views, database_views = views[:len(val.queries)], views[len(val.queries):]
    top = ranked[:, :args.k]
    top_scores = np.take_along_axis(scores, top, axis=1)
    described = time.perf_counter() - started

    grid = []
    for min_similarity, threshold in itertools.product(MIN_SIMILARITIES, THRESHOLDS):
        params = RerankParams(min_similarity=min_similarity, threshold_cells=threshold)
        inliers = np.array([[verify(query_views[q], database_views[c], params).inliers
                             for c in top[q]] for q in range(len(top))])
        for weight, cap in itertools.product(WEIGHTS, CAPS):
            chosen = replace(params, weight=weight, cap=cap)
            reordered = ranked.copy()
            for q in range(len(top)):
                reordered[q, :args.k] = top[q][rerank_order(top_scores[q], inliers[q], chosen)]
            grid.append({"params": asdict(chosen),
                         "map100": _map(reordered, val.query_instances, val.database_instances,
                                        val.query_levels)})
    safe = [entry for entry in grid if entry["map100"]["1"] >= base["1"]] or grid
    best = max(safe, key=lambda entry: (entry["map100"]["all"], -entry["params"]["weight"]))
    report = {"data": str(args.data), "dense": args.dense, "locator": args.locator, "k": args.k,
              "queries": len(val.queries), "database": len(val.database), "baseline": base,
              "best": best, "seconds": {"embed and describe": described,
                                        "total": time.perf_counter() - started}, "grid": grid}
    write_json_atomic(args.report, report)
    print(json.dumps({key: report[key] for key in ("baseline", "best", "seconds")}, indent=1))
    if args.write:
        config = json.loads(args.write.read_text(encoding="utf-8"))
        config["rerank"] = best["params"]
        config["rerank_validation"] = {"k": args.k, "baseline": base, "reranked": best["map100"]}
        write_json_atomic(args.write, config)


if __name__ == "__main__":
    main()
