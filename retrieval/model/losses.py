"""The four training losses, the in-batch pair miner, and the training methods built from them.

Published total: 1 * L_con + 0.1 * L_cls + 1 * L_be + 10 * L_loc. Each piece is a small pure
function so ablations (any subset of losses) and other trainers can reuse them.

Batches are P instances x K images. The paper forwards one query with one positive and five
random negatives at a time; mining those tuples inside a P x K batch is the batched equivalent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F

from retrieval.model.batch_softmax import batch_softmax_loss
from retrieval.model.network import NetOutput
from retrieval.model.spread import spread_out_loss

LOSS_NAMES = ("con", "cls", "be", "loc")
# L_con as published (mined pairs with a margin, one mean over all pairs), the same pairs with
# positives and negatives averaged apart ("balanced"), or a softmax over the whole batch
CONTRASTIVE_KINDS = ("pairs", "balanced", "softmax")


def contrastive_pair_loss(
    distances: torch.Tensor, is_positive: torch.Tensor, margin: float = 0.7,
    balanced: bool = False,
) -> torch.Tensor:
    """Mean over pairs of 0.5*y*d^2 + 0.5*(1-y)*max(0, margin-d)^2.

    `balanced`: the mean of the positive pairs' mean and the negative pairs' mean instead, so
    the pull between images of one instance weighs as much as all the pushes together however
    many negatives an anchor meets (one mean over all pairs gives a positive 1/6 of the weight
    with five negatives). A group with no pairs adds nothing. No pairs at all gives a zero
    that still belongs to the graph, so a batch without valid tuples does not break the
    backward pass.
    """
    if distances.shape != is_positive.shape:
        raise ValueError(
            f"distances {tuple(distances.shape)} and is_positive {tuple(is_positive.shape)} differ"
        )
    if distances.numel() == 0:
        return distances.sum()
    y = is_positive.to(distances.dtype)
    per_pair = 0.5 * y * distances.pow(2) + 0.5 * (1 - y) * (margin - distances).clamp(min=0).pow(2)
    if not balanced:
        return per_pair.mean()
    groups = [per_pair[is_positive], per_pair[~is_positive]]
    return torch.stack([group.mean() for group in groups if group.numel() > 0]).mean()


def mine_pairs(
    labels: torch.Tensor,
    trajectories: torch.Tensor,
    num_negatives: int = 5,
    hard: bool = False,
    embeddings: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pick (anchor, other, is_positive) index triples inside a batch.

    Each anchor gets ONE positive, drawn at random among images of the same instance from a
    different trajectory (as published: a positive must differ in motion, not just in exposure),
    and up to `num_negatives` images of other instances: random ones, or with `hard=True` the
    closest ones in `embeddings`. Anchors without such a positive are skipped. Draws come from
    `generator` (on the same device as `labels`), so a seeded generator makes the mining
    reproducible. Positive pairs come first, then negatives grouped by anchor.
    """
    if labels.ndim != 1 or labels.shape != trajectories.shape:
        raise ValueError(
            f"labels {tuple(labels.shape)} and trajectories {tuple(trajectories.shape)} "
            "must be equal-length 1-D tensors"
        )
    if num_negatives < 0:
        raise ValueError(f"num_negatives must be >= 0, got {num_negatives}")
    if hard and embeddings is None:
        raise ValueError("hard negative mining needs the embeddings")
    device = labels.device
    n = labels.shape[0]
    same_instance = labels[:, None] == labels[None, :]
    positive_ok = same_instance & (trajectories[:, None] != trajectories[None, :])
    has_positive = positive_ok.any(dim=1)
    if not bool(has_positive.any()):
        empty = torch.empty(0, dtype=torch.long, device=device)
        return empty, empty.clone(), torch.empty(0, dtype=torch.bool, device=device)

    # One random positive per anchor: the arg-max of random scores over the allowed columns.
    scores = torch.rand((n, n), generator=generator, device=device)
    positives = scores.masked_fill(~positive_ok, -1.0).argmax(dim=1)
    anchors = torch.arange(n, device=device)[has_positive]
    pos_anchor, pos_other = anchors, positives[has_positive]

    k = min(num_negatives, n)
    if k == 0:
        neg_anchor = neg_other = torch.empty(0, dtype=torch.long, device=device)
    else:
        if hard:
            with torch.no_grad():
                priority = -torch.cdist(embeddings.float(), embeddings.float())
        else:
            priority = torch.rand((n, n), generator=generator, device=device)
        priority = priority.masked_fill(same_instance, float("-inf"))[has_positive]
        top_priority, top_index = priority.topk(k, dim=1)
        valid = torch.isfinite(top_priority)
        neg_anchor = anchors[:, None].expand(-1, k)[valid]
        neg_other = top_index[valid]

    anchor_idx = torch.cat([pos_anchor, neg_anchor])
    other_idx = torch.cat([pos_other, neg_other])
    is_positive = torch.cat(
        [
            torch.ones_like(pos_anchor, dtype=torch.bool),
            torch.zeros_like(neg_anchor, dtype=torch.bool),
        ]
    )
    return anchor_idx, other_idx, is_positive


