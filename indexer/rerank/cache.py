"""Dense views of the database images, kept beside the index so that `query --rerank` need not
decode and describe every candidate again.

The cache is a series of part files in the index folder, `dense_views.NNNNN.safetensors`, numbered
in write order (`dense_views.safetensors`, the single file of earlier versions, reads as the oldest
part). Each part is one safetensors file of up to PART_VIEWS views: every view's cells
concatenated (`descriptors` float32 [N, D], `points` float32 [N, 2]), `offsets` int64 [n + 1]
delimiting each view's rows, `ids` int64 [n] ascending, `cell_sizes` float64 [n] and, where every
view has one, `mirrors` float32 [n, E] (the locator's vector of the mirrored image; views
without one are described again when the re-ranking parameters use it). Parts, not one
file, because a view costs ~27 KB: a write holds one part in memory, not the whole cache, and an
interrupted `index build --dense` or `index dense` keeps every part it finished, so the next
`index dense` describes only the rest. float32 and float64 are what the re-ranker produces, so a
view read back equals the one written, bit for bit. Each part's metadata names the dense and
locator checkpoints that made its views: by name, to load them again when `index add` extends the
cache, and by content (dense `weights_sha256`, locator fingerprint), so views of other models are
never mixed in. Where parts disagree (a write with other checkpoints was interrupted), the newest
part's checkpoints win and the other parts are ignored; where two parts hold an id, the newer
view wins. A write adds its parts first and then brings the old ones in line one at a time
(deleted, or rewritten without the views it drops), so the cache is readable at every step. Parts
are memory-mapped when read: a query touches only its candidates' rows. Ids are never reused, so
a removed image's view is simply never looked up again; the next write leaves it out.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from indexer.rerank.parts import (
    DenseCacheError,
    Part,
    ViewModels,
    cache_parts,
    is_part_name,
    pack,
    part_number,
    part_path,
    write_part,
)
from retrieval.fileio import remove_temporaries
from retrieval.rerank.describe import DESCRIBE_CHUNK, describe_all
from retrieval.rerank.names import SHIPPED_DENSE
from retrieval.rerank.verify import DenseView

if TYPE_CHECKING:
    from retrieval.rerank.reranker import Reranker

LOG = logging.getLogger(__name__)
PART_VIEWS = 4096  # views per part (~110 MB): what a write holds in memory, what an interruption loses
__all__ = ["CacheInfo", "DenseCacheError", "DenseViews", "ViewModels", "cache_info", "cache_items",
           "cache_parts", "open_cache", "read_cache", "size_summary", "view_models", "write_cache"]


def view_models(dense: str, locator: str) -> ViewModels:
    """The identity of loadable checkpoints `dense` and `locator` (as `load_reranker` takes them)."""
    from retrieval.model.checkpoint import model_fingerprint, read_checkpoint_config, resolve_checkpoint
    from retrieval.rerank.dense_checkpoint import CONFIG_NAME, resolve_dense

    dense_config = json.loads((resolve_dense(dense) / CONFIG_NAME).read_text(encoding="utf-8"))
    locator_dir = resolve_checkpoint(locator)
    return ViewModels(
        dense=dense if dense == SHIPPED_DENSE else str(Path(dense).resolve()),
        locator=str(locator_dir.resolve()) if Path(locator).is_dir() else locator,
        dense_sha256=str(dense_config["weights_sha256"]),
        locator_fingerprint=model_fingerprint(read_checkpoint_config(locator_dir)),
    )


@dataclass(frozen=True)
class CacheInfo:
    views: int
    bytes: int
    models: ViewModels

    def summary(self) -> str:
        return size_summary(self.views, self.bytes)


def size_summary(views: int, size: int) -> str:
    """What a cache costs, as `index build` and `index info` print it."""
    return f"{views} views, {size / 1e6:.1f} MB"


class DenseViews:
    """The cached views of one index folder, read lazily from its memory-mapped parts: of each id,
    the newest part's view, among the parts made by the newest part's checkpoints."""

    def __init__(self, paths: Sequence[Path]) -> None:
        parts = [Part(path) for path in paths]  # an unreadable part raises, naming it
        self.paths = list(paths)
        self.directory = self.paths[-1].parent
        self.models = parts[-1].models
        self._parts = [part for part in parts if part.models.made_same_views(self.models)]
        self.ids, self._source, self._position = _newest(self._parts)

    def __len__(self) -> int:
        return len(self.ids)

    def get(self, image_id: int) -> DenseView | None:
        """The cached view of `image_id`, or None when the cache has none."""
        at = int(np.searchsorted(self.ids, image_id))
        if at == len(self.ids) or self.ids[at] != image_id:
            return None
        return self._parts[self._source[at]].view(int(self._position[at]))

    def mirrored(self) -> np.ndarray:
        """bool per id of `ids`: whether its view carries the mirror vector."""
        return np.array([self._parts[part].has_mirrors for part in self._source], dtype=bool)

    def arrays(self) -> dict[str, np.ndarray]:
        """Every view, in id order, as the arrays of one part (in memory: to compare caches)."""
        return pack(self.ids, [self._parts[part].view(int(position))
                               for part, position in zip(self._source, self._position)])


def open_cache(directory: str | Path) -> DenseViews | None:
    """The index folder's dense cache as it is; None when it has none."""
    paths = cache_parts(directory)
    return DenseViews(paths) if paths else None


