"""A spread-out regulariser for the embedding (global orthogonal regularisation).

Why: the trained vectors vary along about ten directions whatever their width (participation
ratio, `retrieval.train.embedding_stats`), so among many distractors a query meets wrong images
that merely share those few properties. Two independent directions drawn uniformly on the unit
sphere of d dimensions have a cosine of mean 0 and mean square 1/d. This term pulls the cosines
of every pair of different instances in the batch towards those moments: their mean towards 0,
and their mean square down to 1/d (no cost below it), so the vectors use more of their width.
"""

from __future__ import annotations

import torch


def spread_out_loss(embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """mean(s)^2 + max(0, mean(s^2) - 1/d) over cosines s of pairs of different instances.

    `embeddings` [B, d] are unit vectors, `labels` [B] their instances. A batch with one instance
    has no such pair and gives a zero that still belongs to the graph.
    """
    if embeddings.ndim != 2 or labels.shape != embeddings.shape[:1]:
        raise ValueError(f"embeddings {tuple(embeddings.shape)} must be [B, d] and labels "
                         f"{tuple(labels.shape)} [B]")
    different = labels[:, None] != labels[None, :]
    different = torch.triu(different, diagonal=1)  # each unordered pair once
    if not bool(different.any()):
        return embeddings.sum() * 0.0
    vectors = embeddings.float()
    cosines = (vectors @ vectors.T)[different]
    first_moment = cosines.mean()
    second_moment = cosines.pow(2).mean()
    uniform_second_moment = 1.0 / embeddings.shape[1]
    return first_moment.pow(2) + (second_moment - uniform_second_moment).clamp(min=0)
