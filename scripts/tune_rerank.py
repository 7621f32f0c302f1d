"""Choose the re-ranking parameters on the validation split (never on test) and store them.

    .venv/bin/python scripts/tune_rerank.py data/small --dense runs/dense --k 50 \
        --distractors 10000 --write retrieval/checkpoints/dense/dense.json

Val queries (all of them unless `--max-queries`) against the val database (unseen instances,
the benchmark's protocol) plus `--distractors` virtual distractors (other instances of the same
categories, as in `bench map --distractors`, but other rows of the simulator's distractor
table), first stage `--locator`'s global vectors (exact search), then every combination of the
grid of `retrieval.rerank.tuning` (which says how the one stored is chosen). The whole grid goes
to `--report` as JSON (one row per combination), with the chosen one and the best of each
family beside it; `--write` stores the chosen parameters in a dense checkpoint's dense.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from benchmark.protocol import load_benchmark_set
from retrieval.embed import load_embedder
from retrieval.fileio import write_text_atomic
from retrieval.manifest import manifest_items
from retrieval.rerank.describe import describe_all
from retrieval.rerank.names import DEFAULT_LOCATOR, SHIPPED_DENSE
from retrieval.rerank.reranker import load_reranker
from retrieval.rerank.tuning import GRID, TuningSet, first_stage, grid_search, store_choice
from retrieval.rerank.verify import RerankParams
from retrieval.train.validation import build_validation_set

DISTRACTOR_OFFSET = 100_000
SHOWN = ("best", "best_overall", "best_without_expansion", "best_without_appearance",
         "best_with_all_cells", "best_without_mirror")


def _distractors(data: Path, count: int) -> list:
    """`count` virtual distractor rows (rendered when embedded) after the first
    DISTRACTOR_OFFSET of the simulator's distractor table, so that tuning and the benchmark's
    distractor runs do not share images."""
    if count <= 0:
        return []
    database = load_benchmark_set(data / "manifest.parquet", DISTRACTOR_OFFSET + count).database
    return [database[i] for i in range(len(database) - count, len(database))]


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
    stage = first_stage(queries, database, args.k)
    reranker = load_reranker(args.dense, args.locator, "cpu", params=RerankParams(mirror=max(GRID.mirrors)))
    needed = stage.candidates  # only candidates need a view
    views, errors = describe_all(reranker, val.queries + [database_items[i] for i in needed],
                                 progress=True)
    if errors:
        raise SystemExit(f"val images failed to describe: {errors[0][1]}")
    described = time.perf_counter() - started

    tuning = grid_search(TuningSet(stage, database, views[:len(val.queries)],
                                   dict(zip(needed.tolist(), views[len(val.queries):])),
                                   val.query_instances, database_instances, val.query_levels),
                         progress=True)
    columns, rows = tuning.table()
    report = {"data": str(args.data), "dense": args.dense, "locator": args.locator, "k": args.k,
              "queries": len(val.queries), "database": len(val.database),
              "distractors": args.distractors, "baseline": tuning.baseline, **tuning.choices,
              "seconds": {"embed and describe": described, "total": time.perf_counter() - started},
              "grid_columns": columns, "grid": rows}
    write_text_atomic(args.report, json.dumps(report, sort_keys=True) + "\n")  # compact: the grid is long
    print(json.dumps({key: report[key] for key in ("baseline", *SHOWN, "seconds")}, indent=1))
    if args.write:
        store_choice(args.write, tuning, args.k, args.distractors)


if __name__ == "__main__":
    main()
