"""Which embedding model an index is used with: the name recorded when it is built, the model
its queries must use, and loading it (torch is imported only then: it is slow to import).

Shared by the commands and the server, so both load the model an index names the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from indexer.embedder_protocol import EmbedderLike
    from indexer.index import RetrievalIndex

DEFAULT_MODEL = "blur-aware"


def load_embedder(model: str, device: str, batch_size: int) -> EmbedderLike:
    """The real network, imported only when a command runs (torch is slow to import)."""
    from retrieval.embed import load_embedder as load

    return load(model, device=device, batch_size=batch_size)


def model_of(index: RetrievalIndex) -> str:
    """The model named in the index manifest, which queries must use."""
    return index.manifest.model.get("name") or DEFAULT_MODEL


def recorded_model(model: str) -> str:
    """The name to record for `model` in an index: a checkpoint folder by its absolute path (so
    the index can be queried from any working directory), a shipped name as the name."""
    path = Path(model)
    return str(path.resolve()) if path.is_dir() else model
