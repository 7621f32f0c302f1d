"""A fake embedder in a module that imports neither torch nor FAISS, so that the Ray workers of
the cluster tests, which import it, start fast. `fakes` re-exports it.

`FakeEmbedder` follows the `retrieval.embed` contract without a network: each item maps to a
unit vector seeded by its content, so the same image always gets the same vector and a copy of
a database image finds the original at rank 1.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class SimulatedCrash(RuntimeError):
    """Stands for a process killed in the middle of a long job."""


@dataclass
class FakeEmbedResult:
    vectors: np.ndarray
    ok: np.ndarray
    errors: list[tuple[int, str]]


class FakeEmbedder:
    """Deterministic embedder: PNG files by their bytes, dict rows by their JSON."""

    def __init__(self, dim: int = 16, fingerprint: str = "fake-model-v1",
                 crash_on_call: int | None = None) -> None:
        self.dim = dim
        self.fingerprint = fingerprint
        self.config = {"name": "fake", "dim": dim}
        self.crash_on_call = crash_on_call
        self.calls = 0
        self.items_embedded = 0

    def embed(self, items: Sequence[Any], progress: bool = False) -> FakeEmbedResult:
        self.calls += 1
        if self.calls == self.crash_on_call:
            raise SimulatedCrash(f"simulated crash on call {self.calls}")
        vectors, ok, errors = [], [], []
        for position, item in enumerate(items):
            try:
                content = self._content(item)
            except (OSError, ValueError) as error:
                errors.append((position, f"{item}: {error}"))
                continue
            vectors.append(self.vector_of(content))
            ok.append(position)
        self.items_embedded += len(ok)
        stacked = np.stack(vectors) if vectors else np.zeros((0, self.dim), np.float32)
        return FakeEmbedResult(stacked, np.array(ok, dtype=np.int64), errors)

    def vector_of(self, content: bytes) -> np.ndarray:
        digest = hashlib.sha256(self.fingerprint.encode() + content).digest()
        seed = int.from_bytes(digest[:8], "big")
        vector = np.random.default_rng(seed).standard_normal(self.dim)
        return (vector / np.linalg.norm(vector)).astype(np.float32)

    def vectors_of(self, items: Sequence[Any]) -> np.ndarray:
        return np.stack([self.vector_of(self._content(item)) for item in items])

    @staticmethod
    def _content(item: Any) -> bytes:
        if isinstance(item, dict):
            return json.dumps(item, sort_keys=True).encode()
        data = Path(item).read_bytes()
        if not data.startswith(PNG_MAGIC):
            raise ValueError("not a PNG image")
        return data




class FakeRemote:
    """A picklable factory of the fake model's worker, as a remote engine wants
    (`RemoteEmbedder` for the real network); `load()` gives the model itself."""

    def load(self) -> FakeEmbedder:
        return FakeEmbedder()

    def __call__(self):
        return self.load().embed


class DiesOnce(FakeRemote):
    """Its worker kills its own process on the first job (after leaving `marker`): a worker
    lost mid-job. Later workers, once the marker exists, embed as FakeEmbedder does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __call__(self):
        embed = self.load().embed

        def work(items: Sequence[Any]) -> FakeEmbedResult:
            if not self.marker.exists():
                self.marker.touch()
                os._exit(1)
            return embed(items)

        return work


class CannotLoad(FakeRemote):
    """A worker factory that fails as a checkpoint missing on a worker's host would."""

    def load(self) -> FakeEmbedder:
        raise FileNotFoundError("no checkpoint at /models/net on this host")


class NodeOfWorker:
    """A worker factory whose worker answers every job with the Ray node it runs on: where the
    engine placed it."""

    def __call__(self):
        import ray  # only ever called inside a Ray worker

        node = ray.get_runtime_context().get_node_id()
        return lambda job: node
