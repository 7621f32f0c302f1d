"""Geometric verification of one (query, candidate) pair and the re-ranking score.

Evidence that two images show the same object: their dense descriptors (inside each predicted
object box) match mutually, and many of those matches agree on one affine map between the
images, found by RANSAC with a fixed seed. Look-alike instances share colours and style, so
their descriptors match here and there, but the matches do not line up: texture layout is
what tells two instances of a category apart, and what the global vector blurs away. The same
cell similarities also give a softer, geometry-free evidence, the appearance similarity.

How the evidence becomes a re-ranking score is `retrieval.rerank.scoring`'s job; the parameters
of both (`RerankParams`) are chosen on the validation split (scripts/tune_rerank.py), never on
test.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from retrieval.rerank.matching import mutual_matches, similarity_matrix
from retrieval.rerank.ransac import ransac_affine


@dataclass(frozen=True)
class DenseView:
    """One image's dense description: in-box cells only."""

    descriptors: np.ndarray  # float (N, D) unit rows
    points: np.ndarray  # float32 (N, 2) cell centres in image pixels (x, y)
    cell_size: float  # pixels per cell side in this image (its crop side / grid)
    mirror: np.ndarray | None = None  # float32 (E,) the locator's unit vector of the mirrored image


@dataclass(frozen=True)
class RerankParams:
    weight: float = 0.2
    cap: int = 12
    min_similarity: float = 0.5  # mutual matches below this cosine are not evidence
    threshold_cells: float = 1.5  # RANSAC inlier threshold, in the candidate's cells
    iterations: int = 256
    seed: int = 0
    expansion: float = 0.0  # share of the final score given to the expanded query; 0: none
    expansion_top: int = 1  # the best candidates by verified score that may expand the query
    expansion_min_inliers: int = 0  # ... if they have at least this many inliers
    appearance: float = 0.0  # share of the appearance similarity in the verified score; 0: none
    appearance_cells: float = 1.0  # share of each image's cells, best matched first, it averages
    mirror: float = 0.0  # share of the mirror-image similarity in the global score; 0: none

    def __post_init__(self) -> None:
        if (self.weight < 0 or self.cap < 1 or self.threshold_cells <= 0 or self.iterations < 1
                or not 0 <= self.expansion <= 1 or self.expansion_top < 1
                or self.expansion_min_inliers < 0 or not 0 <= self.appearance <= 1
                or not 0 < self.appearance_cells <= 1 or not 0 <= self.mirror <= 1):
            raise ValueError(f"invalid re-ranking parameters: {self}")


@dataclass(frozen=True)
class Verification:
    inliers: int
    matches: int
    source: np.ndarray  # float32 (M, 2) matched query points (image pixels)
    target: np.ndarray  # float32 (M, 2) matched candidate points
    inlier_mask: np.ndarray  # bool (M,)
    appearance: float = 0.0  # mean best-match cosine of the best-matched cells, both ways

    @property
    def inlier_ratio(self) -> float:
        return self.inliers / self.matches if self.matches else 0.0


def verify(query: DenseView, candidate: DenseView, params: RerankParams) -> Verification:
    """Mutual nearest-neighbour matches, then an affine RANSAC; its inliers are the evidence.

    From the same similarity matrix: the appearance similarity (`appearance_similarity`). It
    needs no geometry, so it still speaks when blur has smeared the texture too much for matches
    to line up.
    """
    similarity = similarity_matrix(query.descriptors, candidate.descriptors)
    matches = mutual_matches(similarity, min_similarity=params.min_similarity)
    source = query.points[matches.index_a]
    target = candidate.points[matches.index_b]
    result = ransac_affine(source, target, threshold=params.threshold_cells * candidate.cell_size,
                           iterations=params.iterations, seed=params.seed)
    return Verification(int(result.inlier_count), len(source), source, target, result.inliers,
                        appearance_similarity(similarity, params.appearance_cells))


def appearance_similarity(similarity: np.ndarray, cells: float = 1.0) -> float:
    """Trimmed chamfer similarity of a (query cells, candidate cells) cosine matrix: each cell's
    best cosine in the other image, averaged over the best-matched `cells` share of each image's
    cells (at least one), then over both directions; 0 for an image without cells.

    The box the cells come from also holds background beside the object and, under motion
    blur, a streak where the object is smeared into it; those cells match nothing well in any
    candidate and only add noise to a plain mean. The share is chosen on val with the rest.
    """
    if similarity.size == 0:
        return 0.0
    return (_trimmed_mean(similarity.max(axis=1), cells) + _trimmed_mean(similarity.max(axis=0), cells)) / 2


def _trimmed_mean(best: np.ndarray, cells: float) -> float:
    kept = max(1, int(round(len(best) * cells)))
    if kept >= len(best):
        return float(best.mean())
    return float(np.partition(best, len(best) - kept)[len(best) - kept:].mean())
