"""L_con as a softmax over the whole batch (multi-positive InfoNCE), an alternative to pairs.

The published contrastive loss looks at one positive and five negatives per anchor, and a
negative farther than the margin costs nothing. Among look-alikes the signal that matters is
how each anchor ranks its own instance against every other instance at once: this loss gives
every anchor a softmax over its similarities to all other images of the batch (and to the
cross-batch memory, when there is one), and raises the share of its positives. Hard negatives
get the largest weights by construction, so no miner is needed.

Positives follow the published rule: the same instance along a different trajectory. Other
images of the same instance (same trajectory, other exposure) are neither positives nor
negatives; they are left out of the softmax.
"""

from __future__ import annotations

import torch


def batch_softmax_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    trajectories: torch.Tensor,
    temperature: float = 0.1,
    memory: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Mean over anchors with a positive of -mean_p log softmax(cos / temperature)[p].

    `embeddings` are unit vectors [B, D]; `labels` and `trajectories` [B]. `memory` =
    (embeddings [M, D], labels [M]) of earlier batches, detached: its entries of other
    instances join every anchor's softmax as negatives. No anchor with a positive gives a zero
    that still belongs to the graph.
    """
    if labels.ndim != 1 or labels.shape != trajectories.shape or embeddings.shape[0] != labels.shape[0]:
        raise ValueError(
            f"embeddings {tuple(embeddings.shape)}, labels {tuple(labels.shape)} and trajectories "
            f"{tuple(trajectories.shape)} must agree on the batch size"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    emb = embeddings.float()
    same_instance = labels[:, None] == labels[None, :]
    positive = same_instance & (trajectories[:, None] != trajectories[None, :])
    in_softmax = positive | ~same_instance
    logits = (emb @ emb.T) / temperature
    if memory is not None and memory[1].numel():
        mem_embeddings, mem_labels = memory
        logits = torch.cat([logits, (emb @ mem_embeddings.float().T) / temperature], dim=1)
        positive = torch.cat([positive, torch.zeros_like(logits[:, emb.shape[0]:], dtype=torch.bool)],
                             dim=1)
        in_softmax = torch.cat([in_softmax, labels[:, None] != mem_labels[None, :]], dim=1)
    anchors = positive.any(dim=1)
    if not bool(anchors.any()):
        return embeddings.sum() * 0.0
    logits, positive, in_softmax = logits[anchors], positive[anchors], in_softmax[anchors]
    log_share = logits - logits.masked_fill(~in_softmax, float("-inf")).logsumexp(dim=1, keepdim=True)
    per_anchor = -(log_share * positive).sum(dim=1) / positive.sum(dim=1)
    return per_anchor.mean()
