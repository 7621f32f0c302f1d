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

    def __post_init__(self) -> None:
        if (self.weight < 0 or self.cap < 1 or self.threshold_cells <= 0 or self.iterations < 1
                or not 0 <= self.expansion <= 1 or self.expansion_top < 1
                or self.expansion_min_inliers < 0 or not 0 <= self.appearance <= 1):
            raise ValueError(f"invalid re-ranking parameters: {self}")


@dataclass(frozen=True)
class Verification:
    inliers: int
    matches: int
    source: np.ndarray  # float32 (M, 2) matched query points (image pixels)
    target: np.ndarray  # float32 (M, 2) matched candidate points
    inlier_mask: np.ndarray  # bool (M,)
    appearance: float = 0.0  # mean best-match cosine of the cells, both ways (chamfer similarity)

    @property
    def inlier_ratio(self) -> float:
        return self.inliers / self.matches if self.matches else 0.0


def verify(query: DenseView, candidate: DenseView, params: RerankParams) -> Verification:
    """Mutual nearest-neighbour matches, then an affine RANSAC; its inliers are the evidence.

    From the same similarity matrix: the appearance similarity, each cell's best cosine in the
    other image averaged over both images' cells. It needs no geometry, so it still speaks when
    blur has smeared the texture too much for matches to line up.
    """
    similarity = similarity_matrix(query.descriptors, candidate.descriptors)
    matches = mutual_matches(similarity, min_similarity=params.min_similarity)
    source = query.points[matches.index_a]
    target = candidate.points[matches.index_b]
    result = ransac_affine(source, target, threshold=params.threshold_cells * candidate.cell_size,
                           iterations=params.iterations, seed=params.seed)
    return Verification(int(result.inlier_count), len(source), source, target, result.inliers,
                        _appearance(similarity))


def _appearance(similarity: np.ndarray) -> float:
    if similarity.size == 0:
        return 0.0
    return float((similarity.max(axis=1).mean() + similarity.max(axis=0).mean()) / 2)
