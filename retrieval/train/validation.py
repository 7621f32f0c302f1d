"""Validation during training: the benchmark's query/database protocol on the val instances.

Per val instance, the first third of its trajectories give queries (the first exposure reaching
each blur level 1..6) and every other trajectory gives one database image (level-balanced), as
`synth` does for the test split. The score is mAP@100, standard definition (docs/method.md, "Metrics"),
overall and per query blur level, from an exact dot-product search.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from retrieval.embed import Embedder
from retrieval.manifest import ManifestRow
from retrieval.metrics import (
    ap_at_k_standard,
    mean_by_group,
    rank_by_scores,
    relevance_matrix,
    summarise,
)
from retrieval.sim.layout import (
    BENCHMARK_LEVELS,
    query_trajectory_count,
    select_database_exposure,
    select_query_exposures,
)
from retrieval.train.embedding_stats import participation_ratio, variance_shares
from retrieval.train.errors import TrainDataError

TOP_K = 100


@dataclass(frozen=True)
class ValidationSet:
    queries: list[ManifestRow]
    query_instances: np.ndarray  # int64 manifest instance id per query
    query_levels: np.ndarray  # int64 blur level per query
    database: list[ManifestRow]
    database_instances: np.ndarray  # int64 manifest instance id per database image
    # uint8 [N, H, W, 3] images of no query's instance added to the database (val_distractors.py)
    distractors: np.ndarray | None = None


def build_validation_set(
    items: list[ManifestRow], table: pa.Table, manifest: Path, max_queries: int | None = None
) -> ValidationSet | None:
    """Queries and database from the rows with role 'val'; None when there are none.

    `max_queries` keeps that many queries, evenly spread over the list (which is ordered by
    instance, then trajectory, then level), to cap the cost of validating every epoch.
    """
    role = table.column("role").to_numpy(zero_copy_only=False)
    rows = np.flatnonzero(role == "val")
    if len(rows) == 0:
        return None
    levels = table.column("blur_level").to_pylist()
    if any(levels[i] is None for i in rows):
        raise TrainDataError(f"{manifest}: val rows without blur_level; cannot pick queries")
    instance = table.column("instance").to_numpy()
    trajectory = table.column("trajectory").to_numpy()
    exposure = table.column("exposure").to_numpy()

    by_trajectory: dict[int, dict[int, list[int]]] = {}
    for i in rows[np.lexsort((exposure[rows], trajectory[rows], instance[rows]))]:
        by_trajectory.setdefault(int(instance[i]), {}).setdefault(int(trajectory[i]), []).append(i)

    queries: list[tuple[int, int]] = []  # (row, level)
    database: list[int] = []
    for trajectories in by_trajectory.values():
        numbers = sorted(trajectories)
        query_count = query_trajectory_count(len(numbers))
        for position, number in enumerate(numbers):
            ordered = trajectories[number]  # rows of this trajectory by exposure
            trajectory_levels = [int(levels[i]) for i in ordered]
            if position < query_count:
                chosen = select_query_exposures(trajectory_levels)
                queries.extend((ordered[chosen[level]], level) for level in sorted(chosen))
            else:
                database.append(ordered[select_database_exposure(trajectory_levels, number)])

    if max_queries is not None and len(queries) > max_queries:
        keep = np.unique(np.linspace(0, len(queries) - 1, max_queries).round().astype(int))
        queries = [queries[i] for i in keep]
    query_rows = [row for row, _ in queries]
    return ValidationSet(
        queries=[items[i] for i in query_rows],
        query_instances=instance[query_rows].astype(np.int64),
        query_levels=np.array([level for _, level in queries], dtype=np.int64),
        database=[items[i] for i in database],
        database_instances=instance[database].astype(np.int64),
    )


@dataclass(frozen=True)
class ValidationVectors:
    """A validation set's embeddings (the images that embedded), with their labels."""

    queries: np.ndarray  # float32 [Q, D]
    query_labels: np.ndarray  # int64 [Q]
    levels: np.ndarray  # int64 [Q] blur level per query
    database: np.ndarray  # float32 [N, D], the val database alone
    database_labels: np.ndarray  # int64 [N]
    distractors: np.ndarray | None  # float32 [M, D], or None without distractors
    failed_images: int


