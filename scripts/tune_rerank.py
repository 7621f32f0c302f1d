"""Choose the re-ranking parameters on the validation split (never on test) and store them.

    .venv/bin/python scripts/tune_rerank.py data/small --dense runs/dense --k 50 \
        --distractors 10000 --write retrieval/checkpoints/dense/dense.json

Val queries (all of them unless `--max-queries`) against the val database (unseen instances,
the benchmark's protocol) plus `--distractors` virtual distractors (other instances of the same
categories, as in `bench map --distractors`, but other rows of the simulator's distractor
table), first stage `--locator`'s global vectors (exact search), then every combination of the
grid below. The chosen one has the best mean mAP@100 at blur levels 5 and 6, the queries this
stage is for, among those that lose nothing at level 1 (ties: the better overall mAP@100, then
the smaller weight, then less expansion). Verification runs once per min_similarity, and the
appearance similarities once per share of cells; both are reused for every weight, appearance
share, mirror share and expansion setting (combinations that cannot differ, such as every
min_similarity at weight 0, are run once). The whole grid goes to `--report` as JSON (one row
per combination), with the best by overall mAP@100, the best without query expansion, the best
without the appearance similarity, the best that averages all cells and the best without the
mirror-image similarity beside the chosen one.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from benchmark.protocol import load_benchmark_set
from retrieval.embed import load_embedder
from retrieval.fileio import write_json_atomic, write_text_atomic
from retrieval.manifest import manifest_items
from retrieval.metrics import rank_by_scores
from retrieval.rerank.describe import describe_all
from retrieval.rerank.matching import similarity_matrix
from retrieval.rerank.names import DEFAULT_LOCATOR, SHIPPED_DENSE
from retrieval.rerank.reranker import load_reranker, mirror_similarity
from retrieval.rerank.scoring import rerank_order
from retrieval.rerank.verify import RerankParams, appearance_similarity, verify
from retrieval.train.validation import TOP_K, build_validation_set, score_ranking

DISTRACTOR_OFFSET = 100_000
WEIGHTS = (0.0, 0.025, 0.05)
CAP = 8
MIN_SIMILARITIES = (0.97, 0.98)
THRESHOLD = 4.0  # cells
APPEARANCES = (0.0, 0.45, 0.55, 0.65, 0.75)
APPEARANCE_CELLS = (0.4, 0.5, 1.0)
MIRRORS = (0.0, 0.35, 0.5)
# (expansion, expansion_top, expansion_min_inliers); (0, 1, 0) is no expansion
EXPANSIONS = ((0.0, 1, 0), *itertools.product((0.25, 0.5, 0.75), (1, 2, 3), (0,)))


def _map(ranked: np.ndarray, query_labels: np.ndarray, database_labels: np.ndarray,
         levels: np.ndarray) -> dict:
    overall, per_level = score_ranking(ranked, query_labels, database_labels, levels)
    return {"all": overall["mean"], **per_level}


def _distractors(data: Path, count: int) -> list:
    """`count` virtual distractor rows (rendered when embedded) after the first
    DISTRACTOR_OFFSET of the simulator's distractor table, so that tuning and the benchmark's
    distractor runs do not share images."""
    if count <= 0:
        return []
    database = load_benchmark_set(data / "manifest.parquet", DISTRACTOR_OFFSET + count).database
    return [database[i] for i in range(len(database) - count, len(database))]


def _appearances(query_views: list, database_views: dict, top: np.ndarray) -> dict[float, np.ndarray]:
    """Appearance similarity of every (query, candidate) pair, (Q, k) per share of cells."""
    values = {cells: np.zeros(top.shape) for cells in APPEARANCE_CELLS}
    for q in tqdm(range(len(top)), desc="appearance", unit="query"):
        for position, candidate in enumerate(top[q]):
            similarity = similarity_matrix(query_views[q].descriptors,
                                           database_views[candidate].descriptors)
            for cells, table in values.items():
                table[q, position] = appearance_similarity(similarity, cells)
    return values


def _high_blur(entry: dict) -> float:
    return (entry["map100"]["5"] + entry["map100"]["6"]) / 2


def _best(grid: list[dict], base: dict, objective: Callable[[dict], float] = _high_blur) -> dict:
    """Best by `objective` among the entries that lose nothing at level 1 (all if none does)."""
    safe = [entry for entry in grid if entry["map100"]["1"] >= base["1"]] or grid
    return max(safe, key=lambda entry: (objective(entry), entry["map100"]["all"],
                                        -entry["params"]["weight"], -entry["params"]["expansion"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--dense", default=SHIPPED_DENSE)
    parser.add_argument("--locator", default=DEFAULT_LOCATOR)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--max-queries", type=int, default=None,
                        help="val queries kept, evenly spread (default: all of them; a larger grid "
                             "needs them, or its choice follows the noise of a few hundred queries "
                             "per blur level)")
    parser.add_argument("--distractors", type=int, default=0,
                        help="virtual distractors added to the val database (rows that no bench "
                             f"map run of up to {DISTRACTOR_OFFSET:,} distractors uses)")
    parser.add_argument("--report", type=Path, default=Path("runs/tune_rerank.json"))
    parser.add_argument("--write", type=Path, help="dense.json to store the chosen parameters in")
    args = parser.parse_args()
    if args.distractors < 0:
        parser.error(f"--distractors must be >= 0, got {args.distractors}")
    if args.max_queries is not None and args.max_queries < 1:
        parser.error(f"--max-queries must be >= 1, got {args.max_queries}")

    started = time.perf_counter()
    items, table = manifest_items(args.data / "manifest.parquet")
    val = build_validation_set(items, table, args.data / "manifest.parquet", args.max_queries)
    database_items = val.database + _distractors(args.data, args.distractors)
    database_instances = np.concatenate([val.database_instances,
                                         np.full(args.distractors, -1, dtype=np.int64)])
    embedder = load_embedder(args.locator, device="cpu")
    result = embedder.embed(val.queries + database_items, progress=True)
    if result.errors:
        raise SystemExit(f"val images failed to embed: {result.errors[0][1]}")
    queries, database = result.vectors[:len(val.queries)], result.vectors[len(val.queries):]
    scores = queries @ database.T
    ranked = rank_by_scores(scores, TOP_K)
    base = _map(ranked, val.query_instances, database_instances, val.query_levels)
    top = ranked[:, :args.k]
    reranker = load_reranker(args.dense, args.locator, "cpu", params=RerankParams(mirror=max(MIRRORS)))
    needed = np.unique(top)  # only candidates need a view
    views, errors = describe_all(reranker, val.queries + [database_items[i] for i in needed],
                                 progress=True)
    if errors:
        raise SystemExit(f"val images failed to describe: {errors[0][1]}")
    query_views = views[:len(val.queries)]
    database_views = dict(zip(needed.tolist(), views[len(val.queries):]))
    top_scores = np.take_along_axis(scores, top, axis=1)
    top_vectors = database[top]  # (Q, k, D): each query's candidates, for query expansion
    described = time.perf_counter() - started

    appearances = _appearances(query_views, database_views, top)
    mirrored = np.array([[mirror_similarity(query_views[q], database_views[c], top_scores[q, position])
                          for position, c in enumerate(top[q])] for q in range(len(top))])
    grid = []
    for min_similarity in tqdm(MIN_SIMILARITIES, desc="grid", unit="min_similarity"):
        params = RerankParams(min_similarity=min_similarity, threshold_cells=THRESHOLD, cap=CAP)
        inliers = np.array([[verify(query_views[q], database_views[c], params).inliers for c in top[q]]
                            for q in range(len(top))])
        weights = WEIGHTS if min_similarity == MIN_SIMILARITIES[0] else [w for w in WEIGHTS if w]
        for weight, share, cells, mirror, (expansion, top_n, min_inliers) in itertools.product(
                weights, APPEARANCES, APPEARANCE_CELLS, MIRRORS, EXPANSIONS):
            if share == 0 and cells != 1:
                continue  # without the appearance term its cells do not matter
            chosen = replace(params, weight=weight, appearance=share, appearance_cells=cells,
                             mirror=mirror, expansion=expansion, expansion_top=top_n,
                             expansion_min_inliers=min_inliers)
            reordered = ranked.copy()
            for q in range(len(top)):
                order = rerank_order(top_scores[q], inliers[q], chosen, top_vectors[q],
                                     appearances[cells][q], mirrored[q])
                reordered[q, :args.k] = top[q][order]
            grid.append({"params": asdict(chosen),
                         "map100": _map(reordered, val.query_instances, database_instances,
                                        val.query_levels)})
    best = _best(grid, base)
    overall = _best(grid, base, objective=lambda entry: entry["map100"]["all"])
    without = _best([entry for entry in grid if entry["params"]["expansion"] == 0], base)
    without_appearance = _best([entry for entry in grid if entry["params"]["appearance"] == 0], base)
    all_cells = _best([entry for entry in grid if entry["params"]["appearance_cells"] == 1], base)
    without_mirror = _best([entry for entry in grid if entry["params"]["mirror"] == 0], base)
    report = {"data": str(args.data), "dense": args.dense, "locator": args.locator, "k": args.k,
              "queries": len(val.queries), "database": len(val.database),
              "distractors": args.distractors, "baseline": base,
              "best": best, "best_overall": overall, "best_without_expansion": without,
              "best_without_appearance": without_appearance, "best_with_all_cells": all_cells,
              "best_without_mirror": without_mirror,
              "seconds": {"embed and describe": described, "total": time.perf_counter() - started},
              "grid_columns": list(grid[0]["params"]) + [f"map100_{key}" for key in base],
              "grid": [[*entry["params"].values(), *(round(entry["map100"][key], 6) for key in base)]
                       for entry in grid]}
    write_text_atomic(args.report, json.dumps(report, sort_keys=True) + "\n")  # compact: the grid is long
    print(json.dumps({key: report[key] for key in ("baseline", "best", "best_overall",
                                                   "best_without_expansion",
                                                   "best_without_appearance", "best_with_all_cells",
                                                   "best_without_mirror", "seconds")}, indent=1))
    if args.write:
        config = json.loads(args.write.read_text(encoding="utf-8"))
        config["rerank"] = best["params"]
        config["rerank_validation"] = {"k": args.k, "distractors": args.distractors,
                                       "baseline": base, "reranked": best["map100"]}
        write_json_atomic(args.write, config)


if __name__ == "__main__":
    main()
