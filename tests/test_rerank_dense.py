"""The dense network, its training targets and loss, its checkpoint, and the re-ranking rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from retrieval.model import BlurAwareNet
from retrieval.rerank.dense_checkpoint import (
    WEIGHTS_NAME,
    DenseCheckpointError,
    load_dense,
    save_dense,
)
from retrieval.rerank.dense_data import PairSampler, cell_of, cell_pairs
from retrieval.rerank.dense_net import DenseFeatureNet, cell_centres
from retrieval.rerank.dense_train import correspondence_loss
from retrieval.rerank.reranker import LocatorError, Reranker
from retrieval.rerank.verify import DenseView, RerankParams, appearance_similarity, verify
from retrieval.sim.config import SimConfig
from retrieval.sim.objects import global_instance_id, split_instance_id
from retrieval.train.layers import LayerBank

SIZE = (32, 48)


@pytest.mark.parametrize("stride", [4, 8])
def test_descriptors_are_unit_vectors_on_the_stride_grid(stride):
    net = DenseFeatureNet(dim=8, stride=stride, crop=32).eval()
    out = net(torch.rand(3, 3, 32, 32))
    assert out.shape == (3, 8, 32 // stride, 32 // stride) and net.grid == 32 // stride
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3, 32 // stride, 32 // stride))


def test_bad_network_settings_and_inputs_are_refused():
    with pytest.raises(ValueError, match="stride"):
        DenseFeatureNet(stride=2)
    with pytest.raises(ValueError, match="multiple of 8"):
        DenseFeatureNet(crop=30)
    with pytest.raises(ValueError, match="expected crops"):
        DenseFeatureNet(dim=4, crop=32)(torch.rand(1, 3, 16, 16))


def test_cell_centres_of_a_hand_made_square():
    # A 40-pixel square centred at (24, 16) in a 32x48 image, 4 cells a side: 10 px per cell.
    squares = torch.tensor([[0.5, 0.5, 40.0]])
    centres = cell_centres(squares, SIZE, 4)[0]
    assert centres.shape == (16, 2)
    torch.testing.assert_close(centres[0], torch.tensor([9.0, 1.0]))  # row 0, col 0
    torch.testing.assert_close(centres[6], torch.tensor([29.0, 11.0]))  # row 1, col 2


def test_cell_of_points_and_outside_points():
    square = np.array([0.5, 0.5, 40.0])  # covers x in [4, 44), y in [-4, 36)
    points = np.array([[4.0, -4.0], [43.9, 35.9], [14.5, 6.5], [3.9, 10.0], [20.0, 36.0]])
    assert cell_of(points, square, SIZE, 4).tolist() == [0, 15, 5, -1, -1]


def test_cell_pairs_keep_the_match_nearest_each_cell_centre():
    square = np.array([0.5, 0.5, 40.0])
    matches = np.array([
        [5.0, -3.0, 30.0, 20.0],   # A cell 0, 4.1 px off its centre (9, 1)
        [9.0, 1.0, 40.0, 30.0],    # A cell 0 at its centre: this one wins
        [29.0, 11.0, 15.0, 0.0],   # A cell 6 -> B cell 1
        [29.0, 11.0, 50.0, 0.0],   # B point outside the crop: dropped
    ], dtype=np.float32)
    pairs = cell_pairs(matches[[0, 1, 2]], square, square, SIZE, 4)
    assert pairs.tolist() == [[0, 15], [6, 1]]
    assert cell_pairs(matches[[3]], square, square, SIZE, 4).shape == (0, 2)
    with pytest.raises(ValueError, match=r"\[M, 4\]"):
        cell_pairs(matches[:, :3], square, square, SIZE, 4)


def test_a_few_training_steps_lower_the_correspondence_loss():
    torch.manual_seed(0)
    net = DenseFeatureNet(dim=8, crop=32)
    images = torch.rand(4, 3, 32, 32)
    shifted = torch.roll(images, shifts=(4, 4), dims=(2, 3))  # content moves one cell down-right
    grid = net.grid
    cells = [(r * grid + c, (r + 1) * grid + c + 1) for r in range(grid - 1) for c in range(grid - 1)]
    targets = [np.array(cells, dtype=np.int64)] * 4
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for step in range(25):
        loss = correspondence_loss(net(images), net(shifted), targets, 0.1, 32,
                                   np.random.default_rng(step))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])


def test_loss_without_correspondences_is_zero_and_differentiable():
    desc = torch.nn.functional.normalize(torch.rand(2, 4, 3, 3, requires_grad=True), dim=1)
    empty = [np.zeros((0, 2), np.int64)] * 2
    loss = correspondence_loss(desc, desc, empty, 0.1, 8, np.random.default_rng(0))
    loss.backward()
    assert float(loss.detach()) == 0.0


def test_dense_checkpoint_round_trip_and_damage(tmp_path):
    torch.manual_seed(1)
    net = DenseFeatureNet(dim=8, crop=32).eval()
    save_dense(tmp_path, net, {"step": 3})
    loaded, config = load_dense(tmp_path)
    assert config["step"] == 3 and config["dim"] == 8
    crops = torch.rand(2, 3, 32, 32)
    with torch.no_grad():  # float16 storage: descriptors agree closely, not bit for bit
        torch.testing.assert_close(loaded(crops), net(crops), atol=5e-3, rtol=0)
    weights = tmp_path / WEIGHTS_NAME
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(DenseCheckpointError, match="hash"):
        load_dense(tmp_path)
    with pytest.raises(DenseCheckpointError, match="not a dense checkpoint"):
        load_dense(tmp_path / "missing")


def grid_view(descriptors: np.ndarray, side: int = 10, cell: float = 4.0) -> DenseView:
    ys, xs = np.mgrid[0:side, 0:side]
    points = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32) * cell
    return DenseView(descriptors, points, cell)


def unit_rows(count: int, dim: int, seed: int) -> np.ndarray:
    values = np.random.default_rng(seed).normal(size=(count, dim))
    return (values / np.linalg.norm(values, axis=1, keepdims=True)).astype(np.float32)


def test_verification_counts_geometrically_consistent_matches():
    descriptors = unit_rows(100, 16, 0)
    same = verify(grid_view(descriptors), grid_view(descriptors), RerankParams(min_similarity=0.9))
    assert (same.matches, same.inliers) == (100, 100) and same.inlier_ratio == 1.0
    # The same cells in a scrambled layout: every descriptor still matches, but no affine map
    # explains where, so few matches are inliers.
    scrambled = descriptors[np.random.default_rng(1).permutation(100)]
    shuffled = verify(grid_view(descriptors), grid_view(scrambled), RerankParams(min_similarity=0.9))
    assert shuffled.matches == 100 and shuffled.inliers < 25
    other = verify(grid_view(descriptors), grid_view(unit_rows(100, 16, 2)),
                   RerankParams(min_similarity=0.9))
    assert other.matches == 0 and other.inliers == 0


def test_appearance_similarity_is_the_mean_best_cosine_both_ways():
    # Query cells e0, e1; candidate cells e0 and (e1 + e2)/sqrt(2): best cosines 1 and 1/sqrt(2)
    # from the query side, 1 and 1/sqrt(2) from the candidate side.
    query = np.eye(3, dtype=np.float32)[:2]
    candidate = np.array([[1, 0, 0], [0, 1, 1]], dtype=np.float32) / [[1], [np.sqrt(2)]]
    points = np.array([[0, 0], [4, 0]], dtype=np.float32)
    result = verify(DenseView(query, points, 4.0), DenseView(candidate.astype(np.float32), points, 4.0),
                    RerankParams())
    assert result.appearance == pytest.approx((1 + 2 ** -0.5) / 2)
    same = verify(grid_view(unit_rows(100, 8, 3)), grid_view(unit_rows(100, 8, 3)), RerankParams())
    assert same.appearance == pytest.approx(1.0)
    empty = DenseView(np.zeros((0, 3), np.float32), np.zeros((0, 2), np.float32), 4.0)
    assert verify(empty, DenseView(query, points, 4.0), RerankParams()).appearance == 0.0


def test_trimmed_appearance_averages_only_the_best_matched_share_of_cells():
    # Query cells' best cosines in the candidate: 0.9, 0.1, 0.5, 0.7 (rows); the candidate's
    # cells' best in the query: 0.9, 0.7, 0.3 (columns).
    similarity = np.array([[0.9, 0.2, 0.0],
                           [0.1, 0.0, 0.0],
                           [0.0, 0.5, 0.3],
                           [0.2, 0.7, 0.0]])
    plain = ((0.9 + 0.1 + 0.5 + 0.7) / 4 + (0.9 + 0.7 + 0.3) / 3) / 2
    assert appearance_similarity(similarity) == pytest.approx(plain)
    # Half the cells: the best 2 of 4 query cells (0.9, 0.7), the best 2 of 3 candidate cells
    # (round(1.5) = 2: 0.9, 0.7).
    assert appearance_similarity(similarity, 0.5) == pytest.approx(((0.9 + 0.7) / 2 + (0.9 + 0.7) / 2) / 2)
    assert appearance_similarity(similarity, 0.01) == pytest.approx(0.9)  # at least one cell a side
    assert appearance_similarity(np.zeros((0, 3)), 0.5) == 0.0
    # verify reads the share from its parameters.
    query, candidate = grid_view(unit_rows(100, 8, 4)), grid_view(unit_rows(100, 8, 5))
    cosines = query.descriptors @ candidate.descriptors.T
    trimmed = verify(query, candidate, RerankParams(appearance_cells=0.3)).appearance
    assert trimmed == pytest.approx(appearance_similarity(cosines, 0.3))
    assert trimmed > verify(query, candidate, RerankParams()).appearance


def tiny_reranker() -> Reranker:
    torch.manual_seed(0)
    locator = BlurAwareNet("test_byobnet", embedding_dim=8, blur_head=True, loc_head=True).eval()
    return Reranker(DenseFeatureNet(dim=8, crop=32).eval(), locator, SIZE, RerankParams())


def test_reranking_is_a_permutation_and_unreadable_candidates_keep_their_score():
    reranker = tiny_reranker()
    pixels = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (5, *SIZE, 3), np.uint8))
    views = reranker.describe_pixels(pixels)
    assert all(v.descriptors.shape[1] == 8 and len(v.points) == len(v.descriptors) for v in views)
    candidates = [views[1], None, views[2], views[0], None]
    scores = [0.9, 0.8, 0.7, 0.6, 0.5]
    result = reranker.rerank(views[0], candidates, scores)
    assert sorted(c.position for c in result) == [0, 1, 2, 3, 4]
    for entry in result:
        assert entry.global_score == scores[entry.position]
        assert entry.verified == (candidates[entry.position] is not None)
        if not entry.verified:
            assert entry.inliers == 0 and entry.rerank_score == entry.global_score
    blending = Reranker(reranker.dense, reranker.locator, SIZE, RerankParams(appearance=0.5))
    for entry in blending.rerank(views[0], candidates, scores):
        view = candidates[entry.position]
        if view is None:  # no description: its global score stands, whatever the blend
            assert entry.rerank_score == pytest.approx(entry.global_score)
        else:
            checked = blending.verify(views[0], view)
            expected = (0.5 * entry.global_score + 0.5 * checked.appearance
                        + 0.2 * min(checked.inliers, 12) / 12)
            assert entry.rerank_score == pytest.approx(expected)
    assert [c.rerank_score for c in result] == sorted((c.rerank_score for c in result), reverse=True)
    with pytest.raises(ValueError, match="candidates"):
        reranker.rerank(views[0], candidates, scores[:2])
    expanding = Reranker(reranker.dense, reranker.locator, SIZE,
                         RerankParams(expansion=0.5, expansion_top=2))
    vectors = np.random.default_rng(2).standard_normal((5, 4))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    expanded = expanding.rerank(views[0], candidates, scores, vectors)
    assert sorted(c.position for c in expanded) == [0, 1, 2, 3, 4]
    assert [c.inliers for c in sorted(expanded, key=lambda c: c.position)] == \
        [c.inliers for c in sorted(result, key=lambda c: c.position)]


def test_mirror_vectors_are_the_locators_vectors_of_the_mirrored_images():
    plain = tiny_reranker()
    mirroring = Reranker(plain.dense, plain.locator, SIZE, RerankParams(weight=0.0, mirror=0.5))
    pixels = torch.from_numpy(np.random.default_rng(3).integers(0, 256, (3, *SIZE, 3), np.uint8))
    assert all(view.mirror is None for view in plain.describe_pixels(pixels)), "share 0: none made"
    views = mirroring.describe_pixels(pixels)
    flipped = mirroring.describe_pixels(pixels.flip(2))
    with torch.inference_mode():
        vectors = plain.locator(pixels.permute(0, 3, 1, 2).float() / 255).embedding.numpy()
    for view, back, vector in zip(views, flipped, vectors):
        assert view.mirror.shape == (8,) and np.linalg.norm(view.mirror) == pytest.approx(1, abs=1e-5)
        np.testing.assert_allclose(back.mirror, vector, atol=1e-5)  # mirrored twice: the image
    scores = [0.9, 0.8, 0.7]
    candidates = [views[1], None, views[2]]
    for entry in mirroring.rerank(views[0], candidates, scores):
        view = candidates[entry.position]
        mirrored = scores[entry.position] if view is None else float(views[0].mirror @ view.mirror)
        expected = 0.5 * scores[entry.position] + 0.5 * mirrored
        assert entry.rerank_score == pytest.approx(expected)


def test_describing_items_reports_unreadable_files(tmp_path):
    reranker = tiny_reranker()
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    image = np.random.default_rng(1).integers(0, 256, (*SIZE, 3), np.uint8)
    views, errors = reranker.describe_items([image, bad])
    assert views[0] is not None and views[1] is None
    assert len(errors) == 1 and errors[0][0] == 1 and "bad.png" in errors[0][1]


def test_a_locator_without_localisation_head_is_refused():
    locator = BlurAwareNet("test_byobnet", embedding_dim=8, blur_head=False, loc_head=False)
    with pytest.raises(LocatorError, match="localisation head"):
        Reranker(DenseFeatureNet(dim=8, crop=32), locator, SIZE, RerankParams())


def fake_bank(categories: int, instances: int, trajectories: int) -> LayerBank:
    ids = [global_instance_id(c, i) for c in range(categories) for i in range(instances)
           for _ in range(trajectories)]
    rows = len(ids)
    return LayerBank(pixels=np.zeros((0, 4), np.uint8), offsets=np.zeros(rows + 1, np.int64),
                     windows=np.zeros((rows, 4), np.int64), instance=np.array(ids, np.int64),
                     trajectory=np.tile(np.arange(trajectories), rows // trajectories),
                     exposure=np.zeros(rows, np.int64), blur_value=np.ones(rows, np.float32),
                     box=np.full((rows, 4), 0.5, np.float32), image_size=SIZE)


@pytest.mark.parametrize("per_category", [1, 3])
def test_pairs_are_two_trajectories_of_one_instance_grouped_by_category(per_category):
    bank = fake_bank(categories=5, instances=4, trajectories=3)
    sampler = PairSampler(bank, SimConfig(), np.zeros((8, *SIZE, 3), np.uint8),
                          per_category=per_category)
    pairs = sampler.pairs(6, np.random.default_rng(0))
    assert pairs == sampler.pairs(6, np.random.default_rng(0))  # seeded
    instances = [int(bank.instance[a]) for a, _ in pairs]
    assert len(set(instances)) == 6  # distinct instances
    for a, b in pairs:
        assert bank.instance[a] == bank.instance[b] and bank.trajectory[a] != bank.trajectory[b]
    if per_category > 1:  # two categories, three instances each, in groups
        categories = [split_instance_id(i)[0] for i in instances]
        assert categories[:3] == [categories[0]] * 3 and categories[3:] == [categories[3]] * 3
        assert categories[0] != categories[3]
    with pytest.raises(ValueError, match="per_category"):
        PairSampler(bank, SimConfig(), np.zeros((8, *SIZE, 3), np.uint8), per_category=0)
