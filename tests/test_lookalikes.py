"""Training against look-alikes: look-alike batches, wider training sets, cross-batch memory
and validation among distractors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from fakes import synthesized, tiny_train_settings

from retrieval.embed import EmbedResult
from retrieval.manifest import manifest_items
from retrieval.model.losses import contrastive_loss, contrastive_pair_loss, memory_negatives
from retrieval.sim.config import SimConfig
from retrieval.sim.layout import PRESETS, Preset, distractor_table, instance_split, plan_trajectories
from retrieval.sim.objects import DISTRACTOR_BASE
from retrieval.train import (
    STATE_FILENAME,
    TrainDataError,
    Trainer,
    TrainSettings,
    build_validation_set,
    evaluate,
    load_train_state,
    train,
)
from retrieval.train.lookalike import LookalikeSampler
from retrieval.train.memory import CrossBatchMemory
from retrieval.train.stream import training_preset
from retrieval.train.val_distractors import (
    VALIDATION_DISTRACTOR_BASE,
    validation_distractor_pixels,
    validation_distractor_rows,
)

# 3 categories x 10 instances (7 train, 1-2 val, 1-2 test each), 3 trajectories.
PRESET = Preset(categories=3, instances=10, trajectories=3, height=48, width=64)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return synthesized(tmp_path_factory.mktemp("lookalike_data"), PRESET)


def settings(data_dir: Path, out_dir: Path, **overrides) -> TrainSettings:
    return tiny_train_settings(data_dir, out_dir, **{"hard_negatives": True, **overrides})


# ----- look-alike batches --------------------------------------------------------------------

def toy_rows(categories: int = 4, per_category: int = 5, trajectories: int = 3):
    """Class c belongs to category c // per_category; 2 images per trajectory."""
    classes = np.repeat(np.arange(categories * per_category), trajectories * 2)
    trajectory = np.tile(np.repeat(np.arange(trajectories), 2), categories * per_category)
    return classes, trajectory, np.arange(categories * per_category) // per_category


def test_lookalike_batches_hold_q_instances_of_each_of_p_over_q_categories():
    classes, trajectories, categories = toy_rows()
    sampler = LookalikeSampler(classes, trajectories, categories, instances_per_batch=6,
                               images_per_instance=3, instances_per_category=3, seed=4)
    batches = sampler.epoch_batches(epoch=0, steps=40)
    for batch in batches:
        groups = batch.reshape(6, 3)
        instances = classes[groups[:, 0]]
        assert len(set(instances.tolist())) == 6
        assert all(len(set(classes[group].tolist())) == 1 for group in groups)
        assert all(len(set(trajectories[group].tolist())) >= 2 for group in groups)
        per_category = np.bincount(categories[instances], minlength=4)
        assert sorted(per_category.tolist()) == [0, 0, 3, 3]
    # Categories are visited evenly (2 per step over 4 categories) and so are instances.
    seen = np.concatenate([classes[b.reshape(6, 3)[:, 0]] for b in batches])
    assert np.bincount(categories[seen], minlength=4).tolist() == [60, 60, 60, 60]
    assert np.bincount(seen).min() == 12 and np.bincount(seen).max() == 12


def test_lookalike_batches_are_a_pure_function_of_seed_and_epoch():
    classes, trajectories, categories = toy_rows()

    def batches(seed, epoch):
        sampler = LookalikeSampler(classes, trajectories, categories, 4, 2, 2, seed=seed)
        return np.concatenate(sampler.epoch_batches(epoch, 7))

    assert np.array_equal(batches(1, 2), batches(1, 2))
    assert not np.array_equal(batches(1, 2), batches(1, 3))
    assert not np.array_equal(batches(1, 2), batches(2, 2))


def test_lookalike_sampler_refuses_batches_it_cannot_fill():
    classes, trajectories, categories = toy_rows(categories=2, per_category=3)
    with pytest.raises(ValueError, match="not a multiple of Q=2"):
        LookalikeSampler(classes, trajectories, categories, 5, 2, 2)
    with pytest.raises(ValueError, match="Q >= 2"):
        LookalikeSampler(classes, trajectories, categories, 4, 2, 1)
    with pytest.raises(ValueError, match="needs 3 categories of at least 2"):
        LookalikeSampler(classes, trajectories, categories, 6, 2, 2)
    with pytest.raises(ValueError, match="1 have that many"):
        LookalikeSampler(classes, trajectories, np.array([0, 0, 0, 1, 2, 3]), 4, 2, 2)


# ----- wider training sets -------------------------------------------------------------------

