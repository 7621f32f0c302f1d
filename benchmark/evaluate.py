"""Run every method on identical data: embed once, index, search every query, score.

All methods embed the same items from the same loaded pixels (`benchmark.vector_cache`); an item
that fails for one method is left out for all. For each method an exact streaming pass gives the
rank of every positive (full-ranking mAP) and the exact top-100. The top-100 that is scored is
the index's answer: for an exact factory that is the exact pass itself (the same inner products
a flat FAISS index computes); for an approximate one a FAISS index is built with the `indexer`
functions, and its recall@100 against the exact top-100 is reported. Equal scores are ordered by
the benchmark set's tie keys (seeded, from image ids), never by database position; the FAISS
index receives the rows in that order, so however FAISS orders equal scores, it does not follow
the protocol's database-rows-before-distractors layout either.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmark.protocol import BenchmarkSet
from benchmark.ranking import ExactResult, exact_search
from benchmark.scoring import RANK_DEPTH, per_query_metrics, stratify
from benchmark.vector_cache import all_errors, embed_items, failed_positions
from indexer import gpu
from indexer.build import build_faiss_index
from indexer.cluster.embedding import RemoteEmbedder
from indexer.cluster.engine import Engine
from indexer.embedder_protocol import EmbedderLike
from indexer.factory import AUTO, EXACT_FACTORY, resolve_factory

EXACT = "exact"  # alias accepted for `factory`
EXACT_FACTORIES = ("Flat", "IDMap,Flat", EXACT_FACTORY)


class EvaluationError(ValueError):
    """A benchmark that cannot be scored (e.g. no database image could be embedded)."""


@dataclass(frozen=True)
class Method:
    name: str
    embedder: EmbedderLike
    checkpoint: str | None = None  # where its weights came from, for the report


@dataclass(frozen=True)
class MethodRun:
    name: str
    factory: str  # FAISS factory searched with
    approximate: bool
    tuned: dict  # search parameters chosen for an approximate index (e.g. nprobe)
    ranked_ids: np.ndarray  # (Q, RANK_DEPTH) database indices scored, -1 pads
    ranked_scores: np.ndarray  # (Q, RANK_DEPTH)
    exact: ExactResult
    per_query: dict[str, np.ndarray]
    summary: dict  # `scoring.stratify` output
    database_vectors: np.ndarray | None = None  # (N, D) by database position (memory-mapped)


@dataclass
class Evaluation:
    query_rows: np.ndarray  # positions in bench.queries of the evaluated queries
    database_valid: np.ndarray  # bool per database row: embedded by every method
    errors: list[tuple[int, str]]  # (item position: queries first, then database, message)
    runs: list[MethodRun] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def evaluate(bench: BenchmarkSet, methods: Sequence[Method], work_dir: str | Path,
             factory: str = AUTO, device: str = "cpu", progress: bool = True,
             workers: int | None = None, engine: Engine | None = None,
             remotes: Mapping[str, RemoteEmbedder] | None = None) -> Evaluation:
    """Embed (resumably, vectors cached in `work_dir`), search and score every method.

    `factory`: "auto" (exact up to 100k vectors), "exact", or a FAISS factory string. `engine`
    (default this process) embeds; a remote one loads each method from `remotes`.
    """
    if not methods:
        raise ValueError("no method to evaluate")
    items = bench.items()
    started = time.perf_counter()
    files = embed_items(items, {m.name: m.embedder for m in methods}, Path(work_dir),
                        bench.queries.digest() + bench.database.digest(), progress, workers,
                        engine, remotes)
    num_queries = len(bench.queries)
    failed = failed_positions(files, len(items))
    evaluation = Evaluation(query_rows=np.flatnonzero(~failed[:num_queries]),
                            database_valid=~failed[num_queries:], errors=all_errors(files))
    evaluation.timings["embed"] = time.perf_counter() - started
    if not evaluation.database_valid.any():
        first = evaluation.errors[0][1] if evaluation.errors else "none"
        raise EvaluationError(
            f"{bench.manifest}: no database item could be embedded; first error: {first}")
    for method in methods:
        vectors = files[method.name].vectors
        queries = np.asarray(vectors[:num_queries][evaluation.query_rows])
        run = _run_method(bench, method.name, queries, vectors[num_queries:], evaluation,
                          factory, device, progress)
        evaluation.runs.append(run)
    return evaluation


def _run_method(bench: BenchmarkSet, name: str, queries: np.ndarray, database: np.ndarray,
                evaluation: Evaluation, factory: str, device: str, progress: bool) -> MethodRun:
    labels = bench.query_labels[evaluation.query_rows]
    valid = evaluation.database_valid
    started = time.perf_counter()
    tie_keys = bench.tie_keys()
    exact = exact_search(queries, database, labels, bench.database_labels, RANK_DEPTH,
                         valid=valid, progress=progress, desc=f"search {name}", tie_keys=tie_keys)
    evaluation.timings[f"exact search: {name}"] = time.perf_counter() - started
    chosen = EXACT_FACTORY if factory == EXACT else resolve_factory(factory, int(valid.sum()),
                                                                       dim=database.shape[1])
    approximate = chosen not in EXACT_FACTORIES
    ranked_ids, ranked_scores, tuned = exact.top_ids, exact.top_scores, {}
    if approximate:
        started = time.perf_counter()
        positions = np.flatnonzero(valid).astype(np.int64)  # ids = database positions
        positions = positions[np.argsort(tie_keys[positions], kind="stable")]
        built = build_faiss_index(np.asarray(database[positions], dtype=np.float32), positions,
                                  chosen, "cuda" if _faiss_gpu(device) else "cpu",
                                  progress=progress)
        scores, ids = built.index.search(np.ascontiguousarray(queries, dtype=np.float32),
                                         RANK_DEPTH)
        chosen, tuned = built.factory, built.tuned
        ranked_ids, ranked_scores = ids.astype(np.int64), scores
        evaluation.timings[f"index build and search: {name}"] = time.perf_counter() - started
    per_query = per_query_metrics(ranked_ids, labels, bench.database_labels, exact)
    knn = (ranked_ids, exact.top_ids) if approximate else None
    return MethodRun(
        name=name, factory=chosen, approximate=approximate, tuned=tuned,
        ranked_ids=ranked_ids, ranked_scores=ranked_scores, exact=exact, per_query=per_query,
        summary=stratify(per_query, bench.query_levels[evaluation.query_rows], knn, exact),
        database_vectors=database,
    )


def _faiss_gpu(device: str) -> bool:
    return device == "cuda" and gpu.gpu_count() > 0
