"""The re-ranking grid search (retrieval.rerank.tuning) on made-up views whose verification is
known: views of one instance are the same cells moved by an affine map, so they verify with
all their cells; other instances share no cell. Global vectors are noisy, so the first stage
leaves positives below rank 1 for verification to lift."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from retrieval.rerank.reranker import mirror_similarity
from retrieval.rerank.scoring import rerank_order
from retrieval.rerank.tuning import (
    Grid,
    Tuning,
    TuningSet,
    best_entry,
    first_stage,
    grid_search,
    store_choice,
)
from retrieval.rerank.verify import DenseView, RerankParams, verify

INSTANCES = 6
CELLS = 24
SMALL_GRID = Grid(weights=(0.0, 0.5), min_similarities=(0.9, 0.97), appearances=(0.0, 0.5),
                  appearance_cells=(0.5, 1.0), mirrors=(0.0, 0.5),
                  expansions=((0.0, 1, 0), (0.5, 1, 0)), cap=8, threshold_cells=4.0)


def _view(rng: np.random.Generator, cells: np.ndarray, points: np.ndarray, mirror: np.ndarray
          ) -> DenseView:
    """The instance's cells, slightly perturbed, at its points moved by a random rotation and shift."""
    angle = rng.uniform(-0.3, 0.3)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = points @ rotation.T + rng.uniform(-5, 5, 2)
    noisy = cells + rng.normal(0, 0.01, cells.shape)
    mirrored = mirror + rng.normal(0, 1.2, mirror.shape)  # as noisy as the global vectors
    return DenseView(noisy / np.linalg.norm(noisy, axis=1, keepdims=True),
                     moved.astype(np.float32), 4.0,
                     (mirrored / np.linalg.norm(mirrored)).astype(np.float32))


@pytest.fixture(scope="module")
def data() -> TuningSet:
    rng = np.random.default_rng(0)
    cells = rng.normal(size=(INSTANCES, CELLS, 16))
    cells /= np.linalg.norm(cells, axis=2, keepdims=True)
    points = rng.uniform(0, 64, (INSTANCES, CELLS, 2))
    centres = rng.normal(size=(INSTANCES, 8))
    mirrors = rng.normal(size=(INSTANCES, 8))

    def images(labels: np.ndarray, noise: float) -> tuple[np.ndarray, list[DenseView]]:
        vectors = centres[labels] + rng.normal(0, noise, (len(labels), 8))
        views = [_view(rng, cells[i], points[i], mirrors[i]) for i in labels]
        return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32), views

    database_labels = np.repeat(np.arange(INSTANCES), 4)  # 24 rows, 4 per instance
    query_labels = np.repeat(np.arange(INSTANCES), 2)
    database_vectors, database_views = images(database_labels, 1.2)
    query_vectors, query_views = images(query_labels, 1.2)
    stage = first_stage(query_vectors, database_vectors, k=8)
    return TuningSet(stage, database_vectors, query_views,
                     {int(row): database_views[row] for row in stage.candidates},
                     query_labels, database_labels, np.tile(np.arange(1, 7), 2))


@pytest.fixture(scope="module")
def tuned(data: TuningSet) -> Tuning:
    return grid_search(data, SMALL_GRID)


def test_every_combination_that_can_differ_is_scored_once(tuned: Tuning):
    # appearance 0 needs no cells share: (0 with cells 1) + (0.5 with 2 shares) = 3 appearance settings;
    # weight 0 runs for the first min_similarity only: 2 + 1 weights
    assert len(tuned.grid) == (2 + 1) * 3 * 2 * 2
    params = [tuple(entry["params"].values()) for entry in tuned.grid]
    assert len(set(params)) == len(params)
    columns, rows = tuned.table()
    assert columns[-7:] == ["map100_all", *(f"map100_{level}" for level in range(1, 7))]
    assert len(rows) == len(tuned.grid) and all(len(row) == len(columns) for row in rows)