def read_cache(directory: str | Path, models: ViewModels) -> DenseViews | None:
    """The cache when `models` made it; else None, with a warning (views are then computed)."""
    try:
        cache = open_cache(directory)
    except DenseCacheError as error:
        LOG.warning("%s; dense views are computed on demand", error)
        return None
    if cache is not None and not cache.models.made_same_views(models):
        LOG.warning("%s: dense cache made by %s, not by %s; ignored, dense views are computed on "
                    "demand", cache.directory, cache.models.describe(), models.describe())
        return None
    return cache


def cache_info(directory: str | Path) -> CacheInfo | None:
    """What `index info` reports: the views readers see, and the disk all the part files take."""
    cache = open_cache(directory)
    return None if cache is None else CacheInfo(len(cache), sum(path.stat().st_size for path in cache.paths),
                                                cache.models)


def write_cache(directory: str | Path, models: ViewModels, ids: Sequence[int],
                views: Sequence[DenseView], keep: Sequence[int] = ()) -> CacheInfo:
    """Store `views` (view i of image `ids[i]`) part by part; afterwards the cache holds them and
    the views it already held for ids in `keep` when `models` made them."""
    ids_array = _checked_ids(directory, ids, len(views))
    write = _CacheWrite(directory, models)
    for start in range(0, len(views), PART_VIEWS):
        write.add(ids_array[start:start + PART_VIEWS], views[start:start + PART_VIEWS])
    return write.finish(keep)


def cache_items(directory: str | Path, models: ViewModels, reranker: Reranker, ids: Sequence[int],
                items: Sequence[Any], keep: Sequence[int] = (), progress: bool = False
                ) -> tuple[CacheInfo, list[tuple[int, str]]]:
    """Describe `items` (of images `ids`) and store their views as in `write_cache`, each part as
    soon as it is described; returns what the cache holds and (id, message) for each item that
    could not be described."""
    ids_array = _checked_ids(directory, ids, len(items))
    write = _CacheWrite(directory, models)
    failed: list[tuple[int, str]] = []
    with tqdm(total=len(items), desc="dense views", unit="image",
              disable=not progress or len(items) <= DESCRIBE_CHUNK) as bar:
        for start in range(0, len(items), PART_VIEWS):
            views, errors = describe_all(reranker, items[start:start + PART_VIEWS])
            done = [i for i, view in enumerate(views) if view is not None]
            write.add(ids_array[start:][done], [views[i] for i in done])
            failed += [(int(ids_array[start + position]), message) for position, message in errors]
            bar.update(len(views))
    return write.finish(keep), failed


