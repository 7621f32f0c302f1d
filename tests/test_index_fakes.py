"""Test doubles shared by the index, image and logging tests (this module holds no tests of its own).

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
import pyarrow as pa
import pytest
from PIL import Image

from indexer.sources import Source

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


def write_pngs(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """`count` distinct 8x8 noise PNGs, split between two sub-folders to exercise recursion."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        path = folder / ("a" if i % 2 else "b") / f"img-{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def virtual_source(count: int, start: int = 0) -> Source:
    """Rows without files (like simulator distractors), with a label column."""
    numbers = list(range(start, start + count))
    return Source(
        items=[{"row": n} for n in numbers],
        metadata=pa.table({"path": [f"virtual/{n}" for n in numbers],
                           "label": [n % 7 for n in numbers]}),
        origin="<virtual rows>",
    )


def random_unit_vectors(count: int, dim: int, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((count, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def refuse_listing(monkeypatch: pytest.MonkeyPatch, locked: Path) -> None:
    """Make `os.scandir` of `locked` fail as a folder without read permission does (even as root)."""
    real_scandir = os.scandir

    def refusing_scandir(path: Any) -> Any:
        if not isinstance(path, int) and Path(path) == locked:  # shutil.rmtree lists by descriptor
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", refusing_scandir)
