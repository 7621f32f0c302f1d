"""Imprinting a fine-tune's classification head (`train --imprint-head`)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from click.testing import CliRunner
from fakes import synthesized, tiny_train_settings
from torch import nn

from benchmark.commands.train import train_command
from retrieval.model.network import MarginSoftmaxHead
from retrieval.sim.layout import Preset
from retrieval.train import STATE_FILENAME, load_train_state, train
from retrieval.train.errors import TrainError
from retrieval.train.imprint import class_mean_directions, imprint_head, imprint_steps

# 20 instances of one category: 14 train, 3 val, 3 test
PRESET = Preset(categories=1, instances=20, trajectories=3, height=48, width=64)


class Identity(nn.Module):
    """A 'network' whose embedding is its input, so the class means can be computed by hand."""

    def forward(self, images: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(embedding=images)


def test_imprint_steps_cover_every_instance_the_asked_number_of_times():
    assert imprint_steps(1120, 64) == 35  # 2 x 1,120 / 64
    assert imprint_steps(14, 4, passes=1) == 4
    assert imprint_steps(3, 4, passes=1) == 1


def test_rows_become_the_unit_mean_of_their_class_and_unseen_rows_stay():
    batches = [
        (torch.tensor([[3.0, 0.0], [0.0, 2.0]]), torch.tensor([0, 0])),
        (torch.tensor([[0.0, -5.0], [1.0, 1.0]]), torch.tensor([1, 0])),
    ]
    head = MarginSoftmaxHead(2, 3)
    untouched = head.weight[2].detach().clone()
    sums, counts = class_mean_directions(Identity(), batches, 3, 2)
    # class 0: unit vectors (1, 0), (0, 1), (0.7071, 0.7071); class 1: (0, -1)
    root_half = 2 ** -0.5
    assert torch.allclose(sums, torch.tensor([[1 + root_half, 1 + root_half], [0.0, -1.0],
                                              [0.0, 0.0]]))
    assert counts.tolist() == [3.0, 1.0, 0.0]
    warnings = []
    assert imprint_head(head, Identity(), batches, warnings.append) == 2
    assert torch.allclose(head.weight[0], torch.tensor([root_half, root_half]))
    assert torch.allclose(head.weight[1], torch.tensor([0.0, -1.0]))
    assert torch.equal(head.weight[2], untouched)
    assert warnings == ["imprinting: 1 of 3 classes had no image; their rows stay random"]


def test_the_network_is_read_in_eval_mode_and_left_as_it_was():
    seen = []

    class Recorder(Identity):
        def forward(self, images):
            seen.append(self.training)
            return super().forward(images)

    model = Recorder().train()
    class_mean_directions(model, [(torch.ones(1, 2), torch.tensor([0]))], 1, 2)
    assert seen == [False] and model.training


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return synthesized(tmp_path_factory.mktemp("imprint_data"), PRESET)


@pytest.fixture(scope="module")
def start(data_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("start")
    assert train(tiny_train_settings(data_dir, out, epochs=1)).status == "finished"
    return out


def head_rows(out: Path) -> torch.Tensor:
    return load_train_state(out / STATE_FILENAME)["head"]["weight"]


def log_events(out: Path, event: str) -> list[dict]:
    records = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    return [record for record in records if record["event"] == event]


def test_a_fine_tune_with_imprinting_starts_its_head_at_unit_class_means(data_dir, start,
                                                                          tmp_path):
    # lr ~ 0: the rows after one step are the rows the run started with
    common = dict(init_from=str(start), lr=1e-12, epochs=1, steps_per_epoch=1)
    plain, imprinted = tmp_path / "plain", tmp_path / "imprinted"
    train(tiny_train_settings(data_dir, plain, **common))
    train(tiny_train_settings(data_dir, imprinted, imprint_head=True, **common))
    rows = head_rows(imprinted)
    assert rows.shape == (14, 16)
    assert torch.allclose(rows.norm(dim=1), torch.ones(14), atol=1e-5)
    assert not torch.allclose(head_rows(plain).norm(dim=1), torch.ones(14), atol=1e-3)
    assert [e["classes"] for e in log_events(imprinted, "imprint")] == [14]
    assert log_events(plain, "imprint") == []
    config = json.loads((imprinted / "config.json").read_text())["training"]
    assert config["imprint_head"] is True
    # the imprinted rows point where the starting network puts each class: its first
    # logged classification loss is below the random head's
    first_cls = [log_events(out, "train")[0]["loss"]["cls"] for out in (imprinted, plain)]
    assert first_cls[0] < first_cls[1]


def test_a_resumed_fine_tune_does_not_imprint_again(data_dir, start, tmp_path):
    settings = dict(init_from=str(start), imprint_head=True, epochs=1, steps_per_epoch=2)
    assert train(tiny_train_settings(data_dir, tmp_path, stop_at_step=1,
                                     **settings)).status == "paused"
    assert train(tiny_train_settings(data_dir, tmp_path, resume=True,
                                     **settings)).status == "finished"
    assert len(log_events(tmp_path, "imprint")) == 1
    events = [json.loads(line)["event"] for line in
              (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert events.index("start") < events.index("imprint") < events.index("train")


def test_imprinting_needs_a_starting_network_and_a_classifier(data_dir, start, tmp_path):
    with pytest.raises(TrainError, match="--imprint-head needs --init-from"):
        train(tiny_train_settings(data_dir, tmp_path, imprint_head=True))
    with pytest.raises(TrainError, match="--imprint-head needs the classification loss"):
        train(tiny_train_settings(data_dir, tmp_path, imprint_head=True, init_from=str(start),
                                  losses=frozenset({"con", "be", "loc"})))


def test_the_train_command_refuses_imprinting_without_a_starting_network(data_dir, tmp_path):
    result = CliRunner().invoke(train_command, [str(data_dir), "--out", str(tmp_path / "run"),
                                                "--imprint-head"])
    assert result.exit_code == 2
    assert "--imprint-head needs --init-from" in result.output
    assert not (tmp_path / "run" / STATE_FILENAME).exists()
