"""The spread-out regulariser: hand-computed values, what it ignores, and which way it pushes."""

import pytest
import torch
import torch.nn.functional as F

from retrieval.model.losses import LossConfig, LossWeights, total_loss
from retrieval.model.network import NetOutput
from retrieval.model.spread import spread_out_loss


def test_orthogonal_vectors_of_different_instances_cost_nothing():
    assert spread_out_loss(torch.eye(4), torch.arange(4)).item() == 0.0


def test_identical_vectors_of_different_instances_pay_both_moments():
    vectors = F.normalize(torch.ones(2, 4), dim=1)
    # cosine 1: mean^2 = 1, mean square 1 - 1/4 above the uniform 1/d
    assert spread_out_loss(vectors, torch.tensor([0, 1])).item() == pytest.approx(1.75)


def test_hand_computed_mixture_and_the_free_second_moment():
    vectors = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    # pairs (a,b) 0, (a,c) 1, (b,c) 0: mean 1/3, mean square 1/3 below 1/d = 1/2 (no cost)
    assert spread_out_loss(vectors, torch.tensor([0, 1, 2])).item() == pytest.approx(1 / 9)


def test_pairs_of_one_instance_are_ignored_and_a_lone_instance_is_a_differentiable_zero():
    vectors = F.normalize(torch.ones(3, 4), dim=1).requires_grad_()
    loss = spread_out_loss(vectors, torch.tensor([5, 5, 5]))
    assert loss.item() == 0.0
    loss.backward()
    assert vectors.grad is not None
    same_pair_ignored = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert spread_out_loss(same_pair_ignored, torch.tensor([0, 0, 1])).item() == 0.0


def test_a_gradient_step_moves_different_instances_apart():
    raw = torch.tensor([[1.0, 0.2, 0.0], [1.0, 0.0, 0.2]], requires_grad=True)
    labels = torch.tensor([0, 1])
    before = F.cosine_similarity(raw[:1], raw[1:]).item()
    spread_out_loss(F.normalize(raw, dim=1), labels).backward()
    with torch.no_grad():
        raw -= 0.1 * raw.grad
    assert F.cosine_similarity(raw[:1], raw[1:]).item() < before


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match=r"must be \[B, d\]"):
        spread_out_loss(torch.zeros(4), torch.arange(4))
    with pytest.raises(ValueError, match=r"labels \(3,\)"):
        spread_out_loss(torch.eye(4), torch.arange(3))


def test_total_loss_adds_the_weighted_term_only_when_asked():
    embedding = F.normalize(torch.tensor([[1.0, 0.1, 0.0, 0.0], [1.0, -0.1, 0.0, 0.0],
                                          [1.0, 0.0, 0.1, 0.0], [1.0, 0.0, -0.1, 0.0]]), dim=1)
    output = NetOutput(embedding=embedding, blur_value=None, box=None)
    batch = {"instance": torch.tensor([0, 0, 1, 1]), "trajectory": torch.tensor([0, 1, 2, 3])}
    plain = LossConfig(enabled=frozenset({"con"}))
    spread = LossConfig(enabled=frozenset({"con"}), weights=LossWeights(spread=2.0))
    total_plain, parts_plain = total_loss(output, None, batch, plain)
    total_spread, parts = total_loss(output, None, batch, spread)
    assert "spread" not in parts_plain
    expected = spread_out_loss(embedding, batch["instance"]).item()
    assert parts["spread"] == pytest.approx(expected) and expected > 0
    assert total_spread.item() == pytest.approx(total_plain.item() + 2.0 * expected)