class _CacheWrite:
    """One write: new parts go after the parts already there, which `finish` then brings in line."""

    def __init__(self, directory: str | Path, models: ViewModels) -> None:
        self.directory = Path(directory)
        self.models = models
        # A cache has one writer at a time (part numbers would collide otherwise): the
        # temporaries of part writes found now were left by a write that was killed.
        for path in remove_temporaries(directory, is_part_name):
            LOG.info("%s: removed, left by a dense cache write that was interrupted", path)
        self.old = cache_parts(directory)
        self.number = part_number(self.old[-1]) + 1 if self.old else 0
        self.written = [np.zeros(0, np.int64)]

    def add(self, ids: np.ndarray, views: Sequence[DenseView]) -> None:
        if len(ids):
            order = np.argsort(ids, kind="stable")
            self._write(pack(ids[order], [views[i] for i in order]))
            self.written.append(ids)

    def _write(self, arrays: dict[str, np.ndarray]) -> None:
        write_part(part_path(self.directory, self.number), self.models, arrays)
        self.number += 1

    def finish(self, keep: Sequence[int]) -> CacheInfo:
        """Delete the old parts of other checkpoints (or unreadable) and rewrite, a part at a time,
        those holding views not to keep: ids outside `keep`, ids given new views, older duplicates.
        Afterwards no id is in two parts; the cache's size and checkpoints are returned."""
        parts = []
        for path in self.old:
            try:
                part = Part(path)
            except DenseCacheError as error:
                LOG.warning("%s; removed", error)
                path.unlink()
                continue
            if part.models.made_same_views(self.models):
                parts.append(part)
            else:
                path.unlink()
        ids, source, position = _newest(parts)
        wanted = (_within(ids, np.unique(np.asarray(keep, dtype=np.int64)))
                  & ~_within(ids, np.unique(np.concatenate(self.written))))
        for number, part in enumerate(parts):
            mine = np.sort(position[wanted & (source == number)])
            if len(part) and len(mine) == len(part):  # every view stays: the part is left as it is
                continue
            for start in range(0, len(mine), PART_VIEWS):  # at the top: no other part holds these ids
                chunk = mine[start:start + PART_VIEWS]
                self._write(pack(part.ids[chunk], [part.view(int(at)) for at in chunk]))
            part.path.unlink()
        if not cache_parts(self.directory):  # nothing described, nothing kept: an empty cache
            self._write(pack(np.zeros(0, np.int64), []))
        info = cache_info(self.directory)
        assert info is not None
        return info


def _checked_ids(directory: str | Path, ids: Sequence[int], count: int) -> np.ndarray:
    checked = np.asarray(ids, dtype=np.int64).reshape(-1)
    if len(checked) != count:
        raise DenseCacheError(f"{len(checked)} ids but {count} dense views")
    if len(np.unique(checked)) != len(checked):
        raise DenseCacheError(f"{directory}: an image id was given two views")
    return checked


def _newest(parts: Sequence[Part]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each id the parts hold, ascending, with the part (index) and position of its newest view."""
    ids = np.concatenate([np.zeros(0, np.int64), *(part.ids for part in parts)])
    source = np.repeat(np.arange(len(parts)), np.array([len(part) for part in parts], dtype=np.int64))
    position = np.concatenate([np.zeros(0, np.int64), *(np.arange(len(part)) for part in parts)])
    order = np.lexsort((-source, ids))  # by id, the newest part first
    ids, source, position = ids[order], source[order], position[order]
    first = np.ones(len(ids), dtype=bool)
    first[1:] = ids[1:] != ids[:-1]
    return ids[first], source[first], position[first]


def _within(values: np.ndarray, members: np.ndarray) -> np.ndarray:
    """Whether each value is in `members` (sorted, unique), without sorting them again per part."""
    if not len(members):
        return np.zeros(len(values), dtype=bool)
    at = np.minimum(np.searchsorted(members, values), len(members) - 1)
    return members[at] == values
