"""Per-query metrics of one method and their means overall and per blur level 1..6.

The definitions live in `retrieval.metrics` (docs/method.md, "Metrics"); this module only
applies them to a benchmark run and stratifies by the query's blur level. A query without
positive is NaN in every metric, so it is counted (`no_positive`) rather than averaged in; so
are the queries whose score depends on how ties are broken (TIES).
"""

from __future__ import annotations

import numpy as np

from benchmark.ranking import ExactResult, ap_from_ranks
from retrieval.metrics import (
    ap_at_k_paper,
    ap_at_k_standard,
    knn_recall,
    mean_by_group,
    recall_at_k,
    relevance_matrix,
    summarise,
)
from retrieval.sim.layout import BENCHMARK_LEVELS

RANK_DEPTH = 100
METRICS = {  # report key -> label
    "map100": "mAP@100",
    "map100_paper": "mAP@100 (paper protocol)",
    "map_full": "mAP (full ranking)",
    "recall1": "R@1",
    "recall10": "R@10",
}
KNN_KEY = "knn_recall100"
KNN_LABEL = "recall@100 of the index vs exact search"
# Report keys counting the queries whose exact ranking has a positive tied with a non-positive
# in a tie group that holds rank RANK_DEPTH / that starts within the top RANK_DEPTH.
TIES = ("ties_at_cutoff", "ties_in_top_k")


def per_query_metrics(ranked_ids: np.ndarray, query_labels: np.ndarray,
                      database_labels: np.ndarray, exact: ExactResult) -> dict[str, np.ndarray]:
    """Every metric of METRICS for each query: the top-k ones from `ranked_ids` (the index's
    answer), the full-ranking AP from the exact ranks of all positives."""
    if ranked_ids.shape[1] < RANK_DEPTH:
        raise ValueError(f"rankings need {RANK_DEPTH} columns (pad with -1), got {ranked_ids.shape}")
    rel = relevance_matrix(ranked_ids[:, :RANK_DEPTH], query_labels, database_labels)
    m = exact.num_positives
    return {
        "map100": ap_at_k_standard(rel, m, RANK_DEPTH),
        "map100_paper": ap_at_k_paper(rel, RANK_DEPTH, m),
        "map_full": ap_from_ranks(exact.positive_ranks, m),
        "recall1": recall_at_k(rel, 1, m),
        "recall10": recall_at_k(rel, 10, m),
    }


def stratify(per_query: dict[str, np.ndarray], levels: np.ndarray,
             knn: tuple[np.ndarray, np.ndarray] | None = None,
             exact: ExactResult | None = None) -> dict:
    """{"overall": entry, "levels": {level: entry}} with entry = {"queries", "no_positive",
    one mean per metric (None where no query has a positive), KNN_KEY, one count per TIES key}.

    `knn` = (index top-k ids, exact top-k ids) of an approximate index; None for exact search,
    whose KNN_KEY is then None. `exact`: the exact ranking the tie counts come from (None: the
    counts are None).
    """
    levels = np.asarray(levels)
    by_metric = {key: mean_by_group(values, levels, BENCHMARK_LEVELS)
                 for key, values in per_query.items()}
    overall_rows = np.isin(levels, BENCHMARK_LEVELS)

    def entry(summaries: dict[str, dict], rows: np.ndarray) -> dict:
        first = next(iter(summaries.values()))
        result = {"queries": first["count"] + first["no_positive_count"],
                  "no_positive": first["no_positive_count"]}
        result.update({key: summary["mean"] for key, summary in summaries.items()})
        result[KNN_KEY] = _knn(knn, rows)
        result.update(_tie_counts(exact, rows))
        return result

    return {
        "overall": entry({key: summarise(values[overall_rows])
                          for key, values in per_query.items()}, overall_rows),
        "levels": {level: entry({key: by_metric[key][level] for key in per_query},
                                levels == level)
                   for level in BENCHMARK_LEVELS},
    }


def _tie_counts(exact: ExactResult | None, rows: np.ndarray) -> dict[str, int | None]:
    if exact is None:
        return dict.fromkeys(TIES)
    flags = (exact.tied_at_cutoff, exact.tied_in_top_k)
    return {key: int(np.count_nonzero(flag[rows])) for key, flag in zip(TIES, flags)}


def _knn(knn: tuple[np.ndarray, np.ndarray] | None, rows: np.ndarray) -> float | None:
    if knn is None or not rows.any():
        return None
    value = knn_recall(knn[0][rows], knn[1][rows])
    return None if np.isnan(value) else value
