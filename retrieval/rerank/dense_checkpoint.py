"""The dense network's checkpoint: `dense.safetensors` + `dense.json`, shipped in `checkpoints/dense`.

Its own file names (not `config.json`) keep it out of the list of global retrieval models
(`available_checkpoints`), which it is not.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from retrieval.fileio import write_bytes_atomic, write_json_atomic
from retrieval.model.checkpoint import SHIPPED_CHECKPOINT_DIR
from retrieval.rerank.dense_net import DenseFeatureNet
from retrieval.rerank.names import SHIPPED_DENSE

WEIGHTS_NAME = "dense.safetensors"
CONFIG_NAME = "dense.json"
SHIPPED_DENSE_DIR = SHIPPED_CHECKPOINT_DIR / SHIPPED_DENSE


class DenseCheckpointError(ValueError):
    """A dense checkpoint that is missing or unreadable; the message names the file."""


def save_dense(directory: str | Path, net: DenseFeatureNet, extra: dict[str, Any]) -> dict:
    """Write the weights (float16: half the size, descriptors agree to ~1e-3) then the config."""
    directory = Path(directory)
    state = {key: value.detach().cpu().half() if value.is_floating_point() else value.cpu()
             for key, value in net.state_dict().items()}
    data = save_safetensors_bytes(state)
    config = {**extra, **net.architecture(), "weights_sha256": hashlib.sha256(data).hexdigest()}
    write_bytes_atomic(directory / WEIGHTS_NAME, data)
    write_json_atomic(directory / CONFIG_NAME, config)
    return config


def resolve_dense(path_or_name: str | Path = SHIPPED_DENSE) -> Path:
    """A directory holding a dense checkpoint; the name 'dense' means the shipped one."""
    directory = SHIPPED_DENSE_DIR if str(path_or_name) == SHIPPED_DENSE else Path(path_or_name)
    if not (directory / CONFIG_NAME).is_file():
        raise DenseCheckpointError(f"{directory}: no {CONFIG_NAME}; not a dense checkpoint "
                                   f"(the shipped one is '{SHIPPED_DENSE}')")
    return directory


def load_dense(path_or_name: str | Path = SHIPPED_DENSE, device: str | torch.device = "cpu"
               ) -> tuple[DenseFeatureNet, dict]:
    """The dense network in eval mode on `device`, and its config."""
    directory = resolve_dense(path_or_name)
    try:
        config = json.loads((directory / CONFIG_NAME).read_text(encoding="utf-8"))
        data = (directory / WEIGHTS_NAME).read_bytes()
        net = DenseFeatureNet(int(config["dim"]), int(config["stride"]), int(config["crop"]))
        state = {key: value.float() if value.is_floating_point() else value
                 for key, value in load_safetensors_bytes(data).items()}
        net.load_state_dict(state)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as error:
        raise DenseCheckpointError(f"{directory}: unusable dense checkpoint: {error}") from error
    if hashlib.sha256(data).hexdigest() != config.get("weights_sha256"):
        raise DenseCheckpointError(f"{directory / WEIGHTS_NAME}: weights do not match the hash "
                                   f"in {CONFIG_NAME}")
    return net.to(device).eval(), config