def test_verification_lifts_the_positives_the_global_vectors_left_below(tuned: Tuning):
    assert tuned.baseline["all"] < 1.0  # the global vectors alone were not enough
    assert tuned.best["map100"]["all"] > tuned.baseline["all"]
    inliers_only = tuned.choices["best_without_appearance"]  # geometry alone lifts them too
    assert inliers_only["params"]["weight"] > 0
    assert inliers_only["map100"]["all"] > tuned.baseline["all"]
    safe = [e for e in tuned.grid if e["map100"]["1"] >= tuned.baseline["1"]]
    high = [(e["map100"]["5"] + e["map100"]["6"]) / 2 for e in safe]
    assert (tuned.best["map100"]["5"] + tuned.best["map100"]["6"]) / 2 == max(high)
    assert set(tuned.choices) == {"best", "best_overall", "best_without_expansion",
                                  "best_without_appearance", "best_with_all_cells",
                                  "best_without_mirror"}
    assert tuned.choices["best_without_expansion"]["params"]["expansion"] == 0
    assert tuned.choices["best_without_mirror"]["params"]["mirror"] == 0


def test_a_grid_entry_scores_what_verifying_afresh_gives(data: TuningSet, tuned: Tuning):
    """Inliers, appearance and mirror similarities are computed once and reused: an entry must
    equal the re-ranking computed from scratch with its parameters."""
    entry = next(e for e in tuned.grid if e["params"]["weight"] and e["params"]["appearance"]
                 and e["params"]["appearance_cells"] == 0.5 and e["params"]["mirror"]
                 and e["params"]["expansion"] and e["params"]["min_similarity"] == 0.97)
    params = RerankParams(**entry["params"])
    stage = data.stage
    reordered = stage.ranked.copy()
    for q, candidates in enumerate(stage.top):
        views = [data.database_views[int(c)] for c in candidates]
        checked = [verify(data.query_views[q], view, params) for view in views]
        scores = stage.scores[q, candidates]
        order = rerank_order(scores, np.array([c.inliers for c in checked]), params,
                             data.database_vectors[candidates],
                             np.array([c.appearance for c in checked]),
                             np.array([mirror_similarity(data.query_views[q], view, s)
                                       for view, s in zip(views, scores)]))
        reordered[q, :stage.k] = candidates[order]
    assert data.map100(reordered) == entry["map100"]


def test_the_choice_never_loses_at_level_1_and_breaks_ties_by_overall_then_weight():
    baseline = {"all": 0.5, "1": 0.8, "5": 0.2, "6": 0.2}

    def entry(weight, level1, high, overall, expansion=0.0):
        return {"params": {"weight": weight, "expansion": expansion},
                "map100": {"all": overall, "1": level1, "5": high, "6": high}}

    loses_at_1 = entry(0.05, 0.79, 0.9, 0.9)
    plain = entry(0.025, 0.8, 0.5, 0.6)
    better_overall = entry(0.05, 0.8, 0.5, 0.7)
    assert best_entry([loses_at_1, plain, better_overall], baseline) is better_overall
    same_but_lighter = entry(0.025, 0.8, 0.5, 0.7)
    assert best_entry([better_overall, same_but_lighter], baseline) is same_but_lighter
    assert best_entry([loses_at_1], baseline) is loses_at_1  # when every entry loses at level 1
    with pytest.raises(ValueError):
        best_entry([], baseline)


def test_a_grid_without_the_plain_settings_is_refused(data: TuningSet):
    with pytest.raises(ValueError, match="weights including 0"):
        grid_search(data, replace(SMALL_GRID, weights=(0.5,)))
    with pytest.raises(ValueError, match="no-expansion"):
        grid_search(data, replace(SMALL_GRID, expansions=((0.5, 1, 0),)))


def test_k_deeper_than_the_database_is_refused(data: TuningSet):
    with pytest.raises(ValueError, match="k must be in 1..24"):
        first_stage(data.database_vectors[:3], data.database_vectors, k=25)


def test_store_choice_writes_the_parameters_the_reranker_loads(tuned: Tuning, tmp_path):
    dense_json = tmp_path / "dense.json"
    dense_json.write_text(json.dumps({"weights_sha256": "abc", "rerank": {"weight": 9}}))
    store_choice(dense_json, tuned, k=8, distractors=0)
    config = json.loads(dense_json.read_text())
    assert config["weights_sha256"] == "abc"
    assert RerankParams(**config["rerank"]) == RerankParams(**tuned.best["params"])
    assert config["rerank_validation"] == {"k": 8, "distractors": 0, "baseline": tuned.baseline,
                                           "reranked": tuned.best["map100"]}