def test_wider_training_sets_hold_train_slots_only_never_a_val_or_test_instance():
    wide = training_preset(PRESETS["small"], instances=400, trajectories=3)
    jobs = [job for job in plan_trajectories(wide) if job.split == "train"]
    trained = {(job.category, job.instance) for job in jobs}
    assert len(trained) == 40 * 280 and {job.trajectory for job in jobs} == {0, 1, 2}
    for name, preset in PRESETS.items():
        held_out = {(c, i) for c in range(preset.categories) for i in range(preset.instances)
                    if instance_split(c, i) in ("val", "test")}
        assert held_out and not held_out & trained, name
    assert all(instance_split(c, i) == "train" for c, i in trained)
    assert training_preset(PRESETS["small"], None, None) is PRESETS["small"]
    with pytest.raises(TrainDataError, match="at least 2 trajectories"):
        training_preset(PRESETS["small"], 100, 1)
    with pytest.raises(TrainDataError, match="distractors"):
        training_preset(PRESETS["small"], DISTRACTOR_BASE, 2)


def test_a_wider_training_set_gets_its_own_layer_bank(data_dir, tmp_path):
    own = Trainer(settings(data_dir, tmp_path / "own"))
    wide = Trainer(settings(data_dir, tmp_path / "wide", train_instances=20,
                            train_trajectories=2))
    assert own.data.num_classes == 3 * 7 and wide.data.num_classes == 3 * 14
    assert set(wide.data.trajectories.tolist()) == {0, 1}
    assert (data_dir / "train_layers").is_dir() and (data_dir / "train_layers-20i-2t").is_dir()
    assert own.data_fingerprint != wide.data_fingerprint


# ----- cross-batch memory --------------------------------------------------------------------

def test_memory_is_a_ring_buffer_read_from_its_start_step_and_saved_whole():
    memory = CrossBatchMemory(size=4, dim=2, device=torch.device("cpu"), start_step=2)
    assert memory.contents(5) is None  # empty
    memory.push(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), torch.tensor([1, 2, 3]))
    assert memory.contents(1) is None
    memory.push(torch.tensor([[2.0, 0.0], [0.0, 2.0]]), torch.tensor([4, 5]))
    embeddings, labels = memory.contents(2)
    assert labels.tolist() == [5, 2, 3, 4]  # the oldest entry was overwritten
    assert embeddings[0].tolist() == [0.0, 2.0]
    copy = CrossBatchMemory(size=4, dim=2, device=torch.device("cpu"), start_step=2)
    copy.load_state_dict(memory.state_dict())
    assert torch.equal(copy.contents(9)[0], embeddings) and copy.next == memory.next == 1
    with pytest.raises(ValueError, match="shape"):
        CrossBatchMemory(size=3, dim=2, device=torch.device("cpu")).load_state_dict(
            memory.state_dict())


def test_memory_negatives_are_the_closest_entries_of_other_instances():
    anchors = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    stored = torch.tensor([[1.0, 0.1], [0.9, -0.2], [0.0, 0.8], [-1.0, 0.0]])
    stored_labels = torch.tensor([0, 7, 1, 8])
    anchor, index = memory_negatives(anchors, torch.tensor([0, 1]), stored, stored_labels, 2)
    # anchor 0 (label 0): entry 0 is its own instance; closest others are 1 then 2.
    # anchor 1 (label 1): entry 2 is its own; closest others are 0 (1.345) then 3 (1.414).
    assert anchor.tolist() == [0, 0, 1, 1] and index.tolist() == [1, 2, 0, 3]


def test_contrastive_loss_with_memory_adds_the_memory_pairs_to_the_mean():
    embeddings = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    labels, trajectories = torch.tensor([0, 0]), torch.tensor([0, 1])
    stored, stored_labels = torch.tensor([[0.8, 0.6]]), torch.tensor([3])
    loss = contrastive_loss(embeddings, labels, trajectories, margin=0.7, num_negatives=1,
                            memory=(stored, stored_labels))
    # Two positive pairs at distance sqrt(2) and two memory negatives at distances
    # |(0.2, -0.6)| = sqrt(0.4) and |(-0.8, 0.4)| = sqrt(0.8) (beyond the margin: no cost).
    positive = 0.5 * 2.0
    near = 0.5 * (0.7 - 0.4**0.5) ** 2
    assert float(loss.detach()) == pytest.approx((2 * positive + near) / 4, rel=1e-6)
    loss.backward()
    assert embeddings.grad is not None
    without = contrastive_loss(embeddings, labels, trajectories, num_negatives=1)
    assert float(without.detach()) == pytest.approx(float(contrastive_pair_loss(
        torch.tensor([2.0**0.5, 2.0**0.5]), torch.tensor([True, True]))))


# ----- validation among distractors ----------------------------------------------------------

