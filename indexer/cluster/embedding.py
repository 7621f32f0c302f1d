"""A model as a worker factory: what a remote engine pickles instead of the loaded network."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

from indexer.cluster.engine import EngineError, Worker

if TYPE_CHECKING:
    from indexer.embedder_protocol import EmbedderLike


@dataclass(frozen=True)
class RemoteEmbedder:
    """Loads checkpoint `model` (a shipped name or a folder every worker can read) in a worker
    process; its worker embeds one block of items. `fingerprint` is the driver's copy's: a worker
    that loads other weights (another checkpoint under the same path on another host) refuses to
    embed, so an index never mixes two models' vectors."""

    model: str
    fingerprint: str
    device: str = "auto"
    batch_size: int = 64

    def load(self) -> EmbedderLike:
        from retrieval.embed import load_embedder

        # No loader processes inside a worker: the engine already runs one worker per core.
        embedder = load_embedder(self.model, device=self.device, batch_size=self.batch_size,
                                 workers=0)
        if embedder.fingerprint != self.fingerprint:
            raise EngineError(
                f"{self.model} on {socket.gethostname()} is model {embedder.fingerprint}, "
                f"not {self.fingerprint} as on the driver; give every host the same checkpoint")
        return embedder

    def __call__(self) -> Worker:
        return self.load().embed
