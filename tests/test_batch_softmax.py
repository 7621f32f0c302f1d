"""L_con as a softmax over the batch: hand-computed values, the published positive rule, the
memory's negatives, and its place in total_loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from retrieval.model import LossConfig, NetOutput, batch_softmax_loss, total_loss


def unit(*rows: tuple[float, ...]) -> torch.Tensor:
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=1)


def reference_loss(emb, labels, trajectories, temperature, mem_emb=None, mem_labels=None):
    """The loss written out anchor by anchor, pair by pair."""
    terms = []
    for i in range(len(labels)):
        others = [(emb[i] @ emb[j], labels[j] == labels[i] and trajectories[j] != trajectories[i])
                  for j in range(len(labels))
                  if j != i and (labels[j] != labels[i] or trajectories[j] != trajectories[i])]
        if mem_emb is not None:
            others += [(emb[i] @ mem_emb[m], False) for m in range(len(mem_labels))
                       if mem_labels[m] != labels[i]]
        positives = [float(s) for s, is_pos in others if is_pos]
        if not positives:
            continue
        log_norm = math.log(sum(math.exp(float(s) / temperature) for s, _ in others))
        terms.append(-sum(s / temperature - log_norm for s in positives) / len(positives))
    return sum(terms) / len(terms)


def test_hand_computed_value_skips_anchors_without_a_positive():
    emb = unit((1, 0), (0, 1), (-1, 0))
    loss = batch_softmax_loss(emb, torch.tensor([0, 0, 1]), torch.tensor([0, 1, 2]), temperature=1)
    # anchor 0: positive 1 (cos 0) against 2 (cos -1); anchor 1: 0 (cos 0) against 2 (cos 0);
    # anchor 2 has no other image of its instance.
    assert loss.item() == pytest.approx((math.log(1 + math.exp(-1)) + math.log(2)) / 2)


def test_same_trajectory_images_of_the_instance_are_neither_positive_nor_negative():
    # Images 0 and 1: one instance along one trajectory (exposures of one motion), so neither
    # is the other's positive, and with no other image of instance 0 no anchor has one.
    emb = unit((1, 0), (0.6, 0.8), (-1, 0))
    assert batch_softmax_loss(emb, torch.tensor([0, 0, 1]), torch.tensor([0, 0, 1])).item() == 0
    # Add image 3 of instance 0 on another trajectory: anchor 0's softmax is over 3 (its
    # positive) and 2, never 1, so it is log(e^cos03 + e^cos02) - cos03 at temperature 1.
    emb = unit((1, 0), (0.6, 0.8), (-1, 0), (0, 1))
    loss = batch_softmax_loss(emb, torch.tensor([0, 0, 1, 0]), torch.tensor([0, 0, 1, 2]), 1.0)
    anchor0 = math.log(math.exp(0) + math.exp(-1))  # cos(0,3) = 0, cos(0,2) = -1
    anchor1 = math.log(math.exp(0.8) + math.exp(-0.6)) - 0.8  # cos(1,3) = 0.8, cos(1,2) = -0.6
    # anchor 3: positives 0 and 1 (other trajectory), negative 2 (cos 0)
    anchor3 = math.log(math.exp(0) + math.exp(0.8) + math.exp(0)) - (0 + 0.8) / 2
    assert loss.item() == pytest.approx((anchor0 + anchor1 + anchor3) / 3)


def test_matches_the_pair_by_pair_reference_with_and_without_memory():
    generator = torch.Generator().manual_seed(3)
    emb = F.normalize(torch.randn(12, 8, generator=generator), dim=1)
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 4, 5])
    trajectories = torch.tensor([0, 1, 1, 2, 3, 3, 4, 4, 5, 6, 7, 8])
    mem_emb = F.normalize(torch.randn(6, 8, generator=generator), dim=1)
    mem_labels = torch.tensor([0, 1, 7, 8, 9, 9])
    args = (labels.tolist(), trajectories.tolist(), 0.1)
    assert batch_softmax_loss(emb, labels, trajectories, 0.1).item() == pytest.approx(
        reference_loss(emb, *args), rel=1e-5)
    with_memory = batch_softmax_loss(emb, labels, trajectories, 0.1, memory=(mem_emb, mem_labels))
    assert with_memory.item() == pytest.approx(
        reference_loss(emb, *args, mem_emb=mem_emb, mem_labels=mem_labels.tolist()), rel=1e-5)
    empty = (torch.empty(0, 8), torch.empty(0, dtype=torch.long))
    assert batch_softmax_loss(emb, labels, trajectories, 0.1, memory=empty).item() == pytest.approx(
        batch_softmax_loss(emb, labels, trajectories, 0.1).item())


def test_gradient_pulls_positives_together_and_pushes_the_closest_negative_hardest():
    emb = unit((1, 0), (0, 1), (0.9, 0.1), (-1, 0)).requires_grad_()
    loss = batch_softmax_loss(emb, torch.tensor([0, 0, 1, 2]), torch.tensor([0, 1, 2, 3]), 0.1)
    loss.backward()
    step = -emb.grad[0]  # where anchor 0 moves under gradient descent
    assert step @ torch.tensor([0.0, 1.0]) > 0  # towards its positive
    assert step @ F.normalize(torch.tensor([0.9, 0.1]), dim=0) < 0  # away from the look-alike


def test_no_anchor_with_a_positive_gives_a_differentiable_zero():
    emb = unit((1, 0), (0, 1)).requires_grad_()
    loss = batch_softmax_loss(emb, torch.tensor([0, 1]), torch.tensor([0, 1]))
    loss.backward()
    assert loss.item() == 0 and emb.grad is not None


def test_rejects_bad_arguments():
    emb = unit((1, 0), (0, 1))
    with pytest.raises(ValueError, match="batch size"):
        batch_softmax_loss(emb, torch.tensor([0, 0, 1]), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="temperature"):
        batch_softmax_loss(emb, torch.tensor([0, 0]), torch.tensor([0, 1]), temperature=0)


def test_total_loss_uses_the_softmax_kind_and_the_config_refuses_unknown_kinds():
    emb = unit((1, 0), (0, 1), (-1, 0), (0, -1))
    batch = {"instance": torch.tensor([0, 0, 1, 1]), "trajectory": torch.tensor([0, 1, 2, 3])}
    output = NetOutput(embedding=emb, blur_value=None, box=None)
    config = LossConfig(enabled=frozenset({"con"}), con_kind="softmax", temperature=0.2)
    total, parts = total_loss(output, None, batch, config)
    expected = batch_softmax_loss(emb, batch["instance"], batch["trajectory"], 0.2).item()
    assert total.item() == pytest.approx(expected) and parts["con"] == pytest.approx(expected)
    with pytest.raises(ValueError, match="unknown contrastive loss 'triplet'"):
        LossConfig(con_kind="triplet")
