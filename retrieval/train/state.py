"""The files of a run folder that let training stop and continue: the state and the log.

`train_state.pt` holds only tensors and plain containers (no pickled objects), so it is read
with `torch.load(weights_only=True)`. `train_log.jsonl` is append-only, one JSON record per
line; on resume the records written after the saved state are dropped, so the log of an
interrupted and resumed run reads like the log of an uninterrupted one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from retrieval.fileio import atomic_path, write_text_atomic
from retrieval.train.errors import ResumeError
from retrieval.train.settings import TrainSettings

STATE_FILENAME = "train_state.pt"
LOG_FILENAME = "train_log.jsonl"


def save_train_state(path: str | Path, state: Mapping[str, Any]) -> None:
    """Write atomically: a crash mid-save leaves the previous state intact."""
    with atomic_path(path) as tmp:
        torch.save(dict(state), tmp)


def load_train_state(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ResumeError(f"{path}: no training state to resume from; run without --resume")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or foreign files
        raise ResumeError(f"{path}: not a readable training state ({exc})") from exc
    if not isinstance(state, dict) or "step" not in state:
        raise ResumeError(f"{path}: not a training state written by this trainer")
    return state


def check_same_identity(path: Path, saved: Mapping[str, Any], current: Mapping[str, Any]) -> None:
    """Refuse to resume a run whose weight-deciding settings changed (ResumeError naming each).

    A setting added since the state was saved counts as its default; the epoch count may change
    under a constant schedule, where it does not shape the learning rate.
    """
    defaults = {field.name: field.default for field in fields(TrainSettings)}
    saved = {**{key: defaults[key] for key in current if key not in saved and key in defaults},
             **saved}
    differing = sorted(
        key for key in set(saved) | set(current)
        if saved.get(key) != current.get(key)
        and not (key == "epochs" and current["schedule"] == "constant")
    )
    if differing:
        details = "; ".join(f"{key}: saved {saved.get(key)!r}, now {current.get(key)!r}"
                            for key in differing)
        raise ResumeError(f"{path}: cannot resume with different settings ({details})")


def _finite_or_none(value: Any) -> Any:
    """JSON has no NaN or infinity; write null for them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite_or_none(item) for key, item in value.items()}
    return value


class TrainLog:
    """JSON-lines records of one run: losses per logging interval, metrics per validation."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def append(self, record: Mapping[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(_finite_or_none(dict(record)), sort_keys=True) + "\n")
            handle.flush()

    def records(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def trim_after(self, step: int, epochs_done: int) -> int:
        """Drop records the saved state does not cover yet; returns how many were dropped.

        A training record is covered when its step is at most `step`, a validation record when
        its epoch (1-based) is at most `epochs_done`. A torn last line is dropped too.
        """
        if not self.path.is_file():
            return 0
        kept, dropped = [], 0
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                dropped += 1
                continue
            if _covered(record, step, epochs_done):
                kept.append(line)
            else:
                dropped += 1
        if dropped:
            write_text_atomic(self.path, "".join(line + "\n" for line in kept))
        return dropped


def _covered(record: Mapping[str, Any], step: int, epochs_done: int) -> bool:
    if record.get("event") == "validation":
        return int(record.get("epoch", 0)) <= epochs_done
    return int(record.get("step", 0)) <= step
