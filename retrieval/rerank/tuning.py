"""Choosing the re-ranking parameters: a grid search on validation queries, never on test.

    stage = first_stage(query_vectors, database_vectors, k=50)   # the global ranking
    views = describe the queries and the database rows in np.unique(stage.top)
    tuned = grid_search(TuningSet(stage, database_vectors, query_views, views_by_row,
                                  query_labels, database_labels, query_levels))
    store_choice("retrieval/checkpoints/dense/dense.json", tuned)

Every combination of the grid (`Grid`) re-orders each query's global top k and is scored by
mAP@100 overall and per blur level. The chosen one has the best mean mAP@100 at blur levels 5
and 6, the queries this stage is for, among those that lose nothing at level 1 (ties: the
better overall mAP@100, then the smaller weight, then less expansion). Verification runs once
per min_similarity, and the appearance similarities once per share of cells; both are reused
for every weight, appearance share, mirror share and expansion setting (combinations that
cannot differ, such as every min_similarity at weight 0, are run once). Beside the chosen one:
the best by overall mAP@100, the best without query expansion, without the appearance
similarity, averaging all cells, and without the mirror-image similarity.

`scripts/tune_rerank.py` runs it on a data set's val split and writes the shipped `dense.json`.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from retrieval.fileio import write_json_atomic
from retrieval.metrics import rank_by_scores
from retrieval.rerank.matching import similarity_matrix
from retrieval.rerank.reranker import mirror_similarity
from retrieval.rerank.scoring import rerank_order
from retrieval.rerank.verify import DenseView, RerankParams, appearance_similarity, verify
from retrieval.train.validation import TOP_K, score_ranking

# (expansion, expansion_top, expansion_min_inliers); (0, 1, 0) is no expansion
EXPANSIONS = ((0.0, 1, 0), *itertools.product((0.25, 0.5, 0.75), (1, 2, 3), (0,)))


@dataclass(frozen=True)
class Grid:
    """The values tried; the product of all of them, less the combinations that cannot differ."""

    weights: tuple[float, ...] = (0.0, 0.025, 0.05)
    min_similarities: tuple[float, ...] = (0.97, 0.98)
    appearances: tuple[float, ...] = (0.0, 0.45, 0.55, 0.65, 0.75)
    appearance_cells: tuple[float, ...] = (0.4, 0.5, 1.0)
    mirrors: tuple[float, ...] = (0.0, 0.35, 0.5)
    expansions: tuple[tuple[float, int, int], ...] = EXPANSIONS
    cap: int = 8
    threshold_cells: float = 4.0


GRID = Grid()


@dataclass(frozen=True)
class FirstStage:
    """The global ranking that re-ranking re-orders: every query's top TOP_K database rows."""

    scores: np.ndarray  # float (Q, N) query x database similarities
    ranked: np.ndarray  # int (Q, TOP_K) database rows, best first (-1 pads a small database)
    k: int  # the depth re-ranked

    @property
    def top(self) -> np.ndarray:
        """int (Q, k): the candidates of each query."""
        return self.ranked[:, :self.k]

    @property
    def candidates(self) -> np.ndarray:
        """The database rows that need a dense view, ascending."""
        top = self.top
        return np.unique(top[top >= 0])


def first_stage(query_vectors: np.ndarray, database_vectors: np.ndarray, k: int) -> FirstStage:
    """Exact search of unit vectors: the ranking a flat index gives."""
    if not 1 <= k <= len(database_vectors):
        raise ValueError(f"k must be in 1..{len(database_vectors)} (the database), got {k}")
    scores = query_vectors @ database_vectors.T
    return FirstStage(scores, rank_by_scores(scores, TOP_K), k)


@dataclass(frozen=True)
class TuningSet:
    """Validation queries, their candidates and what re-ranking needs to re-order them."""

    stage: FirstStage
    database_vectors: np.ndarray  # float (N, D): the candidates' vectors, for query expansion
    query_views: Sequence[DenseView]
    database_views: dict[int, DenseView]  # by database row: every row of `stage.candidates`
    query_labels: np.ndarray  # instance per query
    database_labels: np.ndarray  # instance per database row (-1: a distractor)
    query_levels: np.ndarray  # blur level per query

    def map100(self, ranked: np.ndarray) -> dict[str, float | None]:
        """mAP@100 of a ranking: "all", then "1".."6" by blur level."""
        overall, per_level = score_ranking(ranked, self.query_labels, self.database_labels,
                                           self.query_levels)
        return {"all": overall["mean"], **per_level}


@dataclass
class Tuning:
    """A grid search's outcome: the baseline, one row per combination and the choices."""

    baseline: dict[str, float | None]  # mAP@100 of the global ranking
    grid: list[dict[str, Any]]  # {"params": asdict(RerankParams), "map100": {...}} per combination
    choices: dict[str, dict[str, Any]] = field(default_factory=dict)  # "best", "best_overall", ...

    @property
    def best(self) -> dict[str, Any]:
        return self.choices["best"]

    def table(self) -> tuple[list[str], list[list[Any]]]:
        """The grid as columns and rows (parameters, then mAP@100 per key, 6 decimals)."""
        keys = list(self.baseline)
        columns = list(self.grid[0]["params"]) + [f"map100_{key}" for key in keys]
        rows = [[*entry["params"].values(), *(round(entry["map100"][key], 6) for key in keys)]
                for entry in self.grid]
        return columns, rows