def embed_validation(embedder: Embedder, validation: ValidationSet,
                     progress: bool = False) -> ValidationVectors:
    """Embed queries, database and distractors. Images that fail to embed are counted in
    `failed_images` and left out (a failed database image is simply absent, a failed query is
    not scored)."""
    num_queries = len(validation.queries)
    result = embedder.embed(validation.queries + validation.database, progress=progress)
    is_query = result.ok < num_queries
    query_index = result.ok[is_query]
    database_index = result.ok[~is_query] - num_queries
    failed = len(result.errors)
    distractors = None
    if validation.distractors is not None and len(validation.distractors):
        extra = embedder.embed(list(validation.distractors), progress=progress)
        failed += len(extra.errors)
        distractors = extra.vectors
    return ValidationVectors(
        queries=result.vectors[is_query], query_labels=validation.query_instances[query_index],
        levels=validation.query_levels[query_index], database=result.vectors[~is_query],
        database_labels=validation.database_instances[database_index], distractors=distractors,
        failed_images=failed)


def score_vectors(vectors: ValidationVectors) -> dict[str, Any]:
    """mAP@100 (standard) overall and per blur level 1..6; None where nothing was scored.

    With distractors, "map@100" and "per_level" are measured among them (the figures a
    checkpoint is chosen by) and "without_distractors" holds the same against the val database
    alone. "participation_ratio" is how many directions the val database's vectors effectively
    spread over (`embedding_stats.participation_ratio`), to watch a run's vectors narrow.
    """
    database, labels = vectors.database, vectors.database_labels
    metrics: dict[str, Any] = {}
    if vectors.distractors is not None:
        database = np.concatenate([database, vectors.distractors])
        labels = np.concatenate([labels, np.full(len(vectors.distractors), -1, dtype=np.int64)])
        metrics["distractors"] = len(vectors.distractors)

    scores = vectors.queries @ database.T  # the val database's columns first, then the distractors'
    overall, per_level = score_ranking(rank_by_scores(scores, TOP_K), vectors.query_labels,
                                       labels, vectors.levels)
    if metrics:
        clean, clean_levels = score_ranking(
            rank_by_scores(scores[:, :len(vectors.database_labels)], TOP_K),
            vectors.query_labels, vectors.database_labels, vectors.levels)
        metrics["without_distractors"] = {f"map@{TOP_K}": clean["mean"], "per_level": clean_levels}
    return {
        f"map@{TOP_K}": overall["mean"],
        "per_level": per_level,
        "queries": overall["count"],
        "queries_without_positive": overall["no_positive_count"],
        "database": len(vectors.database_labels),
        "failed_images": vectors.failed_images,
        "participation_ratio": (participation_ratio(variance_shares(vectors.database))
                                if len(vectors.database) >= 2 else None),
        **metrics,
    }


def evaluate(embedder: Embedder, validation: ValidationSet, progress: bool = False) -> dict[str, Any]:
    """`score_vectors` of `embed_validation`: what a training run is validated and kept by."""
    return score_vectors(embed_validation(embedder, validation, progress))


def score_ranking(ranked: np.ndarray, query_labels: np.ndarray, database_labels: np.ndarray,
                  levels: np.ndarray) -> tuple[dict[str, Any], dict[str, float | None]]:
    """Standard mAP@100 of a ranking (database indices, best first): the `summarise` entry over
    all queries, and the mean per blur level 1..6 (keys "1".."6", None where no query)."""
    relevant = relevance_matrix(ranked, query_labels, database_labels)
    positives = (query_labels[:, None] == database_labels[None, :]).sum(axis=1)
    ap = ap_at_k_standard(relevant, positives, TOP_K)
    per_level = mean_by_group(ap, levels, BENCHMARK_LEVELS)
    return summarise(ap), {str(level): stats["mean"] for level, stats in per_level.items()}
