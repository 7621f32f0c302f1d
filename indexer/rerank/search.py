"""Two-stage search: the global vector finds the top hits, geometric verification reorders them.

    reranker = load_reranker()                     # retrieval.rerank.reranker
    found = rerank_search(index, ["q.jpg"], embedder, reranker, k=10, rerank_k=50,
                          views=read_cache(index.directory, models))

The global top max(k, rerank_k) is searched; the first `rerank_k` hits are verified against the
query (dense views from the index's cache where it holds them, else described now) and sorted
by their re-ranking score (its query expansion reads the candidates' vectors back from the
index); the hits after them keep their global order. Re-ranking only reorders: a candidate
that cannot be described is scored with null inliers (no verification bonus), and a query that
cannot be described keeps its global ranking, with the reason in `skipped`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from indexer.embedder_protocol import EmbedderLike
from indexer.errors import InvalidQueryError
from indexer.index import Hit, ImageSearch, QueryHits, RetrievalIndex
from retrieval.rerank.describe import describe_all
from retrieval.rerank.verify import DenseView

if TYPE_CHECKING:
    from indexer.rerank.cache import DenseViews
    from retrieval.rerank.reranker import Reranker

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class RerankedQuery(QueryHits):
    skipped: str | None = None  # why this query kept its global ranking; None: it was re-ranked


def rerank_search(index: RetrievalIndex, items: Sequence[Any], embedder: EmbedderLike,
                  reranker: Reranker, k: int, rerank_k: int, views: DenseViews | None = None,
                  progress: bool = False) -> ImageSearch:
    """Search `items`, then re-rank the top `rerank_k` hits of each; k hits per query.

    `views`: cached dense views of database images (by id); the others are described on demand.
    Results are `RerankedQuery`; every hit carries `rerank_score` (its global score where it was
    not verified), `verified_inliers` and `appearance` (None where it was not verified).
    """
    index.check_k(k)
    if isinstance(rerank_k, bool) or not isinstance(rerank_k, (int, np.integer)) or rerank_k < 1:
        raise InvalidQueryError(f"{index.directory}: rerank_k must be a positive integer, "
                                f"got {rerank_k!r}")
    items = list(items)
    found = index.search_images(items, embedder, min(max(k, rerank_k), index.count), progress)
    query_views, failed = describe_all(reranker, [items[r.item] for r in found.results])
    why = dict(failed)
    shortlists = [r.hits[:rerank_k] if query_views[q] is not None else []
                  for q, r in enumerate(found.results)]
    candidates = _candidate_views([hit for hits in shortlists for hit in hits], reranker, views,
                                  progress)
    vectors = _candidate_vectors(index, shortlists) if reranker.params.expansion else None
    results = []
    for q, result in enumerate(found.results):
        rest = [_scored(hit, None, None, hit.score) for hit in result.hits[len(shortlists[q]):]]
        if query_views[q] is None:
            LOG.warning("re-ranking skipped for %s: %s; it keeps the global ranking",
                        _name(items[result.item], result.item), why[q])
            results.append(RerankedQuery(result.item, _renumbered(rest[:k]), skipped=why[q]))
            continue
        top = shortlists[q]
        reranked = reranker.rerank(query_views[q], [candidates[hit.id] for hit in top],
                                   [hit.score for hit in top],
                                   None if vectors is None else np.stack([vectors[h.id] for h in top]))
        ordered = [_scored(top[c.position], c.inliers if c.verified else None, c.appearance,
                           c.rerank_score) for c in reranked]
        results.append(RerankedQuery(result.item, _renumbered((ordered + rest)[:k])))
    return ImageSearch(results=results, errors=found.errors)


def _candidate_views(hits: list[Hit], reranker: Reranker, cached: DenseViews | None,
                     progress: bool) -> dict[int, DenseView | None]:
    """The view of every candidate, each described once however many queries share it."""
    views: dict[int, DenseView | None] = {}
    for hit in hits:
        if hit.id not in views:
            views[hit.id] = None if cached is None else cached.get(hit.id)
    if reranker.params.mirror:
        stale = [i for i, view in views.items() if view is not None and view.mirror is None]
        if stale:
            LOG.warning("%d cached dense views lack the mirror vector the re-ranking parameters use; "
                        "they are described now (`blur-retrieval index dense` adds them to the cache)",
                        len(stale))
        views.update(dict.fromkeys(stale))
    unread = {hit.id: hit.file for hit in hits if views[hit.id] is None}
    for image_id in [i for i, file in unread.items() if file is None]:
        LOG.warning("id %d: a row without a file and without a cached view is not verified; "
                    "it keeps its global score", image_id)
    files = {image_id: file for image_id, file in unread.items() if file is not None}
    described, failed = describe_all(reranker, list(files.values()), progress)
    views.update(zip(files, described))
    for _, message in failed:  # messages name the file
        LOG.warning("candidate not verified (%s); it keeps its global score", message)
    return views


def _candidate_vectors(index: RetrievalIndex, shortlists: list[list[Hit]]
                       ) -> dict[int, np.ndarray] | None:
    """Each candidate's stored vector by id, read back once (None: the index cannot)."""
    ids = sorted({hit.id for hits in shortlists for hit in hits})
    stored = index.stored_vectors(ids) if ids else np.zeros((0, index.dim), dtype=np.float32)
    return None if stored is None else dict(zip(ids, stored))


def _scored(hit: Hit, inliers: int | None, appearance: float | None, score: float) -> Hit:
    return dataclasses.replace(hit, verified_inliers=inliers, appearance=appearance,
                               rerank_score=float(score))


def _renumbered(hits: list[Hit]) -> list[Hit]:
    return [dataclasses.replace(hit, rank=rank) for rank, hit in enumerate(hits, start=1)]


def _name(item: Any, position: int) -> str:
    return os.fspath(item) if isinstance(item, (str, os.PathLike)) else f"query {position}"
