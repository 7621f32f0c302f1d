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
PRECISIONS = ("auto", "fp32", "bf16")


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


def _bf16_by_default(device: torch.device) -> bool:
    """The default precision rule: bfloat16 on CUDA GPUs that support it, else float32."""
    import torch

    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on CUDA GPUs that support it; float32 everywhere else.

    Inference always follows this rule, and training does too unless `--precision` asks
    otherwise, so a model is embedded in the precision it was validated in. float16 is not used
    as a fallback: it needs loss scaling to train, and its narrow range can overflow activations
    of a network trained in bfloat16 or float32; no measurement here showed float16 inference
    worth that risk.
    """
    import torch

    if _bf16_by_default(device):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX), as torch reports it.

    Without it, oneDNN emulates bfloat16 and a training step gets slower, not faster.
    """
    import torch

    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def training_precision(requested: str, device: torch.device) -> str:
    """'fp32' or 'bf16' for a requested 'auto' | 'fp32' | 'bf16' training precision.

    'auto' is the rule of `autocast`: bfloat16 on CUDA GPUs that support it, float32 on a CPU.
    bfloat16 on a CPU is a choice, not the default: on the 2-core CPU here (AVX512-BF16) it made
    a 400-step `blur-aware` run 1.34x faster (190.7 against 142.5 images/s), but its validation
    mAP@100 was 6.4 % against 7.1 % in float32 (one seed each), so it wins per minute, not per
    step (the shipped models' hour of training uses it for that: docs/results.md, "The shipped
    models" and "What the budget is worth"). Weights and optimiser state stay float32
    either way, and a model embeds in `autocast`'s precision whichever way it was trained.
    """
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    if requested != "auto":
        return requested
    return "bf16" if _bf16_by_default(device) else "fp32"


def training_autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast of a training forward pass at a resolved precision ('fp32' or 'bf16')."""
    import torch

    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of a model's parameters (where its input must go)."""
    return next(model.parameters()).device