def memory_negatives(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    memory_embeddings: torch.Tensor,
    memory_labels: torch.Tensor,
    num_negatives: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(anchor index, memory index) of each anchor's `num_negatives` closest memory entries
    of other instances: hard negatives from beyond the batch (cross-batch memory)."""
    k = min(num_negatives, memory_labels.shape[0])
    empty = torch.empty(0, dtype=torch.long, device=labels.device)
    if k == 0 or embeddings.shape[0] == 0:
        return empty, empty.clone()
    with torch.no_grad():
        priority = -torch.cdist(embeddings.detach().float(), memory_embeddings.float())
        priority = priority.masked_fill(labels[:, None] == memory_labels[None, :], float("-inf"))
        top_priority, top_index = priority.topk(k, dim=1)
    valid = torch.isfinite(top_priority)
    anchors = torch.arange(embeddings.shape[0], device=labels.device)[:, None].expand(-1, k)
    return anchors[valid], top_index[valid]


def contrastive_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    trajectories: torch.Tensor,
    margin: float = 0.7,
    num_negatives: int = 5,
    hard: bool = False,
    generator: torch.Generator | None = None,
    memory: tuple[torch.Tensor, torch.Tensor] | None = None,
    balanced: bool = False,
) -> torch.Tensor:
    """L_con on mined in-batch pairs, Euclidean distance between (unit) embeddings.

    `memory` = (embeddings, labels) of earlier batches, detached: each anchor with a positive
    also meets its `num_negatives` closest memory entries of other instances as negatives,
    counted with the batch's negatives. `balanced`: see `contrastive_pair_loss`.
    """
    anchor_idx, other_idx, is_positive = mine_pairs(
        labels, trajectories, num_negatives, hard=hard, embeddings=embeddings, generator=generator
    )
    distances = torch.linalg.vector_norm(embeddings[anchor_idx] - embeddings[other_idx], dim=1)
    if memory is not None:
        anchors = torch.unique(anchor_idx[is_positive])
        mem_anchor, mem_index = memory_negatives(embeddings[anchors], labels[anchors], *memory,
                                                 num_negatives)
        far = torch.linalg.vector_norm(
            embeddings[anchors[mem_anchor]] - memory[0][mem_index].to(embeddings.dtype), dim=1)
        distances = torch.cat([distances, far])
        is_positive = torch.cat([is_positive, torch.zeros_like(far, dtype=torch.bool)])
    return contrastive_pair_loss(distances, is_positive, margin, balanced=balanced)


def margin_softmax_loss(logits_with_margin: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """L_cls: cross-entropy on the logits of `MarginSoftmaxHead(embeddings, labels)`."""
    return F.cross_entropy(logits_with_margin, labels.long())


def _mean_absolute_error(name: str, pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    # Refuse broadcasting: [B] against [B, 1] would silently compare every pair.
    if pred.shape != true.shape:
        raise ValueError(f"{name}: prediction {tuple(pred.shape)} and target {tuple(true.shape)}")
    return (pred - true.to(pred.dtype)).abs().mean()


def blur_l1(pred_v: torch.Tensor, true_v: torch.Tensor) -> torch.Tensor:
    """L_be: mean |v_pred - v_true| with v = 1 - blur severity, both [B]."""
    return _mean_absolute_error("blur_l1", pred_v, true_v)


def box_l1(pred_box: torch.Tensor, true_box: torch.Tensor) -> torch.Tensor:
    """L_loc: mean absolute error over the normalised (cx, cy, w, h), both [B, 4]."""
    return _mean_absolute_error("box_l1", pred_box, true_box)


@dataclass(frozen=True)
class LossWeights:
    """Published weights of each loss in the total."""

    con: float = 1.0
    cls: float = 0.1
    be: float = 1.0
    loc: float = 10.0
    spread: float = 0.0  # spread-out regulariser (retrieval.model.spread); not published, 0: off


@dataclass(frozen=True)
class LossConfig:
    """Which losses run and how; `enabled` is any non-empty subset of LOSS_NAMES."""

    enabled: frozenset[str] = frozenset(LOSS_NAMES)
    weights: LossWeights = field(default_factory=LossWeights)
    margin: float = 0.7
    num_negatives: int = 5
    hard_negatives: bool = False
    con_kind: str = "pairs"  # one of CONTRASTIVE_KINDS
    temperature: float = 0.1  # of the "softmax" kind

    def __post_init__(self) -> None:
        object.__setattr__(self, "enabled", _checked_losses(self.enabled))
        if self.con_kind not in CONTRASTIVE_KINDS:
            raise ValueError(f"unknown contrastive loss {self.con_kind!r}; choose from "
                             f"{list(CONTRASTIVE_KINDS)}")


def _checked_losses(losses: Iterable[str]) -> frozenset[str]:
    chosen = frozenset(losses)
    unknown = chosen - set(LOSS_NAMES)
    if unknown:
        raise ValueError(f"unknown losses {sorted(unknown)}; choose from {list(LOSS_NAMES)}")
    if not chosen:
        raise ValueError(f"at least one loss must be enabled; choose from {list(LOSS_NAMES)}")
    return chosen


def total_loss(
    output: NetOutput,
    head_logits: torch.Tensor | None,
    batch: Mapping[str, torch.Tensor],
    config: LossConfig,
    generator: torch.Generator | None = None,
    memory: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of the enabled losses.

    `head_logits` is the MarginSoftmaxHead output with labels (needed only for "cls"). `batch`
    holds "instance" (class index), "trajectory", "blur_value" ([B], v = 1 - BS) and "box"
    ([B, 4]); only the keys the enabled losses use are read. `memory`: negatives for L_con from
    earlier batches (`contrastive_loss`). A positive `weights.spread` adds the spread-out
    regulariser over the batch's embeddings. Returns the total and the
    unweighted value of each enabled loss plus "total", as floats for logging.
    """
    _require_heads(output, head_logits, config.enabled)
    terms: dict[str, torch.Tensor] = {}
    if "con" in config.enabled and config.con_kind == "softmax":
        terms["con"] = batch_softmax_loss(output.embedding, _batch_field(batch, "instance"),
                                          _batch_field(batch, "trajectory"),
                                          temperature=config.temperature, memory=memory)
    elif "con" in config.enabled:
        terms["con"] = contrastive_loss(
            output.embedding,
            _batch_field(batch, "instance"),
            _batch_field(batch, "trajectory"),
            margin=config.margin,
            num_negatives=config.num_negatives,
            hard=config.hard_negatives,
            generator=generator,
            memory=memory,
            balanced=config.con_kind == "balanced",
        )
    if "cls" in config.enabled:
        terms["cls"] = margin_softmax_loss(head_logits, _batch_field(batch, "instance"))
    if "be" in config.enabled:
        terms["be"] = blur_l1(output.blur_value, _batch_field(batch, "blur_value"))
    if "loc" in config.enabled:
        terms["loc"] = box_l1(output.box, _batch_field(batch, "box"))
    if config.weights.spread > 0:
        terms["spread"] = spread_out_loss(output.embedding, _batch_field(batch, "instance"))
    total = sum(getattr(config.weights, name) * value for name, value in terms.items())
    parts = {name: float(value.detach()) for name, value in terms.items()}
    parts["total"] = float(total.detach())
    return total, parts


def _require_heads(
    output: NetOutput, head_logits: torch.Tensor | None, enabled: frozenset[str]
) -> None:
    if "cls" in enabled and head_logits is None:
        raise ValueError("loss 'cls' is enabled but no margin-softmax head logits were given")
    if "be" in enabled and output.blur_value is None:
        raise ValueError("loss 'be' is enabled but the network has no blur head")
    if "loc" in enabled and output.box is None:
        raise ValueError("loss 'loc' is enabled but the network has no localisation head")


def _batch_field(batch: Mapping[str, torch.Tensor], key: str) -> torch.Tensor:
    if key not in batch:
        raise ValueError(f"batch lacks {key!r} (has {sorted(batch)}), needed by an enabled loss")
    return batch[key]


class HeadFlags(NamedTuple):
    blur_head: bool
    loc_head: bool


class MethodSpec(NamedTuple):
    """Heads to build and losses to train for one method; unpacks as (heads, losses)."""

    heads: HeadFlags
    losses: frozenset[str]


def spec_for_losses(losses: Iterable[str]) -> MethodSpec:
    """An ablation: any subset of losses, with exactly the heads those losses need."""
    chosen = _checked_losses(losses)
    return MethodSpec(HeadFlags(blur_head="be" in chosen, loc_head="loc" in chosen), chosen)


# "sharp-only" trains exactly like "blur-aware"; the trainer restricts its data to sharp images.
METHODS: dict[str, MethodSpec] = {
    "blur-aware": spec_for_losses(LOSS_NAMES),
    "standard": spec_for_losses(("con", "cls")),
    "sharp-only": spec_for_losses(LOSS_NAMES),
}


def method_spec(name: str) -> MethodSpec:
    """Heads and losses of a named method; an unknown name lists the known ones."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {sorted(METHODS)}")
    return METHODS[name]
