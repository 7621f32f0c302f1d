"""Where the network runs and in which precision: one rule for every package.

`choose_device` is the one device rule ('cpu' is the CPU; 'auto' is CUDA when a GPU is usable,
else the CPU; 'cuda' without a usable GPU is an error). `resolve_device` applies it to torch; the
index layer applies it to FAISS, whose GPU support is a property of the FAISS build, not of
torch (see `indexer.gpu.resolve_device`). Errors are `DeviceUnavailableError`, a ValueError,
so library callers get a plain exception; command-line code turns it into a usage error.

torch is imported inside the functions: the index layer imports this module and must stay quick
to start for commands that never embed.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cpu", "cuda")


class DeviceUnavailableError(ValueError):
    """A device name this tool does not know, or a GPU that this machine or library lacks."""


def choose_device(requested: str, gpu_available: bool, backend: str) -> str:
    """'cpu' or 'cuda' for a requested 'auto' | 'cpu' | 'cuda'; `backend` names who looked."""
    if requested not in DEVICES:
        raise DeviceUnavailableError(
            f"device must be one of {', '.join(DEVICES)}, got {requested!r}"
        )
    if requested == "cpu":
        return "cpu"
    if gpu_available:
        return "cuda"
    if requested == "cuda":
        raise DeviceUnavailableError(
            f"device 'cuda' requested but {backend} sees no GPU on this machine"
        )
    return "cpu"


def resolve_device(requested: str) -> str:
    """torch's device for a requested 'auto' | 'cpu' | 'cuda' (see `choose_device`)."""
    import torch

    return choose_device(requested, torch.cuda.is_available(), backend="torch")


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on CUDA GPUs that support it; float32 everywhere else.

    One rule for training and inference, so a model is embedded in the precision it was
    validated in. float16 is not used as a fallback: it needs loss scaling to train, and its
    narrow range can overflow activations of a network trained in bfloat16 or float32; no
    measurement here showed float16 inference worth that risk.
    """
    import torch

    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of a model's parameters (where its input must go)."""
    return next(model.parameters()).device

