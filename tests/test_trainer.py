"""The trainer: P x K sampling, training rows, validation, resumable runs and the train command."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest
import torch
from click.testing import CliRunner
from fakes import synthesized, tiny_train_settings

from benchmark.commands.train import train_command
from retrieval.embed import EmbedResult
from retrieval.fileio import write_parquet_atomic
from retrieval.manifest import manifest_items
from retrieval.model import load_checkpoint, model_fingerprint
from retrieval.sim.layout import Preset
from retrieval.train import (
    LOG_FILENAME,
    STATE_FILENAME,
    PKSampler,
    TrainDataError,
    Trainer,
    TrainLog,
    TrainSettings,
    build_validation_set,
    evaluate,
    load_train_state,
    select_training_rows,
    train,
)
from retrieval.train.errors import TrainError
from retrieval.train.interrupts import StopRequests
from retrieval.train.stream import open_composite_stream

# 20 instances of one category: 14 train, 3 val, 3 test; every trajectory has 11 exposures.
PRESET = Preset(categories=1, instances=20, trajectories=3, height=48, width=64)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return synthesized(tmp_path_factory.mktemp("train_data"), PRESET)


settings = tiny_train_settings


# ----- sampler ------------------------------------------------------------------------------

def toy_rows(instances: int = 5, trajectories: int = 3, exposures: int = 4):
    grid = np.array([(i, t) for i in range(instances) for t in range(trajectories)
                     for _ in range(exposures)])
    return grid[:, 0], grid[:, 1]


def test_sampler_batches_are_p_by_k_from_two_trajectories_and_distinct_instances():
    classes, trajectories = toy_rows()
    sampler = PKSampler(classes, trajectories, instances_per_batch=3, images_per_instance=4,
                        seed=7)
    batches = sampler.epoch_batches(epoch=0, steps=10)
    assert len(batches) == 10
    for batch in batches:
        assert batch.shape == (12,) and batch.dtype == np.int64
        groups = batch.reshape(3, 4)
        assert len(set(classes[groups[:, 0]])) == 3  # P different instances
        for group in groups:
            assert len(set(classes[group])) == 1
            assert len(set(trajectories[group])) >= 2
            assert len(set(group)) == 4  # 12 images per instance: no need to repeat one


def test_sampler_is_a_pure_function_of_seed_and_epoch_and_visits_instances_evenly():
    classes, trajectories = toy_rows()
    sampler = PKSampler(classes, trajectories, 2, 2, seed=1)
    first = sampler.epoch_batches(epoch=3, steps=5)
    again = PKSampler(classes, trajectories, 2, 2, seed=1).epoch_batches(epoch=3, steps=5)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    other_epoch = sampler.epoch_batches(epoch=4, steps=5)
    assert not all(np.array_equal(a, b) for a, b in zip(first, other_epoch))
    visits = np.bincount(np.concatenate([classes[b[::2]] for b in first]), minlength=5)
    assert visits.tolist() == [2, 2, 2, 2, 2]  # 5 steps x P=2 over 5 instances


def test_sampler_repeats_images_only_when_an_instance_has_too_few():
    classes, trajectories = toy_rows(instances=2, trajectories=2, exposures=1)
    batch = PKSampler(classes, trajectories, 2, 3, seed=0).epoch_batches(0, 1)[0]
    for group in batch.reshape(2, 3):
        assert set(trajectories[group]) == {0, 1}
        assert len(set(group)) == 2


def test_sampler_refuses_impossible_batches():
    classes, trajectories = toy_rows(instances=3)
    with pytest.raises(ValueError, match="P must be >= 2"):
        PKSampler(classes, trajectories, 1, 2)
    with pytest.raises(ValueError, match="K must be >= 2"):
        PKSampler(classes, trajectories, 2, 1)
    with pytest.raises(ValueError, match="exceeds the 3 training instances"):
        PKSampler(classes, trajectories, 4, 2)


# ----- training rows and validation ---------------------------------------------------------

def test_training_rows_targets_and_sharp_only(data_dir):
    items, table = manifest_items(data_dir)
    manifest = data_dir / "manifest.parquet"
    data = select_training_rows(items, table, manifest)
    assert data.num_classes == 14 and len(data.items) == 14 * 3 * 11
    assert sorted(set(data.classes.tolist())) == list(range(14))
    rows = {row.image_id: i for i, row in enumerate(items)}
    first = rows[data.items[5].image_id]
    assert data.blur_values[5] == pytest.approx(1.0 - table["blur_severity"][first].as_py())
    assert data.boxes[5].tolist() == pytest.approx(
        [table[name][first].as_py() for name in ("bbox_cx", "bbox_cy", "bbox_w", "bbox_h")])
    targets = data.targets(np.array([0, 5]), torch.device("cpu"))
    assert targets["box"].shape == (2, 4) and targets["instance"].dtype == torch.int64

    sharp = select_training_rows(items, table, manifest, sharp_only=True)
    assert {row.exposure for row in sharp.items} == {0}
    assert len(sharp.items) == 14 * 3 and sharp.num_classes == 14


def test_training_rows_refuse_missing_labels_and_empty_selections(data_dir, tmp_path):
    items, table = manifest_items(data_dir)
    unlabelled = table.set_column(
        table.schema.get_field_index("blur_severity"), "blur_severity",
        pc.if_else(pc.equal(table["role"], "train"), None, table["blur_severity"]))
    with pytest.raises(TrainDataError, match="blur_severity label.*'be'"):
        select_training_rows(items, unlabelled, tmp_path / "m.parquet")
    assert select_training_rows(items, unlabelled, tmp_path / "m.parquet", needs_blur=False)
    val_only = pc.equal(table["role"], "val")
    with pytest.raises(TrainDataError, match="m.parquet: no rows with role 'train'"):
        select_training_rows([i for i, keep in zip(items, val_only.to_pylist()) if keep],
                             table.filter(val_only), tmp_path / "m.parquet")


class InstanceOneHot:
    """A perfect embedder: one axis per instance, so every query finds only its positives."""

    def embed(self, items, progress=False):
        vectors = np.zeros((len(items), 32), dtype=np.float32)
        vectors[np.arange(len(items)), [row.instance for row in items]] = 1.0
        return EmbedResult(vectors, np.arange(len(items), dtype=np.int64), [])


def test_validation_follows_the_benchmark_protocol_and_scores_a_perfect_embedder(data_dir):
    items, table = manifest_items(data_dir)
    validation = build_validation_set(items, table, data_dir / "manifest.parquet")
    # 3 val instances x 3 trajectories: trajectory 0 gives queries, 1 and 2 one image each.
    assert len(validation.database) == 6
    assert {row.trajectory for row in validation.queries} == {0}
    assert sorted({row.trajectory for row in validation.database}) == [1, 2]
    for instance in set(validation.query_instances.tolist()):
        levels = validation.query_levels[validation.query_instances == instance]
        assert len(levels) == len(set(levels.tolist())) and set(levels.tolist()) <= set(range(1, 7))
    metrics = evaluate(InstanceOneHot(), validation)
    assert metrics["map@100"] == 1.0
    assert metrics["queries"] == len(validation.queries) and metrics["database"] == 6
    assert all(v in (1.0, None) for v in metrics["per_level"].values())
    # One-hot vectors of 3 instances, 2 images each: covariance diag(1/3) - 1/9, whose variance
    # spreads evenly over 2 directions.
    assert metrics["participation_ratio"] == pytest.approx(2.0)

    capped = build_validation_set(items, table, data_dir / "manifest.parquet", max_queries=4)
    assert len(capped.queries) == 4 and capped.queries[0] == validation.queries[0]


# ----- training runs -------------------------------------------------------------------------

def log_records(out_dir: Path, event: str) -> list[dict]:
    return [r for r in TrainLog(out_dir / LOG_FILENAME).records() if r["event"] == event]


def final_weights(out_dir: Path) -> dict[str, torch.Tensor]:
    return load_train_state(out_dir / STATE_FILENAME)["model"]


@pytest.fixture(scope="module")
def full_run(data_dir, tmp_path_factory) -> Path:
    """2 epochs x 3 steps, uninterrupted: the reference for the resume tests."""
    out = tmp_path_factory.mktemp("full_run")
    outcome = train(settings(data_dir, out))
    assert outcome.status == "finished" and outcome.step == 6 and outcome.epochs_done == 2
    return out


def test_a_run_started_from_a_checkpoint_begins_at_its_weights(data_dir, full_run, tmp_path):
    trained, config = load_checkpoint(full_run)
    expected = dict(trained.named_parameters())  # a step moves BatchNorm's running statistics
    for name, init_from in (("fine-tuned", str(full_run)), ("fresh", None)):
        out = tmp_path / name
        outcome = train(settings(data_dir, out, init_from=init_from, lr=1e-12, epochs=1,
                                 steps_per_epoch=1))
        assert outcome.status == "finished"
        weights = final_weights(out)
        close = all(torch.allclose(weights[key].float(), expected[key].float(), atol=1e-6)
                    for key in expected)
        assert close == (init_from is not None)
    written = json.loads((tmp_path / "fine-tuned" / "config.json").read_text())["training"]
    assert written["init_fingerprint"] == model_fingerprint(config)


def test_a_checkpoint_of_another_network_cannot_start_a_run(data_dir, full_run, tmp_path):
    with pytest.raises(TrainError, match=r"its network differs from this run's .*embed"):
        train(settings(data_dir, tmp_path, init_from=str(full_run), embedding_dim=8))
    with pytest.raises(TrainError, match="--init-from: .*no-such-model"):
        train(settings(data_dir, tmp_path, init_from="no-such-model"))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_training_lowers_the_loss(data_dir, tmp_path, precision):
    outcome = train(settings(data_dir, tmp_path, epochs=1, steps_per_epoch=16,
                             precision=precision))
    totals = [r["loss"]["total"] for r in log_records(tmp_path, "train")]
    assert len(totals) == 16
    assert np.mean(totals[-3:]) < 0.9 * np.mean(totals[:3])
    # The checkpoint says how it was trained; its weights are float32 underneath either way.
    assert load_checkpoint(outcome.checkpoint)[1]["training"]["precision"] == precision


def test_bfloat16_on_a_cpu_without_it_warns_that_it_is_emulated(data_dir, tmp_path, monkeypatch,
                                                              caplog):
    monkeypatch.setattr("retrieval.train.trainer.cpu_has_native_bf16", lambda: False)
    train(settings(data_dir, tmp_path, precision="bf16", epochs=1, steps_per_epoch=1))
    assert "no native bfloat16" in caplog.text
    caplog.clear()
    train(settings(data_dir, tmp_path / "fp32", precision="fp32", epochs=1, steps_per_epoch=1))
    assert "bfloat16" not in caplog.text


def test_best_checkpoint_is_written_and_loadable(data_dir, full_run):
    model, config = load_checkpoint(full_run)
    validations = log_records(full_run, "validation")
    assert len(validations) == 2
    best = max(validations, key=lambda r: r["map@100"])
    assert config["validation"]["map@100"] == best["map@100"]
    assert config["epoch"] == best["epoch"] and config["step"] == best["step"]
    assert config["method"] == "blur-aware" and config["losses"] == ["be", "cls", "con", "loc"]
    assert config["image_size"] == [32, 48] and config["backbone"] == "test_byobnet"
    assert config["embedding_dim"] == 16 and config["weights_dtype"] == "float16"
    # Data written by synth trains on the composite stream, named by its bank and image model.
    expected = open_composite_stream(data_dir / "manifest.parquet", (32, 48), False, 0,
                                     progress=False)[2]
    assert config["data_fingerprint"] == expected
    assert len(model_fingerprint(config)) == 16
    record = log_records(full_run, "train")[0]
    assert set(record["loss"]) == {"con", "cls", "be", "loc", "total"}
    assert record["lr"] == 1e-3 and record["images_per_s"] > 0


def test_logged_training_rate_leaves_out_the_validation_between_epochs(data_dir, tmp_path,
                                                                       monkeypatch):
    """A validation that takes 1,000 s of a (fake) clock must not enter the next interval's
    images/s: with it, 8 images over 1,000 s would log 0.008 images/s."""
    from retrieval.train import trainer as trainer_module

    real_clock = trainer_module.time.perf_counter
    offset = [0.0]

    class FakeTime:
        @staticmethod
        def perf_counter() -> float:
            return real_clock() + offset[0]

    def slow_evaluate(*args, **kwargs):
        offset[0] += 1000.0
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "time", FakeTime)
    monkeypatch.setattr(trainer_module, "evaluate", slow_evaluate)
    train(settings(data_dir, tmp_path / "run", precision="fp32"))
    records = log_records(tmp_path / "run", "train")
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert len(log_records(tmp_path / "run", "validation")) == 2
    assert min(r["images_per_s"] for r in records) > 1.0


def assert_same_run(resumed: Path, reference: Path) -> None:
    expected, actual = final_weights(reference), final_weights(resumed)
    assert expected.keys() == actual.keys()
    for key in expected:
        assert torch.equal(actual[key], expected[key]), key
    assert (resumed / "model.safetensors").read_bytes() == (
        reference / "model.safetensors").read_bytes()

    def losses(out):
        return [(r["step"], r["loss"]) for r in log_records(out, "train")]

    assert losses(resumed) == losses(reference)
    assert log_records(resumed, "validation") == log_records(reference, "validation")


def test_paused_then_resumed_run_equals_the_uninterrupted_one(data_dir, full_run, tmp_path):
    paused = train(settings(data_dir, tmp_path, stop_at_step=4))
    assert (paused.status, paused.step, paused.epochs_done) == ("paused", 4, 1)
    assert load_train_state(tmp_path / STATE_FILENAME)["step"] == 4
    resumed = train(settings(data_dir, tmp_path, resume=True, workers=1))
    assert (resumed.status, resumed.step) == ("finished", 6)
    assert_same_run(tmp_path, full_run)


def test_sigterm_saves_the_state_between_steps_and_resume_completes_the_run(
    data_dir, full_run, tmp_path, monkeypatch
):
    original_step = Trainer._train_step

    def step_then_terminate(self, batch):
        original_step(self, batch)
        if self.step == 1:  # counted after the call: this is the second step
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(Trainer, "_train_step", step_then_terminate)
    stopped = train(settings(data_dir, tmp_path))
    assert (stopped.status, stopped.signal, stopped.step) == ("interrupted", "SIGTERM", 2)
    monkeypatch.setattr(Trainer, "_train_step", original_step)
    # A torn record after the saved step, as a crash mid-write would leave, is dropped.
    with open(tmp_path / LOG_FILENAME, "a") as handle:
        handle.write(json.dumps({"event": "train", "step": 3}) + "\n{\"event\": \"tra")
    train(settings(data_dir, tmp_path, resume=True))
    assert_same_run(tmp_path, full_run)


def test_stop_requests_turn_signals_into_a_flag_and_restore_handlers():
    before = signal.getsignal(signal.SIGTERM)
    with StopRequests() as stop:
        assert stop.requested is None
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested == "SIGTERM"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # a second request stops at once
    assert signal.getsignal(signal.SIGTERM) is before


def test_sharp_only_and_ablations_pick_their_rows_heads_and_losses(data_dir, tmp_path):
    sharp = Trainer(settings(data_dir, tmp_path, method="sharp-only"))
    assert set(sharp.stream.bank.exposure[sharp.data.items].tolist()) == {0}
    assert sharp.model.has_blur_head and sharp.model.has_loc_head
    standard = Trainer(settings(data_dir, tmp_path, method="standard"))
    assert not standard.model.has_blur_head and standard.head is not None
    ablation = Trainer(settings(data_dir, tmp_path, losses=frozenset({"con", "be"})))
    assert ablation.model.has_blur_head and not ablation.model.has_loc_head
    assert ablation.head is None and ablation.loss_config.enabled == {"con", "be"}


# ----- command line --------------------------------------------------------------------------

def run_cli(*args: str):
    return CliRunner().invoke(train_command, [str(a) for a in args])


TINY_ARGS = ("--backbone", "test_byobnet", "--image-size", "32x48", "--embedding-dim", "16",
             "--batch", "4,2", "--steps-per-epoch", "2", "--epochs", "1", "--workers", "0", "-q")


def test_cli_trains_and_refuses_to_overwrite_or_resume_differently(data_dir, tmp_path):
    out = tmp_path / "run"
    result = run_cli(data_dir, "--out", out, *TINY_ARGS)
    assert result.exit_code == 0, result.output
    assert "best validation mAP@100" in result.output and (out / "config.json").is_file()
    again = run_cli(data_dir, "--out", out, *TINY_ARGS)
    assert again.exit_code == 2 and "--resume" in again.output
    changed = run_cli(data_dir, "--out", out, *TINY_ARGS, "--resume", "--lr", "0.01")
    assert changed.exit_code == 2
    assert "lr: saved 0.0001, now 0.01" in " ".join(changed.output.split())
    fresh = run_cli(data_dir, "--out", tmp_path / "fresh", *TINY_ARGS, "--resume")
    assert fresh.exit_code == 2 and "no training state" in fresh.output


def test_cli_loss_margins_and_weight_reach_the_head_and_loss(data_dir, tmp_path):
    out = tmp_path / "run"
    result = run_cli(data_dir, "--out", out, *TINY_ARGS, "--cls-margin", "0", "--cls-weight", "1",
                     "--con-margin", "1.2", "--con-negatives", "9")
    assert result.exit_code == 0, result.output
    training = json.loads((out / "config.json").read_text())["training"]
    assert (training["cls_margin"], training["cls_weight"], training["con_margin"],
            training["con_negatives"]) == (0.0, 1.0, 1.2, 9)
    trainer = Trainer(settings(data_dir, tmp_path / "other", cls_margin=0.0, cls_weight=1.0,
                               con_margin=1.2, con_negatives=9))
    assert trainer.head.margin == 0.0 and trainer.loss_config.weights.cls == 1.0
    assert (trainer.loss_config.margin, trainer.loss_config.num_negatives) == (1.2, 9)
    refused = run_cli(data_dir, "--out", tmp_path / "bad", *TINY_ARGS, "--con-margin", "0")
    assert refused.exit_code == 2 and "--con-margin" in refused.output
    refused = run_cli(data_dir, "--out", tmp_path / "bad", *TINY_ARGS, "--con-negatives", "0")
    assert refused.exit_code == 2 and "--con-negatives" in refused.output


def test_cli_softmax_contrastive_loss_trains_and_is_recorded(data_dir, tmp_path):
    out = tmp_path / "run"
    result = run_cli(data_dir, "--out", out, *TINY_ARGS, "--con-loss", "softmax",
                     "--con-temperature", "0.05", "--memory", "16", "--log-every", "1")
    assert result.exit_code == 0, result.output
    training = json.loads((out / "config.json").read_text())["training"]
    assert (training["con_loss"], training["con_temperature"]) == ("softmax", 0.05)
    logged = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert any(math.isfinite(record["loss"]["con"]) for record in logged if "loss" in record)
    with pytest.raises(TrainError, match="unknown contrastive loss 'triplet'"):
        Trainer(settings(data_dir, tmp_path / "bad", con_loss="triplet"))
    balanced = Trainer(settings(data_dir, tmp_path / "balanced", con_loss="balanced"))
    assert balanced.loss_config.con_kind == "balanced"
    refused = run_cli(data_dir, "--out", tmp_path / "bad-cli", *TINY_ARGS, "--con-loss", "triplet")
    assert refused.exit_code == 2 and "unknown contrastive loss 'triplet'" in refused.output


def test_cli_spread_weight_trains_is_logged_and_recorded(data_dir, tmp_path):
    out = tmp_path / "run"
    result = run_cli(data_dir, "--out", out, *TINY_ARGS, "--spread-weight", "0.5",
                     "--log-every", "1")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["training"]["spread_weight"] == 0.5
    logged = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert any(math.isfinite(record["loss"]["spread"]) for record in logged if "loss" in record)
    assert Trainer(settings(data_dir, tmp_path / "other", spread_weight=0.5)
                   ).loss_config.weights.spread == 0.5
    refused = run_cli(data_dir, "--out", tmp_path / "bad", *TINY_ARGS, "--spread-weight", "-1")
    assert refused.exit_code == 2 and "--spread-weight" in refused.output


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--method", "fancy"), "unknown method 'fancy'; choose from blur-aware, sharp-only"),
        (("--schedule", "linear"), "unknown schedule 'linear'"),
        (("--losses", "con,xyz"), "unknown losses ['xyz']"),
        (("--batch", "4x2"), "expected P,K"),
        (("--batch", "4,1"), "K must be >= 2"),
        (("--batch", "1,2"), "P must be >= 2"),
        (("--batch", "15,2"), "only 14 training instances"),
        (("--image-size", "big"), "expected HEIGHTxWIDTH"),
        (("--backbone", "no_such_net"), "backbone 'no_such_net'"),
        (("--precision", "fp16"), "'fp16' is not one of 'auto', 'fp32', 'bf16'"),
    ],
)
def test_cli_reports_bad_options(data_dir, tmp_path, extra, message):
    result = run_cli(data_dir, "--out", tmp_path / "run", *TINY_ARGS, *extra)
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert not (tmp_path / "run" / STATE_FILENAME).exists()


def test_cli_reports_unusable_data(data_dir, tmp_path):
    missing = run_cli(tmp_path / "nowhere", "--out", tmp_path / "run", *TINY_ARGS)
    assert missing.exit_code == 2 and "no manifest.parquet" in missing.output

    items, table = manifest_items(data_dir)
    no_train = tmp_path / "no_train"
    write_parquet_atomic(no_train / "manifest.parquet",
                         table.filter(pc.not_equal(table["role"], "train")))
    result = run_cli(no_train, "--out", tmp_path / "run", *TINY_ARGS)
    assert result.exit_code == 2 and "no rows with role 'train'" in result.output
    assert str(no_train / "manifest.parquet") in " ".join(result.output.split())


def test_settings_are_plain_values_stored_with_the_state(data_dir, full_run):
    identity = load_train_state(full_run / STATE_FILENAME)["identity"]
    assert identity["losses"] == ["be", "cls", "con", "loc"]
    assert identity["steps_per_epoch"] == 3 and identity["instances_per_batch"] == 4
    assert not {f.name for f in dataclasses.fields(TrainSettings)} - set(identity) - {
        "data_dir", "out_dir", "workers", "device", "precision", "resume", "stop_at_step",
        "progress", "checkpoint_every", "log_every", "val_batch_size", "init_from"}
