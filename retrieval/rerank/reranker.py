"""Re-ranking the top hits: describe images densely, verify each candidate, reorder.

    reranker = load_reranker()                       # shipped dense net + blur-aware locator
    views, errors = reranker.describe_items([query_path, *candidate_paths])
    reranked = reranker.rerank(views[0], views[1:], global_scores, candidate_vectors)

The object box comes from the localisation head of a global model (the shipped `blur-aware`
by default), so verification only compares cells that see the object. A candidate that cannot
be read has zero inliers and its global score as appearance similarity (its score is then its
global score, plus the query expansion term where the candidates' global vectors are given):
re-ranking reorders, it never drops or adds. Where the parameters give the mirror-image
similarity a share, each view also carries the locator's global vector of the image mirrored
left to right (one more forward pass of the locator per image; the box pass itself skips the
locator's crop description).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from retrieval.devices import resolve_device
from retrieval.embed import CHANNELS_LAST, decode_threads, eval_mode, prepare_pixels, to_model_input
from retrieval.model.checkpoint import load_checkpoint
from retrieval.model.network import BlurAwareNet
from retrieval.rerank.dense_checkpoint import load_dense
from retrieval.rerank.dense_net import DenseFeatureNet, cell_centres, object_crops
from retrieval.rerank.names import DEFAULT_LOCATOR, SHIPPED_DENSE
from retrieval.rerank.scoring import rerank_scores
from retrieval.rerank.verify import DenseView, RerankParams, Verification, verify

LOG = logging.getLogger(__name__)
BOX_MARGIN = 1.1  # cells whose centre lies in the predicted box grown by this factor are kept


class LocatorError(ValueError):
    """The model named as locator has no localisation head."""


@dataclass(frozen=True)
class RerankedCandidate:
    position: int  # index into the candidates given
    global_score: float
    inliers: int
    rerank_score: float
    verified: bool  # False when the candidate could not be described (kept, zero inliers)
    appearance: float | None = None  # its appearance similarity; None where not verified


class Reranker:
    """A dense network, a locator for the object boxes, and the score parameters."""

    def __init__(self, dense: DenseFeatureNet, locator: BlurAwareNet, image_size: tuple[int, int],
                 params: RerankParams, batch_size: int = 64) -> None:
        if not locator.has_loc_head:
            raise LocatorError("the locator model has no localisation head to find the object")
        self.dense, self.locator = dense, locator
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.params = params
        self.batch_size = batch_size
        self.device = next(dense.parameters()).device

    def describe_pixels(self, pixels: torch.Tensor, boxes: np.ndarray | None = None
                        ) -> list[DenseView]:
        """Views of uint8 [B, H, W, 3] images at the model size; boxes predicted unless given."""
        views: list[DenseView] = []
        for start in range(0, len(pixels), self.batch_size):
            chunk = pixels[start:start + self.batch_size]
            given = None if boxes is None else boxes[start:start + self.batch_size]
            views += self._describe_batch(chunk, given)
        return views

    def describe_items(self, items: Sequence[Any], threads: int = 1
                       ) -> tuple[list[DenseView | None], list[tuple[int, str]]]:
        """Views of files, in-memory images or manifest rows; None (and a message) where one
        could not be read."""
        pixels, errors = prepare_pixels(list(items), self.image_size, "cpu", decode_threads(threads))
        ok = [i for i, value in enumerate(pixels) if value is not None]
        views: list[DenseView | None] = [None] * len(pixels)
        if ok:
            described = self.describe_pixels(torch.from_numpy(np.stack([pixels[i] for i in ok])))
            for position, view in zip(ok, described):
                views[position] = view
        return views, errors

    def verify(self, query: DenseView, candidate: DenseView) -> Verification:
        return verify(query, candidate, self.params)

    def rerank(self, query: DenseView, candidates: Sequence[DenseView | None],
               global_scores: Sequence[float], candidate_vectors: np.ndarray | None = None
               ) -> list[RerankedCandidate]:
        """Every candidate once, best first by the re-ranking score (ties keep global order).

        `candidate_vectors` (K, D): the candidates' global vectors, for query expansion
        (`retrieval.rerank.scoring`); without them the score is the verified one.
        """
        if len(candidates) != len(global_scores):
            raise ValueError(f"{len(candidates)} candidates but {len(global_scores)} scores")
        global_scores = np.asarray(global_scores, dtype=np.float64)
        checked = [None if view is None else self.verify(query, view) for view in candidates]
        inliers = np.array([0 if v is None else v.inliers for v in checked], dtype=np.int64)
        appearance = np.array([g if v is None else v.appearance for g, v in zip(global_scores, checked)])
        mirrored = np.array([mirror_similarity(query, view, g)
                             for g, view in zip(global_scores, candidates)])
        scores = rerank_scores(global_scores, inliers, self.params, candidate_vectors, appearance,
                               mirrored)
        order = np.argsort(-scores, kind="stable")
        return [RerankedCandidate(int(i), float(global_scores[i]), int(inliers[i]), float(scores[i]),
                                  candidates[i] is not None,
                                  None if checked[i] is None else float(checked[i].appearance))
                for i in order]

    @torch.inference_mode()
    def _describe_batch(self, pixels: torch.Tensor, boxes: np.ndarray | None) -> list[DenseView]:
        images = to_model_input(pixels, self.device)
        mirrors: list[np.ndarray | None] = [None] * len(pixels)
        with eval_mode(self.locator):
            if self.params.mirror:
                mirrors = list(self.locator(images.flip(3)).embedding.float().cpu().numpy())
            box_tensor = (self.locator.locate(images) if boxes is None else
                          torch.as_tensor(np.asarray(boxes), dtype=torch.float32, device=self.device))
        with eval_mode(self.dense):
            crops, squares = object_crops(images.contiguous(), box_tensor, self.dense.crop)
            descriptors = self.dense(crops).flatten(2).transpose(1, 2).cpu().numpy()
        grid = self.dense.grid
        centres = cell_centres(squares.cpu(), self.image_size, grid).numpy()
        keep = _inside_boxes(centres, box_tensor.cpu().numpy(), self.image_size)
        sides = squares[:, 2].cpu().numpy() / grid
        return [DenseView(descriptors[i][keep[i]], centres[i][keep[i]].astype(np.float32),
                          float(sides[i]), mirrors[i]) for i in range(len(pixels))]


def mirror_similarity(query: DenseView, candidate: DenseView | None, global_score: float) -> float:
    """Cosine of the two mirror vectors; the global score where either image lacks one."""
    if candidate is None or query.mirror is None or candidate.mirror is None:
        return global_score
    return float(np.dot(query.mirror.astype(np.float64), candidate.mirror.astype(np.float64)))


def _inside_boxes(centres: np.ndarray, boxes: np.ndarray, image_size: tuple[int, int]
                  ) -> np.ndarray:
    """bool [B, N]: cell centres inside each (grown) box; all cells where none would be."""
    height, width = image_size
    half_w = boxes[:, 2, None] * width / 2 * BOX_MARGIN
    half_h = boxes[:, 3, None] * height / 2 * BOX_MARGIN
    inside = ((np.abs(centres[..., 0] - boxes[:, 0, None] * width) <= half_w)
              & (np.abs(centres[..., 1] - boxes[:, 1, None] * height) <= half_h))
    inside[~inside.any(axis=1)] = True
    return inside


def load_reranker(dense: str = SHIPPED_DENSE, locator: str = DEFAULT_LOCATOR, device: str = "auto",
                  params: RerankParams | None = None, batch_size: int = 64) -> Reranker:
    """A Reranker from checkpoints; parameters from the dense checkpoint (chosen on val)."""
    target = torch.device(resolve_device(device))
    net, config = load_dense(dense, target)
    model, model_config = load_checkpoint(locator, device=target)
    if params is None:
        params = RerankParams(**config.get("rerank", {}))
    return Reranker(net.to(memory_format=CHANNELS_LAST), model.to(memory_format=CHANNELS_LAST),
                    tuple(model_config["image_size"]), params, batch_size)
