"""The re-ranking score of each candidate: global similarity, verification, query expansion.

Three steps, all with parameters chosen on the validation split (`RerankParams`):

1. Mirrored global score: g'_c = (1 - mirror) * g_c + mirror * m_c, with g_c the candidate's
   global cosine to the query and m_c the cosine of the locator model's vectors of the two
   images mirrored left to right (test-time augmentation: the mirrored pair is another look at
   the same two objects, so averaging the two cosines cancels part of the noise either one has
   alone; both images are mirrored, so an object that is not symmetric still matches itself).
   A candidate or query without a mirror vector has m_c = g_c.
2. Verified score: s_c = (1 - appearance) * g'_c + appearance * a_c + weight * min(inliers_c,
   cap) / cap, with a_c the appearance similarity of their dense cells (each cell's best cosine
   in the other image, averaged over the best-matched `appearance_cells` share of cells, both
   ways). The global similarity keeps the order among candidates without evidence; the cells
   add what the single global vector averaged away (among thousands of look-alikes, the
   appearance term is what ranks the query's own object higher most often); the bounded bonus
   lets geometrically verified ones rise without one huge inlier count outweighing everything.
   A candidate that could not be described has m_c = a_c = g_c and no inliers: s_c = g_c.
3. Verified query expansion: E = the `expansion_top` best candidates by s that have at least
   `expansion_min_inliers` inliers, w_e = max(s_e, 0), and

       rerank_score_c = (1 - expansion) * s_c + expansion * sum_e w_e (v_e . v_c) / sum_e w_e

   with v the candidates' global vectors. A candidate that verification put on top is another
   picture of the query's object, taken in another pose and usually with other blur; the
   database images close to it are likely that object too, which a heavily blurred query
   cannot tell on its own. With `expansion` 0, without vectors, or when E is empty (or its
   weights are all zero), rerank_score = s.

The score only reorders the candidates it is given: none is dropped and none is added.
"""

from __future__ import annotations

import numpy as np

from retrieval.rerank.verify import RerankParams


def verified_scores(global_scores: np.ndarray, inliers: np.ndarray, params: RerankParams,
                    appearance: np.ndarray | None = None, mirrored: np.ndarray | None = None
                    ) -> np.ndarray:
    """Steps 1 and 2, s: global score blended with the mirror-image similarity and the
    appearance similarity (where given), plus the bounded inlier bonus."""
    scores = np.asarray(global_scores, dtype=np.float64)
    bonus = np.minimum(np.asarray(inliers, dtype=np.float64), params.cap) / params.cap
    if mirrored is not None and params.mirror:
        scores = (1 - params.mirror) * scores + params.mirror * _per_candidate(mirrored, scores, "mirror")
    if appearance is not None and params.appearance:
        appearance = _per_candidate(appearance, scores, "appearance")
        scores = (1 - params.appearance) * scores + params.appearance * appearance
    return scores + params.weight * bonus


def _per_candidate(values: np.ndarray, scores: np.ndarray, what: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.shape != scores.shape:
        raise ValueError(f"expected one {what} similarity per candidate ({len(scores)}), "
                         f"got an array of shape {values.shape}")
    return values


def expanded_scores(verified: np.ndarray, inliers: np.ndarray, vectors: np.ndarray | None,
                    params: RerankParams) -> np.ndarray:
    """Step 3 from the verified scores s; `vectors` (K, D) are the candidates' global vectors."""
    verified = np.asarray(verified, dtype=np.float64)
    if params.expansion == 0 or vectors is None or len(verified) == 0:
        return verified
    vectors = np.asarray(vectors, dtype=np.float64)
    if vectors.ndim != 2 or len(vectors) != len(verified):
        raise ValueError(f"expected one global vector per candidate ({len(verified)}), "
                         f"got an array of shape {vectors.shape}")
    if not np.isfinite(vectors).all():
        row = int(np.flatnonzero(~np.isfinite(vectors).all(axis=1))[0])
        raise ValueError(f"candidate {row}'s global vector is not finite")
    best = np.argsort(-verified, kind="stable")[:params.expansion_top]
    chosen = best[np.asarray(inliers)[best] >= params.expansion_min_inliers]
    weights = np.maximum(verified[chosen], 0.0)
    if weights.sum() <= 0:
        return verified
    expanded = weights @ (vectors[chosen] @ vectors.T) / weights.sum()
    return (1 - params.expansion) * verified + params.expansion * expanded


def rerank_scores(global_scores: np.ndarray, inliers: np.ndarray, params: RerankParams,
                  vectors: np.ndarray | None = None, appearance: np.ndarray | None = None,
                  mirrored: np.ndarray | None = None) -> np.ndarray:
    """The final re-ranking score of each candidate (all steps)."""
    verified = verified_scores(global_scores, inliers, params, appearance, mirrored)
    return expanded_scores(verified, inliers, vectors, params)


def rerank_order(global_scores: np.ndarray, inliers: np.ndarray, params: RerankParams,
                 vectors: np.ndarray | None = None, appearance: np.ndarray | None = None,
                 mirrored: np.ndarray | None = None) -> np.ndarray:
    """Positions of the candidates best first; equal scores keep their global order."""
    return np.argsort(-rerank_scores(global_scores, inliers, params, vectors, appearance, mirrored),
                      kind="stable")