def test_validation_distractors_never_use_an_instance_the_benchmark_uses():
    sim = SimConfig(height=48, width=64)
    rows = validation_distractor_rows(1000, 40, sim)
    assert {row.category for row in rows} == set(range(40))
    assert min(row.instance for row in rows) == VALIDATION_DISTRACTOR_BASE
    benchmark = distractor_table(1_000_000, 40, sim.seed, sim.exposures)
    assert int(benchmark["instance"].max()) < VALIDATION_DISTRACTOR_BASE
    assert all(instance_split(row.category, row.instance) == "distractor" for row in rows)


class InstanceOneHot:
    """One axis per instance (in-memory distractor images: axis 0, shared by nothing else)."""

    def embed(self, items, progress=False):
        vectors = np.zeros((len(items), 64), dtype=np.float32)
        for i, item in enumerate(items):
            is_row = hasattr(item, "instance")
            vectors[i, 1 + 10 * item.category + item.instance if is_row else 0] = 1.0
        return EmbedResult(vectors, np.arange(len(items), dtype=np.int64), [])


class QueriesLookLikeDistractors(InstanceOneHot):
    """Every query scores 6 with every distractor (axis 0, length 10) and 1 with its positives
    (0.8 on its own axis, 0.6 on axis 0)."""

    def embed(self, items, progress=False):
        result = super().embed(items, progress)
        rows = result.vectors[:, 0] == 0
        result.vectors[rows] *= 0.8
        result.vectors[rows, 0] = 0.6
        result.vectors[~rows, 0] = 10.0
        return result


def test_validation_scores_among_distractors_and_keeps_the_clean_figure(data_dir):
    items, table = manifest_items(data_dir)
    clean = build_validation_set(items, table, data_dir / "manifest.parquet")
    pixels = np.zeros((150, 32, 48, 3), dtype=np.uint8)
    validation = dataclasses.replace(clean, distractors=pixels)
    metrics = evaluate(QueriesLookLikeDistractors(), validation)
    assert metrics["distractors"] == 150
    assert metrics["without_distractors"]["map@100"] == 1.0
    assert metrics["map@100"] == 0.0  # 150 distractors fill every query's top 100
    assert "distractors" not in evaluate(QueriesLookLikeDistractors(), clean)


def test_validation_distractors_are_rendered_once_then_read_from_the_cache(data_dir, tmp_path):
    sim = SimConfig(height=48, width=64)
    first = validation_distractor_pixels(tmp_path, 6, 3, sim, (32, 48), progress=False)
    assert first.shape == (6, 32, 48, 3) and first.dtype == np.uint8 and first.any()
    cached = list((tmp_path / "val_distractors").iterdir())
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    again = validation_distractor_pixels(tmp_path, 6, 3, sim, (32, 48), progress=False)
    assert np.array_equal(first, again) and cached[0].stat().st_mtime_ns == stamp
    cached[0].write_bytes(b"damaged")
    repaired = validation_distractor_pixels(tmp_path, 6, 3, sim, (32, 48), progress=False)
    assert np.array_equal(first, repaired)


# ----- the trainer with all of them ------------------------------------------------------------

def test_a_run_with_lookalikes_memory_and_distractors_resumes_exactly(data_dir, tmp_path):
    options = dict(instances_per_category=2, memory_size=16, memory_start=0.0,
                   val_distractors=20, detach_blur=True, isolate_blur=True, be_weight=0.5,
                   blur_input="crop")
    reference = train(settings(data_dir, tmp_path / "full", **options))
    assert reference.status == "finished"
    state = load_train_state(tmp_path / "full" / STATE_FILENAME)
    assert state["memory"]["filled"] == 16
    config = (tmp_path / "full" / "config.json").read_text()
    assert '"distractors": 20' in config and '"instances_per_category": 2' in config
    assert '"detach_blur": true' in config and '"isolate_blur": true' in config
    assert '"be_weight": 0.5' in config and '"blur_input": "crop"' in config
    train(settings(data_dir, tmp_path / "split", stop_at_step=2, **options))
    train(settings(data_dir, tmp_path / "split", resume=True, **options))
    resumed = load_train_state(tmp_path / "split" / STATE_FILENAME)
    for key, value in state["model"].items():
        assert torch.equal(resumed["model"][key], value), key
    assert torch.equal(resumed["memory"]["embeddings"], state["memory"]["embeddings"])


def test_lookalike_batches_need_categories_with_enough_instances(data_dir, tmp_path):
    with pytest.raises(TrainDataError, match="needs 4 categories"):
        Trainer(settings(data_dir, tmp_path, instances_per_category=2, instances_per_batch=8))
