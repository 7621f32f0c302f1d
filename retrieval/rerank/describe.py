"""Dense views of many items, chunk by chunk: what every caller of the re-ranker does first
(the index's dense cache, `query --rerank`, `bench map --rerank`, the parameter tuning).

Plain numpy and tqdm: the re-ranker passed in brings torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

if TYPE_CHECKING:
    from retrieval.rerank.reranker import Reranker
    from retrieval.rerank.verify import DenseView

DESCRIBE_CHUNK = 256  # items decoded at once: bounds the pixels held in memory


def describe_all(reranker: Reranker, items: Sequence[Any], progress: bool = False
                 ) -> tuple[list[DenseView | None], list[tuple[int, str]]]:
    """Dense views of `items` in order, chunk by chunk; None (and a message) where one failed.

    A chunk whose description raises as a whole (the locator or the dense network failing)
    costs its own items, not the run.
    """
    views: list[DenseView | None] = []
    errors: list[tuple[int, str]] = []
    starts = range(0, len(items), DESCRIBE_CHUNK)
    for start in tqdm(starts, desc="dense views", unit="chunk", disable=not progress or len(starts) < 2):
        chunk = list(items[start:start + DESCRIBE_CHUNK])
        try:
            described, failed = reranker.describe_items(chunk)
        except (RuntimeError, ValueError) as error:
            described = [None] * len(chunk)
            failed = [(i, f"dense description failed ({type(error).__name__}: {error})")
                      for i in range(len(chunk))]
        views += described
        errors += [(start + position, message) for position, message in failed]
    return views, errors
