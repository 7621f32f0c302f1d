"""The four losses, the pair miner, the loss configuration and the named methods."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from retrieval.model import (
    METHODS,
    BlurAwareNet,
    LossConfig,
    LossWeights,
    MarginSoftmaxHead,
    NetOutput,
    blur_l1,
    box_l1,
    contrastive_loss,
    contrastive_pair_loss,
    margin_softmax_loss,
    method_spec,
    mine_pairs,
    spec_for_losses,
    total_loss,
)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_contrastive_pair_loss_hand_computed():
    distances = torch.tensor([0.2, 0.5, 0.9])
    is_positive = torch.tensor([True, False, False])
    # 0.5 * 0.2^2 = 0.02; 0.5 * (0.7 - 0.5)^2 = 0.02; 0.9 > margin gives 0.
    expected = (0.02 + 0.02 + 0.0) / 3
    assert contrastive_pair_loss(distances, is_positive).item() == pytest.approx(expected)


def test_balanced_pair_loss_averages_positives_and_negatives_apart():
    distances = torch.tensor([0.2, 0.4, 0.5, 0.9, 0.6])
    is_positive = torch.tensor([True, True, False, False, False])
    # positives: 0.5 * 0.2^2 = 0.02, 0.5 * 0.4^2 = 0.08 -> mean 0.05;
    # negatives: 0.5 * 0.2^2 = 0.02, 0 (beyond the margin), 0.5 * 0.1^2 = 0.005 -> mean 0.0083.
    expected = (0.05 + 0.025 / 3) / 2
    loss = contrastive_pair_loss(distances, is_positive, balanced=True)
    assert loss.item() == pytest.approx(expected)
    assert contrastive_pair_loss(distances, is_positive).item() == pytest.approx(0.125 / 5)
    # One group alone is its own mean; none at all is still a differentiable zero.
    only_negatives = contrastive_pair_loss(distances[2:], is_positive[2:], balanced=True)
    assert only_negatives.item() == pytest.approx(0.025 / 3)
    empty = torch.zeros(0, requires_grad=True)
    zero = contrastive_pair_loss(empty, torch.zeros(0, dtype=torch.bool), balanced=True)
    zero.backward()
    assert zero.item() == 0.0


def test_total_loss_balanced_kind_weighs_the_positive_as_much_as_the_negatives():
    output, batch = fake_output(), fake_batch()
    config = LossConfig(enabled=frozenset({"con"}), con_kind="balanced", num_negatives=2)
    total, parts = total_loss(output, None, batch, config, generator=seeded(3))
    anchor, other, is_positive = mine_pairs(batch["instance"], batch["trajectory"], 2,
                                            generator=seeded(3))
    distances = torch.linalg.vector_norm(output.embedding[anchor] - output.embedding[other], dim=1)
    per_pair = torch.where(is_positive, 0.5 * distances.pow(2),
                           0.5 * (0.7 - distances).clamp(min=0).pow(2))
    expected = (per_pair[is_positive].mean() + per_pair[~is_positive].mean()) / 2
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert parts["con"] == pytest.approx(expected.item(), rel=1e-6)


def test_contrastive_pair_loss_without_pairs_is_a_differentiable_zero():
    distances = torch.zeros(0, requires_grad=True)
    loss = contrastive_pair_loss(distances, torch.zeros(0, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0


def test_contrastive_loss_on_known_unit_vectors():
    # a, b: instance 0 (trajectories 0, 1); c, d: instance 1 (trajectories 2, 3).
    a, b, c, d = (1.0, 0.0), (0.6, 0.8), (0.8, 0.6), (0.0, 1.0)
    embeddings = torch.tensor([a, b, c, d])
    labels = torch.tensor([0, 0, 1, 1])
    trajectories = torch.tensor([0, 1, 2, 3])
    # Positives a-b and c-d: d^2 = 0.8 each, term 0.4, once per anchor (4 anchors).
    # Negatives (all 8 ordered other-instance pairs since num_negatives=2):
    #   |a-c|^2 = |b-d|^2 = 0.4 (four ordered pairs), |b-c|^2 = 0.08 (two), |a-d| = sqrt(2) (two).
    hinge_04 = 0.5 * (0.7 - math.sqrt(0.4)) ** 2
    hinge_008 = 0.5 * (0.7 - math.sqrt(0.08)) ** 2
    expected = (4 * 0.4 + 4 * hinge_04 + 2 * hinge_008 + 2 * 0.0) / 12
    loss = contrastive_loss(embeddings, labels, trajectories, num_negatives=2, generator=seeded(0))
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def pk_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """3 instances x 4 images, two trajectories per instance."""
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2])
    trajectories = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5])
    return labels, trajectories


def test_mine_pairs_positives_come_from_other_trajectories_and_negatives_from_other_instances():
    labels, trajectories = pk_batch()
    anchor, other, positive = mine_pairs(labels, trajectories, num_negatives=5, generator=seeded(3))
    pos_anchor, pos_other = anchor[positive], other[positive]
    assert sorted(pos_anchor.tolist()) == list(range(12))  # exactly one positive per anchor
    assert bool((labels[pos_anchor] == labels[pos_other]).all())
    assert bool((trajectories[pos_anchor] != trajectories[pos_other]).all())
    neg_anchor, neg_other = anchor[~positive], other[~positive]
    assert bool((labels[neg_anchor] != labels[neg_other]).all())
    assert torch.bincount(neg_anchor, minlength=12).tolist() == [5] * 12
    for i in range(12):  # no negative drawn twice for the same anchor
        assert len(set(neg_other[neg_anchor == i].tolist())) == 5


def test_mine_pairs_is_deterministic_given_a_seeded_generator():
    labels, trajectories = pk_batch()
    first = mine_pairs(labels, trajectories, generator=seeded(7))
    again = mine_pairs(labels, trajectories, generator=seeded(7))
    other_seed = mine_pairs(labels, trajectories, generator=seeded(8))
    assert all(torch.equal(x, y) for x, y in zip(first, again, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(first, other_seed, strict=True))


def test_mine_pairs_skips_anchors_without_a_positive_and_caps_negatives():
    labels = torch.tensor([0, 0, 1, 1, 2])
    trajectories = torch.tensor([0, 1, 2, 2, 3])  # instance 1: one trajectory; 2: one image
    anchor, other, positive = mine_pairs(labels, trajectories, num_negatives=10)
    assert sorted(anchor[positive].tolist()) == [0, 1]
    assert set(anchor.tolist()) == {0, 1}
    assert torch.bincount(anchor[~positive]).tolist() == [3, 3]  # only 3 other-instance images

    none = mine_pairs(torch.tensor([0, 1]), torch.tensor([0, 1]))
    assert all(t.numel() == 0 for t in none)
    only_positives = mine_pairs(labels, trajectories, num_negatives=0)[2]
    assert only_positives.tolist() == [True, True]


def test_mine_pairs_hard_mode_picks_the_closest_negatives():
    labels, trajectories = pk_batch()
    embeddings = F.normalize(torch.randn(12, 6, generator=seeded(5)), dim=1)
    anchor, other, positive = mine_pairs(
        labels, trajectories, num_negatives=3, hard=True, embeddings=embeddings
    )
    distances = torch.cdist(embeddings, embeddings)
    for i in range(12):
        candidates = (labels != labels[i]).nonzero().flatten()
        closest = candidates[distances[i, candidates].argsort()[:3]]
        chosen = other[(anchor == i) & ~positive]
        assert set(chosen.tolist()) == set(closest.tolist())


def test_mine_pairs_rejects_bad_arguments():
    labels, trajectories = pk_batch()
    with pytest.raises(ValueError, match="embeddings"):
        mine_pairs(labels, trajectories, hard=True)
    with pytest.raises(ValueError, match="num_negatives"):
        mine_pairs(labels, trajectories, num_negatives=-1)
    with pytest.raises(ValueError, match="equal-length"):
        mine_pairs(labels, trajectories[:-1])


def test_margin_softmax_loss_is_cross_entropy():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    expected = (math.log(1 + math.exp(-2.0)) + math.log(1 + math.exp(-1.0))) / 2
    loss = margin_softmax_loss(logits, torch.tensor([0, 1]))
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_l1_losses_on_hand_values():
    assert blur_l1(torch.tensor([0.2, 0.9]), torch.tensor([0.5, 0.5])).item() == pytest.approx(0.35)
    pred = torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.1, 0.1, 0.1, 0.1]])
    true = torch.tensor([[0.5, 0.4, 0.2, 0.0], [0.1, 0.1, 0.1, 0.9]])
    assert box_l1(pred, true).item() == pytest.approx((0.1 + 0.2 + 0.8) / 8)
    with pytest.raises(ValueError, match="blur_l1"):
        blur_l1(torch.zeros(3), torch.zeros(3, 1))


def fake_output(batch: int = 4, heads: bool = True) -> NetOutput:
    generator = seeded(11)
    return NetOutput(
        embedding=F.normalize(torch.randn(batch, 8, generator=generator), dim=1),
        blur_value=torch.rand(batch, generator=generator) if heads else None,
        box=torch.rand(batch, 4, generator=generator) if heads else None,
    )


def fake_batch(batch: int = 4) -> dict[str, torch.Tensor]:
    generator = seeded(12)
    return {
        "instance": torch.tensor([0, 0, 1, 1])[:batch],
        "trajectory": torch.tensor([0, 1, 2, 3])[:batch],
        "blur_value": torch.rand(batch, generator=generator),
        "box": torch.rand(batch, 4, generator=generator),
    }


def test_total_loss_applies_the_published_weights():
    output, batch = fake_output(), fake_batch()
    loc = box_l1(output.box, batch["box"]).item()
    total, parts = total_loss(output, None, batch, LossConfig(enabled=frozenset({"loc"})))
    assert total.item() == pytest.approx(10 * loc)
    assert parts == pytest.approx({"loc": loc, "total": 10 * loc})

    logits = torch.tensor([[3.0, 1.0], [0.5, 0.2], [0.0, 2.0], [1.0, 1.5]])
    expected = (
        contrastive_loss(output.embedding, batch["instance"], batch["trajectory"]).item()
        + 0.1 * margin_softmax_loss(logits, batch["instance"]).item()
        + blur_l1(output.blur_value, batch["blur_value"]).item()
        + 10 * loc
    )
    total, parts = total_loss(output, logits, batch, LossConfig(), generator=seeded(0))
    assert total.item() == pytest.approx(expected, rel=1e-6)
    assert set(parts) == {"con", "cls", "be", "loc", "total"}


def test_total_loss_uses_custom_weights():
    output, batch = fake_output(), fake_batch()
    config = LossConfig(enabled=frozenset({"be", "loc"}), weights=LossWeights(be=2.0, loc=0.5))
    total, _ = total_loss(output, None, batch, config)
    expected = 2.0 * blur_l1(output.blur_value, batch["blur_value"]) + 0.5 * box_l1(
        output.box, batch["box"]
    )
    assert total.item() == pytest.approx(expected.item())


def test_total_loss_refuses_losses_whose_head_is_missing():
    output, batch = fake_output(heads=False), fake_batch()
    with pytest.raises(ValueError, match="'be'.*no blur head"):
        total_loss(output, None, batch, LossConfig(enabled=frozenset({"be"})))
    with pytest.raises(ValueError, match="'loc'.*no localisation head"):
        total_loss(output, None, batch, LossConfig(enabled=frozenset({"loc"})))
    with pytest.raises(ValueError, match="'cls'"):
        total_loss(output, None, batch, LossConfig(enabled=frozenset({"cls"})))
    del batch["box"]
    with pytest.raises(ValueError, match="'box'"):
        total_loss(fake_output(), None, batch, LossConfig(enabled=frozenset({"loc"})))


def test_loss_config_validates_loss_names():
    with pytest.raises(ValueError, match="unknown losses"):
        LossConfig(enabled=frozenset({"con", "triplet"}))
    with pytest.raises(ValueError, match="at least one"):
        LossConfig(enabled=frozenset())
    assert LossConfig(enabled={"con"}).enabled == frozenset({"con"})


def test_methods_define_heads_and_losses():
    heads, losses = method_spec("standard")
    assert (heads.blur_head, heads.loc_head) == (False, False)
    assert losses == {"con", "cls"}
    assert method_spec("blur-aware").losses == {"con", "cls", "be", "loc"}
    assert method_spec("blur-aware").heads == (True, True)
    assert method_spec("sharp-only") == method_spec("blur-aware")
    assert set(METHODS) == {"blur-aware", "standard", "sharp-only"}
    with pytest.raises(ValueError, match="blur-aware"):
        method_spec("blurry")


def test_ablation_builds_only_the_heads_its_losses_need():
    assert spec_for_losses(["con", "be"]).heads == (True, False)
    assert spec_for_losses(["con", "cls", "loc"]).heads == (False, True)


def test_a_few_training_steps_lower_the_total_loss():
    torch.manual_seed(0)
    spec = method_spec("blur-aware")
    net = BlurAwareNet("test_byobnet", embedding_dim=16, **spec.heads._asdict())
    head = MarginSoftmaxHead(16, num_classes=2)
    optimizer = torch.optim.Adam([*net.parameters(), *head.parameters()], lr=1e-3)
    generator = seeded(21)
    x = torch.rand(8, 3, 32, 32, generator=generator)
    batch = {  # 2 instances x 2 trajectories x 2 images
        "instance": torch.tensor([0, 0, 0, 0, 1, 1, 1, 1]),
        "trajectory": torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]),
        "blur_value": torch.rand(8, generator=generator),
        "box": torch.rand(8, 4, generator=generator),
    }
    config = LossConfig(enabled=spec.losses)

    def step() -> float:
        out = net(x)
        logits = head(out.embedding, batch["instance"])
        loss, parts = total_loss(out, logits, batch, config, generator=seeded(0))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return parts["total"]

    losses = [step() for _ in range(12)]
    assert all(math.isfinite(value) for value in losses)
    assert losses[-1] < 0.8 * losses[0]
