"""`bench map --rerank K`: each method's top K re-ranked by geometric verification, scored again.

Queries and the candidates of every method are described once (a database row in several
methods' top K is described once), then each query's top K is reordered by the re-ranking
score (its query expansion uses the method's own vectors of the candidates); ranks K+1..100
are the first stage's. Positives inside the top K move with the new order, so full-ranking mAP
changes only through them.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from benchmark.evaluate import Evaluation, MethodRun
from benchmark.protocol import BenchmarkSet
from benchmark.ranking import ExactResult
from benchmark.scoring import per_query_metrics, stratify
from retrieval.rerank.describe import describe_all
from retrieval.rerank.reranker import Reranker
from retrieval.rerank.verify import DenseView


def rerank_name(name: str, k: int) -> str:
    return f"{name} +rerank{k}"


def describe_rows(reranker: Reranker, rows: Any, positions: np.ndarray, progress: bool
                  ) -> dict[int, DenseView | None]:
    """Dense views of `rows[positions]` by position (None where an image could not be read)."""
    views, _ = describe_all(reranker, [rows[int(p)] for p in positions], progress)
    return dict(zip((int(p) for p in positions), views))


def add_reranked_runs(bench: BenchmarkSet, evaluation: Evaluation, reranker: Reranker, k: int,
                      progress: bool = True) -> None:
    """Append a re-ranked run after each method's run, timing each stage."""
    started = time.perf_counter()
    query_views = describe_rows(reranker, bench.queries, evaluation.query_rows, progress)
    needed = np.unique(np.concatenate([run.ranked_ids[:, :k].ravel() for run in evaluation.runs]))
    database_views = describe_rows(reranker, bench.database, needed[needed >= 0], progress)
    evaluation.timings[f"rerank: describe {len(query_views)} queries and {len(database_views)} "
                       "candidates"] = time.perf_counter() - started
    runs = []
    for run in evaluation.runs:
        started = time.perf_counter()
        reranked = rerank_run(bench, run, evaluation, reranker, k,
                              [query_views[int(q)] for q in evaluation.query_rows], database_views,
                              progress)
        evaluation.timings[f"rerank: verify {run.name}"] = time.perf_counter() - started
        runs += [run, reranked]
    evaluation.runs = runs


def rerank_run(bench: BenchmarkSet, run: MethodRun, evaluation: Evaluation, reranker: Reranker,
               k: int, query_views: list[DenseView | None],
               database_views: dict[int, DenseView | None], progress: bool = False) -> MethodRun:
    """`run` with each query's top k reordered (a query without a view keeps its order)."""
    ids = run.ranked_ids.copy()
    scores = run.ranked_scores.astype(np.float64).copy()
    for q in tqdm(range(len(ids)), desc=f"verify {run.name}", unit="query", disable=not progress):
        view = query_views[q]
        top = ids[q, :k]
        usable = top >= 0
        if view is None or not usable.any():
            continue
        candidates = [database_views.get(int(i)) for i in top[usable]]
        vectors = None if run.database_vectors is None else run.database_vectors[top[usable]]
        order = reranker.rerank(view, candidates, scores[q, :k][usable], vectors)
        ids[q, :usable.sum()] = top[usable][[c.position for c in order]]
        scores[q, :usable.sum()] = [c.rerank_score for c in order]
    labels = bench.query_labels[evaluation.query_rows]
    # An approximate first stage's top k is not the exact one: its full ranking stays as it was.
    exact = run.exact if run.approximate else reranked_exact(run.exact, run.ranked_ids, ids, k)
    per_query = per_query_metrics(ids, labels, bench.database_labels, exact)
    return replace(run, name=rerank_name(run.name, k), ranked_ids=ids,
                   ranked_scores=scores.astype(np.float32), exact=exact, per_query=per_query,
                   summary=stratify(per_query, bench.query_levels[evaluation.query_rows], None,
                                    exact))


def reranked_exact(exact: ExactResult, before: np.ndarray, after: np.ndarray, k: int
                   ) -> ExactResult:
    """The exact result with the ranks of positives inside the top k moved to their new places.

    Only valid when the first stage's top k is the exact top k (an exact factory).
    """
    ranks = exact.positive_ranks.copy()
    for q in range(len(ranks)):
        moved = {int(i): position + 1 for position, i in enumerate(after[q, :k]) if i >= 0}
        old = {position + 1: int(i) for position, i in enumerate(before[q, :k]) if i >= 0}
        row = [moved[old[r]] if 0 < r <= k and r in old else r for r in ranks[q]]
        filled = sorted(r for r in row if r > 0)
        ranks[q] = np.array(filled + [0] * (len(row) - len(filled)), dtype=ranks.dtype)
    return replace(exact, top_ids=after, positive_ranks=ranks)
