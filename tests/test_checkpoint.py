"""Checkpoint directories: round trips, integrity checks and the model fingerprint."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import timm
import torch

from retrieval.model import (
    BlurAwareNet,
    CheckpointError,
    available_checkpoints,
    load_checkpoint,
    model_fingerprint,
    read_checkpoint_config,
    save_checkpoint,
)
from retrieval.model import checkpoint as checkpoint_module

TINY = "test_byobnet"
CONFIG = {
    "image_size": [32, 32],
    "method": "blur-aware",
    "losses": frozenset({"con", "cls", "be", "loc"}),
    "data_fingerprint": "abc123",
    "validation": {"map100": 0.5},
    "epochs": 3,
}


def trained_like_net(**kwargs) -> BlurAwareNet:
    """A tiny net whose BatchNorm statistics and GeM exponents are not at their defaults."""
    torch.manual_seed(0)
    net = BlurAwareNet(TINY, embedding_dim=16, **kwargs)
    with torch.no_grad():
        net(torch.rand(4, 3, 32, 32))  # train mode: updates running statistics
        net.descriptor[0].p.fill_(2.5)
    return net.eval()


def embed(net: BlurAwareNet) -> torch.Tensor:
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        return net(x).embedding


def rewrite_config(directory: Path, **changes) -> None:
    path = directory / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def test_round_trip_gives_identical_embeddings(tmp_path):
    net = trained_like_net()
    written = save_checkpoint(tmp_path / "ckpt", net, CONFIG)
    loaded, config = load_checkpoint(tmp_path / "ckpt")
    assert not loaded.training
    assert torch.equal(embed(loaded), embed(net))
    assert config == written
    assert config["format"] == 1 and config["weights_dtype"] == "float32"
    assert config["losses"] == ["be", "cls", "con", "loc"]
    assert config["validation"] == {"map100": 0.5} and config["epochs"] == 3
    assert config["backbone"] == TINY and config["embedding_dim"] == 16
    weights = (tmp_path / "ckpt" / "model.safetensors").read_bytes()
    assert config["weights_sha256"] == hashlib.sha256(weights).hexdigest()
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "config.json",
        "model.safetensors",
    ]


def test_half_precision_storage_is_smaller_and_loads_back_as_float32(tmp_path):
    net = trained_like_net()
    save_checkpoint(tmp_path / "full", net, CONFIG)
    save_checkpoint(tmp_path / "half", net, CONFIG, half=True)
    full_size = (tmp_path / "full" / "model.safetensors").stat().st_size
    half_size = (tmp_path / "half" / "model.safetensors").stat().st_size
    assert half_size < 0.6 * full_size
    loaded, config = load_checkpoint(tmp_path / "half")
    assert config["weights_dtype"] == "float16"
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    torch.testing.assert_close(embed(loaded), embed(net), atol=1e-2, rtol=0)


def test_standard_network_round_trips_and_channels_last_saves(tmp_path):
    net = trained_like_net(blur_head=False, loc_head=False).to(memory_format=torch.channels_last)
    save_checkpoint(tmp_path / "std", net, {**CONFIG, "method": "standard"})
    loaded, config = load_checkpoint(tmp_path / "std")
    assert (config["blur_head"], config["loc_head"]) == (False, False)
    torch.testing.assert_close(embed(loaded), embed(net))


def test_tampered_weights_are_refused(tmp_path):
    save_checkpoint(tmp_path / "ckpt", trained_like_net(), CONFIG)
    weights = tmp_path / "ckpt" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*tampered or corrupted"):
        load_checkpoint(tmp_path / "ckpt")


def test_weights_that_are_not_safetensors_are_refused(tmp_path):
    save_checkpoint(tmp_path / "ckpt", trained_like_net(), CONFIG)
    garbage = b"\x00" * 64
    (tmp_path / "ckpt" / "model.safetensors").write_bytes(garbage)
    rewrite_config(tmp_path / "ckpt", weights_sha256=hashlib.sha256(garbage).hexdigest())
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_checkpoint(tmp_path / "ckpt")


def test_config_with_a_different_architecture_is_refused_as_mismatched(tmp_path):
    save_checkpoint(tmp_path / "ckpt", trained_like_net(), CONFIG)
    rewrite_config(tmp_path / "ckpt", embedding_dim=32)
    with pytest.raises(
        CheckpointError,
        match=r"model\.safetensors.*mismatched.*embedding_norm\.running_mean: file \(16,\) vs config \(32,\)",
    ):
        load_checkpoint(tmp_path / "ckpt")
    rewrite_config(tmp_path / "ckpt", embedding_dim=16, loc_head=False)
    with pytest.raises(CheckpointError, match="mismatched.*unexpected.*loc_branch"):
        load_checkpoint(tmp_path / "ckpt")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "config.json").unlink(), r"config\.json: config file missing"),
        (lambda d: (d / "model.safetensors").unlink(), r"model\.safetensors: weights file missing"),
        (lambda d: (d / "config.json").write_text("{not json"), "not valid JSON"),
        (lambda d: (d / "config.json").write_text("[1, 2]"), "JSON object"),
        (lambda d: rewrite_config(d, format=2), "unknown format version 2"),
        (lambda d: rewrite_config(d, embedding_dim="16"), "embedding_dim"),
        (lambda d: rewrite_config(d, image_size=[32]), "image_size"),
        (lambda d: rewrite_config(d, backbone="no_such_backbone"),
         r"config\.json: backbone 'no_such_backbone' is not a registered"),
    ],
)
def test_broken_checkpoints_give_a_clear_error(tmp_path, damage, message):
    directory = tmp_path / "ckpt"
    save_checkpoint(directory, trained_like_net(), CONFIG)
    damage(directory)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(directory)


@pytest.mark.parametrize("name", ["hf-hub:someorg/somemodel", "timm/some_model", "timm/resnet18",
                                  "local-dir:/tmp/model", "resnet18/../x"])
def test_backbones_that_timm_would_fetch_are_refused_before_timm_is_called(tmp_path, monkeypatch,
                                                                            name):
    directory = tmp_path / "ckpt"
    save_checkpoint(directory, trained_like_net(), CONFIG)
    rewrite_config(directory, backbone=name)

    def no_download(*args, **kwargs):
        raise AssertionError(f"timm.create_model reached with {args}, {kwargs}")

    monkeypatch.setattr(timm, "create_model", no_download)
    expected = rf"{re.escape(str(directory / 'config.json'))}: backbone {re.escape(repr(name))}"
    for read in (read_checkpoint_config, load_checkpoint):
        with pytest.raises(CheckpointError, match=expected):
            read(directory)


def test_config_missing_keys_are_listed(tmp_path):
    directory = tmp_path / "ckpt"
    save_checkpoint(directory, trained_like_net(), CONFIG)
    config = json.loads((directory / "config.json").read_text())
    del config["backbone"], config["weights_sha256"]
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"missing keys \['backbone', 'weights_sha256'\]"):
        read_checkpoint_config(directory)


def test_save_refuses_configs_that_contradict_the_model(tmp_path):
    net = trained_like_net()
    with pytest.raises(ValueError, match="embedding_dim"):
        save_checkpoint(tmp_path / "a", net, {**CONFIG, "embedding_dim": 64})
    without_size = {k: v for k, v in CONFIG.items() if k != "image_size"}
    with pytest.raises(ValueError, match="image_size"):
        save_checkpoint(tmp_path / "b", net, without_size)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_shipped_names_resolve_and_unknown_names_list_the_available_ones(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint_module, "SHIPPED_CHECKPOINT_DIR", tmp_path / "shipped")
    with pytest.raises(CheckpointError, match="none installed"):
        load_checkpoint("blur-aware")
    net = trained_like_net()
    save_checkpoint(tmp_path / "shipped" / "blur-aware", net, CONFIG)
    save_checkpoint(tmp_path / "shipped" / "standard", net, CONFIG)
    assert available_checkpoints() == ["blur-aware", "standard"]
    loaded, _ = load_checkpoint("blur-aware")
    assert torch.equal(embed(loaded), embed(net))
    with pytest.raises(CheckpointError, match="sharp-only.*available.*blur-aware, standard"):
        load_checkpoint("sharp-only")


def test_model_fingerprint_identifies_weights_and_architecture(tmp_path):
    config = save_checkpoint(tmp_path / "ckpt", trained_like_net(), CONFIG)
    fingerprint = model_fingerprint(config)
    assert len(fingerprint) == 16 and int(fingerprint, 16) >= 0
    reordered = dict(reversed(list(config.items())))
    assert model_fingerprint(reordered) == fingerprint
    assert model_fingerprint({**config, "validation": {"map100": 0.9}}) == fingerprint
    assert model_fingerprint({**config, "image_size": [64, 64]}) != fingerprint
    assert model_fingerprint({**config, "weights_sha256": "0" * 64}) != fingerprint
    half = save_checkpoint(tmp_path / "half", trained_like_net(), CONFIG, half=True)
    assert model_fingerprint(half) != fingerprint
    with pytest.raises(CheckpointError, match="weights_sha256"):
        model_fingerprint({"backbone": TINY})
