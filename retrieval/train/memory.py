"""Cross-batch memory: the embeddings of recent batches, as negatives for the current one.

A batch of 128 images holds a few dozen instances; the look-alikes that hurt retrieval among
thousands of distractors are mostly elsewhere. Embeddings drift slowly once training settles, so
those of the last few thousand images are usable negatives without another forward pass (the
idea of cross-batch memory, XBM). The memory is read only from `start_step` on, when the
embedding has stopped moving fast.
"""

from __future__ import annotations

from typing import Any

import torch


class CrossBatchMemory:
    """A ring buffer of `size` detached embeddings and their class labels."""

    def __init__(self, size: int, dim: int, device: torch.device, start_step: int = 0) -> None:
        if size < 1:
            raise ValueError(f"memory size must be >= 1, got {size}")
        self.embeddings = torch.zeros(size, dim, device=device)
        self.labels = torch.full((size,), -1, dtype=torch.long, device=device)
        self.filled = 0
        self.next = 0
        self.start_step = start_step

    def contents(self, step: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(embeddings, labels) to mine at `step` (0-based), or None before `start_step` or
        while empty."""
        if step < self.start_step or self.filled == 0:
            return None
        return self.embeddings[:self.filled], self.labels[:self.filled]

    def push(self, embeddings: torch.Tensor, labels: torch.Tensor) -> None:
        """Store a batch, overwriting the oldest entries once full."""
        size = self.embeddings.shape[0]
        embeddings = embeddings.detach().float()[-size:]
        labels = labels.detach().long()[-size:]
        positions = (self.next + torch.arange(len(labels), device=labels.device)) % size
        self.embeddings[positions] = embeddings.to(self.embeddings.device)
        self.labels[positions] = labels.to(self.labels.device)
        self.next = int((self.next + len(labels)) % size)
        self.filled = min(size, self.filled + len(labels))

    def state_dict(self) -> dict[str, Any]:
        return {"embeddings": self.embeddings, "labels": self.labels, "filled": self.filled,
                "next": self.next}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["embeddings"].shape != self.embeddings.shape:
            raise ValueError(f"memory of shape {tuple(state['embeddings'].shape)}, expected "
                             f"{tuple(self.embeddings.shape)}")
        self.embeddings.copy_(state["embeddings"])
        self.labels.copy_(state["labels"])
        self.filled, self.next = int(state["filled"]), int(state["next"])
