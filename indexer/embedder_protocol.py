"""What the index layer needs from an embedder, stated as protocols.

The index codes against these shapes rather than importing `retrieval.embed`, so any object
that embeds items the same way (the real network, a test double, a remote service) can feed it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np


class EmbedResultLike(Protocol):
    vectors: np.ndarray  # float32 (n_ok, D), unit rows
    ok: np.ndarray  # int64 positions in the input items that were embedded
    errors: list[tuple[int, str]]  # (position in the input items, message naming the file)


class EmbedderLike(Protocol):
    fingerprint: str
    config: dict[str, Any]
    dim: int

    def embed(self, items: Sequence[Any], progress: bool = False) -> EmbedResultLike: ...
