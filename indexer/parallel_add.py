"""Fill a trained IVF index in parts on an engine's workers, then merge the parts.

Adding is a slow stage of a large build after embedding (the IVF assignment and the PQ encoding
of every vector: 423 s of the 956 s that the 10,000,000-vector auto index took here). Each
worker gets the trained, empty index once and encodes its part of the vectors into a copy; the
driver appends the parts' inverted lists, refine codes and ids in part order, so the merged index
is the one a single `add_with_ids` over all vectors builds (same lists in the same order, same
search results).

FAISS's own `merge_from` does not cover these layouts: `IndexRefine` has none, and under
`IndexIDMap2` the merged index returned other vectors' ids than one add in a check with FAISS 1.15
(with add_id 0 or the first part's count alike), so the merge here works on the pieces it knows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import faiss
import numpy as np
from tqdm.auto import tqdm

from indexer.cluster.engine import Engine

PART_SIZE = 262_144  # vectors a worker encodes per job


class MergeLayoutError(ValueError):
    """The index is not a layout whose parts this module can merge."""


@dataclass(frozen=True)
class _Layout:
    """The pieces of one index that a merge appends to."""

    id_map: faiss.IndexIDMap2 | None
    refine: faiss.IndexRefine | None
    ivf: faiss.IndexIVF


def _layout(index: faiss.Index) -> _Layout:
    """[IDMap2,] IVF... [, Refine] without transforms: the layouts `indexer.factory` builds."""
    node = faiss.downcast_index(index)
    id_map = node if isinstance(node, faiss.IndexIDMap2) else None
    if id_map is not None:
        node = faiss.downcast_index(id_map.index)
    refine = node if isinstance(node, faiss.IndexRefine) else None
    if refine is not None:
        node = faiss.downcast_index(refine.base_index)
    if not isinstance(node, faiss.IndexIVF):
        raise MergeLayoutError(f"cannot merge parts of a {type(node).__name__}: an IVF index "
                               "(under IDMap2 and Refine at most) is needed")
    return _Layout(id_map, refine, node)


def can_add_in_parts(index: faiss.Index) -> bool:
    """Whether `add_in_parts` can fill `index` (an IVF layout, under IDMap2 and Refine at most)."""
    try:
        _layout(index)
    except MergeLayoutError:
        return False
    return True


class PartEncoder:
    """Worker factory: the trained empty index, serialised, turned into an encoder of parts.

    Picklable, so remote engines can ship it; each worker deserialises the index once."""

    def __init__(self, empty_index: faiss.Index) -> None:
        if empty_index.ntotal:
            raise ValueError(f"the index to copy must be empty, it holds {empty_index.ntotal}")
        self.blank = faiss.serialize_index(empty_index)

    def __call__(self) -> Callable[[tuple[np.ndarray, np.ndarray]], np.ndarray]:
        index = faiss.deserialize_index(self.blank)

        def encode(part: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
            """The part's vectors in a copy of the index, serialised; the copy is emptied
            again (its training kept) for the worker's next part."""
            vectors, ids = part
            index.add_with_ids(vectors, ids)
            encoded = faiss.serialize_index(index)
            index.reset()
            return encoded

        return encode


def merge_part(into: faiss.Index, part: faiss.Index) -> None:
    """Append `part`'s vectors to `into` (same trained layout), leaving `part` empty."""
    _append_part(into, part)
    _rebuild_id_lookup(into)


def _append_part(into: faiss.Index, part: faiss.Index) -> None:
    """`merge_part` without rebuilding IDMap2's id -> position lookup, which costs one hash
    insert per vector of the whole index: `add_in_parts` rebuilds it once, after the last part."""
    target, source = _layout(into), _layout(part)
    if (target.id_map is None) != (source.id_map is None) or (
            (target.refine is None) != (source.refine is None)):
        raise MergeLayoutError("the part's layout differs from the index's")
    before = into.ntotal
    # An id-mapped IVF stores positions 0..n-1; the part's positions follow the index's.
    shift = before if target.id_map is not None else 0
    target.ivf.merge_from(source.ivf, shift)
    if target.refine is not None:
        target.refine.refine_index.merge_from(source.refine.refine_index, 0)
        target.refine.ntotal = target.ivf.ntotal
        source.refine.ntotal = 0
    if target.id_map is not None:
        ids, added = target.id_map.id_map, faiss.vector_to_array(source.id_map.id_map)
        ids.resize(before + len(added))  # appended in place: no copy of the ids already there
        faiss.rev_swig_ptr(ids.data(), ids.size())[before:] = added
        target.id_map.ntotal = target.ivf.ntotal
        source.id_map.id_map.clear()
        source.id_map.ntotal = 0


def _rebuild_id_lookup(index: faiss.Index) -> None:
    id_map = _layout(index).id_map
    if id_map is not None:
        id_map.construct_rev_map()


def add_in_parts(index: faiss.Index, vectors: np.ndarray, ids: np.ndarray, engine: Engine,
                 part_size: int = PART_SIZE, progress: bool = False) -> faiss.Index:
    """`index` (trained, empty) filled with `vectors` (with `ids`): encoded in parts of
    `part_size` on `engine`'s workers and merged in order, the same index as one `add_with_ids`.

    Returns the filled index, which is the first part's object: a deserialised index may have
    other classes than the one `index_factory` made (`IndexFlatIP` for `IndexFlat` with inner
    product), and FAISS merges only parts of one class."""
    if index.ntotal:
        raise ValueError(f"the index must be empty, it holds {index.ntotal} vectors")
    if part_size < 1:
        raise ValueError(f"part_size must be >= 1, got {part_size}")
    jobs: Sequence[tuple[np.ndarray, np.ndarray]] = [
        (vectors[start:start + part_size], ids[start:start + part_size])
        for start in range(0, len(vectors), part_size)]
    encoded: dict[int, np.ndarray] = {}
    filled, merged = index, 0
    with tqdm(total=len(vectors), unit="vec", desc="indexing in parts", disable=not progress,
              dynamic_ncols=True) as bar:
        for position, data in engine.map_unordered(PartEncoder(index), jobs):
            encoded[position] = data
            while merged in encoded:  # merge in part order, as soon as the next part is in
                part = faiss.deserialize_index(encoded.pop(merged))
                bar.update(part.ntotal)
                if merged == 0:
                    filled = part
                else:
                    _append_part(filled, part)
                merged += 1
    _rebuild_id_lookup(filled)
    return filled
