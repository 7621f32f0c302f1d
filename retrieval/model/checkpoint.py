"""Checkpoint directories: safetensors weights + a JSON config that names the architecture.

A checkpoint is a directory holding `model.safetensors` (the BlurAwareNet state dict only, no
training head, no optimizer) and `config.json`. The config records the SHA-256 of the weights
file so tampering or corruption is caught before any tensor is used, and everything needed to
rebuild the network, so loading never unpickles anything.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from retrieval.fileio import write_bytes_atomic, write_json_atomic
from retrieval.model.network import BlurAwareNet

CHECKPOINT_FORMAT = 1
WEIGHTS_FILENAME = "model.safetensors"
CONFIG_FILENAME = "config.json"
SHIPPED_CHECKPOINT_DIR = Path(__file__).parent.parent / "checkpoints"
REQUIRED_CONFIG_KEYS = (
    "format",
    "backbone",
    "image_size",
    "embedding_dim",
    "blur_head",
    "loc_head",
    "weights_sha256",
)
# What decides the vectors a model produces: its exact weights, its layout and its input size.
FINGERPRINT_KEYS = (
    "weights_sha256",
    "backbone",
    "image_size",
    "embedding_dim",
    "blur_head",
    "loc_head",
)
# Layout keys newer checkpoints add; absent means the layout that predates them (global head).
OPTIONAL_ARCHITECTURE_KEYS = ("head", "crop_size", "blur_input")
_SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")


class CheckpointError(ValueError):
    """A checkpoint is missing, malformed, tampered with, or does not fit its architecture."""


def save_checkpoint(
    directory: str | Path, model: BlurAwareNet, config: Mapping[str, Any], half: bool = False
) -> dict[str, Any]:
    """Write `model.safetensors` then `config.json` into `directory`, each atomically.

    `config` must give "image_size" [H, W] and should give "method", "losses",
    "data_fingerprint" and "validation" (metrics); other keys are kept as extras. The
    architecture keys, "format", "weights_dtype" and "weights_sha256" are filled in from the
    model. With `half=True` float32 tensors are stored as float16 (half the file size) and come
    back as float32 on load. Returns the config as written.
    """
    directory = Path(directory)
    architecture = model.architecture()
    conflicts = {
        key: (config[key], value)
        for key, value in architecture.items()
        if key in config and config[key] != value
    }
    if conflicts:
        raise ValueError(f"config disagrees with the model on (given, actual): {conflicts}")
    if "image_size" not in config:
        raise ValueError("config must give 'image_size' [H, W], the input size the model expects")
    _check_image_size(config["image_size"], "config")

    data = save_safetensors_bytes(_storable_state(model, half))
    full_config = {
        **config,
        **architecture,
        "format": CHECKPOINT_FORMAT,
        "weights_dtype": "float16" if half else "float32",
        "weights_sha256": hashlib.sha256(data).hexdigest(),
    }
    full_config = json.loads(json.dumps(full_config, default=_json_default))
    write_bytes_atomic(directory / WEIGHTS_FILENAME, data)
    write_json_atomic(directory / CONFIG_FILENAME, full_config)
    return full_config


def _json_default(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"config value {value!r} of type {type(value).__name__} is not JSON-storable")


def _storable_state(model: BlurAwareNet, half: bool) -> dict[str, torch.Tensor]:
    # safetensors needs contiguous CPU tensors; channels_last weights are made contiguous here.
    state = {}
    for key, tensor in model.state_dict().items():
        stored = tensor.detach().to("cpu").contiguous()
        if half and stored.dtype == torch.float32:
            narrowed = stored.to(torch.float16)
            if bool(torch.isfinite(stored).all()) and not bool(torch.isfinite(narrowed).all()):
                raise ValueError(f"tensor {key!r} overflows float16; save with half=False")
            stored = narrowed
        state[key] = stored
    return state


def model_fingerprint(config: Mapping[str, Any]) -> str:
    """16 hex chars naming the model that made a vector: weights hash + architecture + input.

    Two checkpoints share a fingerprint only if they produce the same vectors, so an index can
    refuse vectors made by another model.
    """
    missing = [key for key in FINGERPRINT_KEYS if key not in config]
    if missing:
        raise CheckpointError(f"config lacks {missing}, needed for the model fingerprint")
    named = {key: config[key] for key in FINGERPRINT_KEYS}
    named.update({key: config[key] for key in OPTIONAL_ARCHITECTURE_KEYS if key in config})
    canonical = json.dumps(named, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def available_checkpoints() -> list[str]:
    """Names of the checkpoints shipped inside the package (directories with a config.json)."""
    if not SHIPPED_CHECKPOINT_DIR.is_dir():
        return []
    return sorted(
        entry.name
        for entry in SHIPPED_CHECKPOINT_DIR.iterdir()
        if (entry / CONFIG_FILENAME).is_file()
    )


def resolve_checkpoint(path_or_name: str | Path) -> Path:
    """An existing directory wins; otherwise the name of a shipped checkpoint is looked up."""
    candidate = Path(path_or_name)
    if candidate.is_dir():
        return candidate
    available = available_checkpoints()
    if str(path_or_name) in available:
        return SHIPPED_CHECKPOINT_DIR / str(path_or_name)
    raise CheckpointError(
        f"{path_or_name}: not a checkpoint directory nor a shipped checkpoint name; "
        f"available shipped checkpoints: {', '.join(available) or 'none installed'}"
    )


def read_checkpoint_config(directory: str | Path) -> dict[str, Any]:
    """The validated config.json of a checkpoint directory, without touching the weights."""
    path = Path(directory) / CONFIG_FILENAME
    if not path.is_file():
        raise CheckpointError(f"{path}: config file missing")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: must hold a JSON object, got {type(config).__name__}")
    missing = [key for key in REQUIRED_CONFIG_KEYS if key not in config]
    if missing:
        raise CheckpointError(f"{path}: missing keys {missing}")
    if config["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path}: unknown format version {config['format']!r} "
            f"(this version reads {CHECKPOINT_FORMAT})"
        )
    _check_config_types(config, path)
    return config


def _check_config_types(config: Mapping[str, Any], path: Path) -> None:
    if not isinstance(config["backbone"], str) or not config["backbone"]:
        raise CheckpointError(f"{path}: 'backbone' must be a non-empty string")
    _check_local_backbone(config["backbone"], path)
    dim = config["embedding_dim"]
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise CheckpointError(f"{path}: 'embedding_dim' must be a positive integer, got {dim!r}")
    for key in ("blur_head", "loc_head"):
        if not isinstance(config[key], bool):
            raise CheckpointError(f"{path}: {key!r} must be true or false, got {config[key]!r}")
    sha = config["weights_sha256"]
    if not isinstance(sha, str) or not _SHA256_PATTERN.fullmatch(sha):
        raise CheckpointError(f"{path}: 'weights_sha256' must be 64 lowercase hex characters")
    try:
        _check_image_size(config["image_size"], str(path))
    except ValueError as exc:
        raise CheckpointError(str(exc)) from exc


def _check_local_backbone(name: str, path: Path) -> None:
    """A checkpoint is untrusted input: it may only name an architecture built locally.

    timm treats names such as 'hf-hub:org/model' or 'local-dir:/path' as places to fetch a
    model from; only registered model names (timm's own and the plainnet backbones, which
    `network` registers) are accepted, so loading a checkpoint never downloads or reads
    anything beyond its own two files.
    """
    if any(mark in name for mark in ":/\\") or not timm.is_model(name):
        raise CheckpointError(
            f"{path}: backbone {name!r} is not a registered timm or plainnet architecture name "
            "(hub prefixes and paths are refused, so a checkpoint never makes us download)"
        )


def _check_image_size(image_size: Any, where: str) -> None:
    if (
        not isinstance(image_size, (list, tuple))
        or len(image_size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in image_size)
    ):
        raise ValueError(f"{where}: 'image_size' must be [H, W] positive ints, got {image_size!r}")


def load_checkpoint(
    path_or_name: str | Path, device: str | torch.device = "cpu"
) -> tuple[BlurAwareNet, dict[str, Any]]:
    """Rebuild a BlurAwareNet from a checkpoint directory or shipped name; model in eval mode.

    The weights are hashed and compared with the config before parsing, read with safetensors
    (never unpickled), and must match the configured architecture key for key and shape.
    """
    directory = resolve_checkpoint(path_or_name)
    config = read_checkpoint_config(directory)
    weights_path = directory / WEIGHTS_FILENAME
    if not weights_path.is_file():
        raise CheckpointError(f"{weights_path}: weights file missing")
    data = weights_path.read_bytes()
    if hashlib.sha256(data).hexdigest() != config["weights_sha256"]:
        raise CheckpointError(
            f"{weights_path}: SHA-256 differs from the one in {CONFIG_FILENAME}; "
            "the weights are tampered or corrupted"
        )
    try:
        state = load_safetensors_bytes(data)
    except Exception as exc:  # safetensors raises its own error types for malformed files
        raise CheckpointError(f"{weights_path}: not a readable safetensors file: {exc}") from exc
    try:
        model = BlurAwareNet(
            backbone=config["backbone"],
            pretrained=False,  # the weights are this checkpoint's; nothing is fetched
            embedding_dim=config["embedding_dim"],
            blur_head=config["blur_head"],
            loc_head=config["loc_head"],
            **{key: config[key] for key in OPTIONAL_ARCHITECTURE_KEYS if key in config},
        )
    except (RuntimeError, ValueError, TypeError) as exc:  # timm reports an unknown backbone as RuntimeError
        config_path = directory / CONFIG_FILENAME
        raise CheckpointError(f"{config_path}: cannot build the model: {exc}") from exc
    expected = model.state_dict()
    _check_state_matches(expected, state, weights_path)
    model.load_state_dict({key: state[key].to(expected[key].dtype) for key in expected})
    return model.to(device).eval(), config


def _check_state_matches(
    expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor], path: Path
) -> None:
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong_shape = sorted(
        key for key in set(expected) & set(found) if expected[key].shape != found[key].shape
    )
    if missing or unexpected or wrong_shape:
        details = []
        if missing:
            details.append(f"missing {missing[:5]}")
        if unexpected:
            details.append(f"unexpected {unexpected[:5]}")
        if wrong_shape:
            key = wrong_shape[0]
            details.append(
                f"{len(wrong_shape)} shape mismatches, e.g. {key}: file "
                f"{tuple(found[key].shape)} vs config {tuple(expected[key].shape)}"
            )
        raise CheckpointError(
            f"{path}: weights mismatched with the architecture in {CONFIG_FILENAME}: "
            + "; ".join(details)
        )
