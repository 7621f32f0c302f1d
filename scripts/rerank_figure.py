"""Draw one re-ranking example: a blurred test query, its best candidate, the inlier matches.

    .venv/bin/python scripts/rerank_figure.py data/small --out docs/figures/rerank_matches.png

The query is picked, and the caption says how: among `--queries` random test queries at
`--level` (seeded), of those whose re-ranked rank 1 is the right instance while the global
rank 1 was not, the one with the most inliers (the first of equals). It also prints how often
that happened and how often the opposite did.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from benchmark.protocol import load_benchmark_set
from retrieval.embed import load_embedder, prepare_pixels
from retrieval.rerank.match_figure import draw_matches
from retrieval.rerank.names import SHIPPED_DENSE
from retrieval.rerank.reranker import load_reranker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dense", default=SHIPPED_DENSE)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--level", type=int, default=6)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    bench = load_benchmark_set(args.data / "manifest.parquet", 0)
    at_level = np.flatnonzero(bench.query_levels == args.level)
    picked = np.random.default_rng(args.seed).permutation(at_level)[:args.queries]
    embedder = load_embedder("blur-aware", device="cpu")
    reranker = load_reranker(args.dense, "blur-aware", "cpu")
    database = embedder.embed(list(bench.database))
    queries = embedder.embed([bench.queries[int(q)] for q in picked])
    scores = queries.vectors @ database.vectors.T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :args.k]
    query_views, _ = reranker.describe_items([bench.queries[int(q)] for q in picked])
    candidate_views, _ = reranker.describe_items([bench.database[int(i)] for i in database.ok])
    labels = bench.database_labels[database.ok]
    lost = 0
    fixed = []  # (row of the picked query, best candidate, its re-ranked entry)
    for row, query in enumerate(picked):
        order = reranker.rerank(query_views[row], [candidate_views[i] for i in top[row]],
                                scores[row, top[row]], database.vectors[top[row]])
        best = top[row][order[0].position]
        right_now = labels[best] == bench.query_labels[query]
        right_before = labels[top[row][0]] == bench.query_labels[query]
        lost += int(right_before and not right_now)
        if right_now and not right_before:
            fixed.append((row, best, order[0]))
    print(f"{len(picked)} level-{args.level} test queries: re-ranking made rank 1 right for "
          f"{len(fixed)}, wrong for {lost}")
    if not fixed:
        raise SystemExit("no query where re-ranking fixed rank 1; nothing drawn")
    row, best, _ = max(fixed, key=lambda example: example[2].inliers)  # max keeps the first of equals
    pixels, _ = prepare_pixels([bench.queries[int(picked[row])], bench.database[int(database.ok[best])]],
                               reranker.image_size)
    verification = reranker.verify(query_views[row], candidate_views[best])  # the views ranked
    caption = (f"BL{args.level} query -> re-ranked rank 1 (right instance; global rank 1 was "
               f"wrong; most inliers of those): {verification.inliers} inliers of "
               f"{verification.matches} matches; "
               f"picked: fixed {len(fixed)}, broke {lost} of {len(picked)}")
    draw_matches(pixels[0], pixels[1], verification, args.out, caption=caption)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