def high_blur(entry: dict[str, Any]) -> float:
    """The objective: mean mAP@100 at blur levels 5 and 6."""
    return (entry["map100"]["5"] + entry["map100"]["6"]) / 2


def best_entry(grid: list[dict[str, Any]], baseline: dict[str, float | None],
               objective: Callable[[dict[str, Any]], float] = high_blur) -> dict[str, Any]:
    """Best by `objective` among the entries that lose nothing at level 1 (all if none does);
    ties: the better overall mAP@100, then the smaller weight, then less expansion."""
    if not grid:
        raise ValueError("no grid entry to choose from")
    safe = [entry for entry in grid if entry["map100"]["1"] >= baseline["1"]] or grid
    return max(safe, key=lambda entry: (objective(entry), entry["map100"]["all"],
                                        -entry["params"]["weight"], -entry["params"]["expansion"]))


def choose(grid: list[dict[str, Any]], baseline: dict[str, float | None]) -> dict[str, dict[str, Any]]:
    """The chosen entry and the best of each family beside it."""

    def without(key: str, value: float) -> list[dict[str, Any]]:
        return [entry for entry in grid if entry["params"][key] == value]

    return {
        "best": best_entry(grid, baseline),
        "best_overall": best_entry(grid, baseline, objective=lambda entry: entry["map100"]["all"]),
        "best_without_expansion": best_entry(without("expansion", 0), baseline),
        "best_without_appearance": best_entry(without("appearance", 0), baseline),
        "best_with_all_cells": best_entry(without("appearance_cells", 1), baseline),
        "best_without_mirror": best_entry(without("mirror", 0), baseline),
    }


def grid_search(data: TuningSet, grid: Grid = GRID, progress: bool = False) -> Tuning:
    """Score every combination of `grid` on `data`; see the module's docstring for the choice."""
    if not grid.weights or not grid.min_similarities or 0.0 not in grid.weights:
        raise ValueError("the grid needs weights including 0 and at least one min_similarity")
    if any(0.0 not in values for values in (grid.appearances, grid.mirrors)) or (
            1.0 not in grid.appearance_cells or (0.0, 1, 0) not in grid.expansions):
        raise ValueError("the grid needs appearance 0, appearance_cells 1, mirror 0 and the "
                         "no-expansion setting (0, 1, 0): the choices compare against them")
    stage = data.stage
    top = stage.top
    top_scores = np.take_along_axis(stage.scores, top, axis=1)
    top_vectors = data.database_vectors[top]  # (Q, k, D): each query's candidates
    query_views, database_views = data.query_views, data.database_views
    appearances = _appearances(query_views, database_views, top, grid.appearance_cells, progress)
    mirrored = np.array([[mirror_similarity(query_views[q], database_views[c], top_scores[q, p])
                          for p, c in enumerate(top[q])] for q in range(len(top))])
    baseline = data.map100(stage.ranked)
    entries = []
    for min_similarity in tqdm(grid.min_similarities, desc="grid", unit="min_similarity",
                               disable=not progress):
        params = RerankParams(min_similarity=min_similarity, threshold_cells=grid.threshold_cells,
                              cap=grid.cap)
        inliers = np.array([[verify(query_views[q], database_views[c], params).inliers
                             for c in top[q]] for q in range(len(top))])
        # weight 0 ignores the inliers: run it for the first min_similarity only
        weights = (grid.weights if min_similarity == grid.min_similarities[0]
                   else [weight for weight in grid.weights if weight])
        for weight, share, cells, mirror, (expansion, top_n, min_inliers) in itertools.product(
                weights, grid.appearances, grid.appearance_cells, grid.mirrors, grid.expansions):
            if share == 0 and cells != 1:
                continue  # without the appearance term its cells do not matter
            chosen = replace(params, weight=weight, appearance=share, appearance_cells=cells,
                             mirror=mirror, expansion=expansion, expansion_top=top_n,
                             expansion_min_inliers=min_inliers)
            reordered = stage.ranked.copy()
            for q in range(len(top)):
                order = rerank_order(top_scores[q], inliers[q], chosen, top_vectors[q],
                                     appearances[cells][q], mirrored[q])
                reordered[q, :stage.k] = top[q][order]
            entries.append({"params": asdict(chosen), "map100": data.map100(reordered)})
    return Tuning(baseline, entries, choose(entries, baseline))


def store_choice(dense_json: str | Path, tuning: Tuning, k: int, distractors: int) -> None:
    """Write the chosen parameters into a dense checkpoint's config (its "rerank", which the
    re-ranker loads) with what they were chosen on ("rerank_validation")."""
    config = json.loads(Path(dense_json).read_text(encoding="utf-8"))
    config["rerank"] = tuning.best["params"]
    config["rerank_validation"] = {"k": k, "distractors": distractors, "baseline": tuning.baseline,
                                   "reranked": tuning.best["map100"]}
    write_json_atomic(dense_json, config)


def _appearances(query_views: Sequence[DenseView], database_views: dict[int, DenseView],
                 top: np.ndarray, shares: Sequence[float], progress: bool
                 ) -> dict[float, np.ndarray]:
    """Appearance similarity of every (query, candidate) pair, (Q, k) per share of cells."""
    values = {cells: np.zeros(top.shape) for cells in shares}
    for q in tqdm(range(len(top)), desc="appearance", unit="query", disable=not progress):
        for position, candidate in enumerate(top[q]):
            similarity = similarity_matrix(query_views[q].descriptors,
                                           database_views[candidate].descriptors)
            for cells, table in values.items():
                table[q, position] = appearance_similarity(similarity, cells)
    return values
