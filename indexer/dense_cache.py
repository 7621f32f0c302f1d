"""Dense views of the database images, kept beside the index so that `query --rerank` need not
decode and describe every candidate again.

One file, `dense_views.safetensors`, in the index folder: every view's cells concatenated
(`descriptors` float32 [N, D], `points` float32 [N, 2]), `offsets` int64 [n + 1] delimiting each
view's rows, `ids` int64 [n] ascending and `cell_sizes` float64 [n]. float32 and float64 are what
the re-ranker produces, so a view read back equals the one written, bit for bit. The metadata
names the dense and locator checkpoints that made the views: by name, to load them again when
`index add` extends the cache, and by content (dense `weights_sha256`, locator fingerprint), so
views of other models are never mixed in. The file is memory-mapped when read: a query touches
only its candidates' rows. Ids are never reused, so a removed image's view is simply never looked
up again; the next write leaves it out.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from indexer.rerank import describe_all
from retrieval.fileio import atomic_path
from retrieval.rerank.names import SHIPPED_DENSE
from retrieval.rerank.verify import DenseView

if TYPE_CHECKING:
    from retrieval.rerank.reranker import Reranker

LOG = logging.getLogger(__name__)
CACHE_NAME = "dense_views.safetensors"
CACHE_FORMAT = "1"
_ARRAYS = ("ids", "offsets", "descriptors", "points", "cell_sizes")


class DenseCacheError(ValueError):
    """A dense cache file that cannot be read or written; the message names it."""


@dataclass(frozen=True)
class ViewModels:
    """The checkpoints that made a set of views: names to load them again, hashes to match."""

    dense: str  # "dense" (shipped) or an absolute checkpoint folder
    locator: str  # a shipped model name or an absolute checkpoint folder
    dense_sha256: str  # the dense checkpoint's weights_sha256
    locator_fingerprint: str

    def made_same_views(self, other: ViewModels) -> bool:
        return (self.dense_sha256, self.locator_fingerprint) == (other.dense_sha256,
                                                                 other.locator_fingerprint)

    def describe(self) -> str:
        return (f"dense {self.dense} (weights {self.dense_sha256[:12]}), "
                f"locator {self.locator} (fingerprint {self.locator_fingerprint})")


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
    """The cached views of one index folder, read lazily from the memory-mapped file."""

    def __init__(self, path: Path) -> None:
        try:
            self._file = safe_open(str(path), framework="np")
            meta = self._file.metadata() or {}
            if meta.get("format") != CACHE_FORMAT:
                raise DenseCacheError(f"format {meta.get('format')!r}, this program reads "
                                      f"{CACHE_FORMAT}")
            self.models = ViewModels(meta["dense"], meta["locator"], meta["dense_sha256"],
                                     meta["locator_fingerprint"])
            self.ids = self._file.get_tensor("ids")
            self._offsets = self._file.get_tensor("offsets")
            self._cell_sizes = self._file.get_tensor("cell_sizes")
            shapes = {name: self._file.get_slice(name).get_shape() for name in _ARRAYS}
        except (OSError, SafetensorError, KeyError, DenseCacheError) as error:
            raise DenseCacheError(f"{path}: unreadable dense cache ({error})") from error
        rows = shapes["descriptors"][0]
        if not (len(self._offsets) == len(self.ids) + 1 == len(self._cell_sizes) + 1
                and shapes["points"] == [rows, 2] and self._offsets[-1] == rows):
            raise DenseCacheError(f"{path}: inconsistent dense cache (array shapes {shapes})")
        self.path = path

    def __len__(self) -> int:
        return len(self.ids)

    def get(self, image_id: int) -> DenseView | None:
        """The cached view of `image_id`, or None when the cache has none."""
        position = int(np.searchsorted(self.ids, image_id))
        if position == len(self.ids) or self.ids[position] != image_id:
            return None
        start, stop = int(self._offsets[position]), int(self._offsets[position + 1])
        return DenseView(self._file.get_slice("descriptors")[start:stop],
                         self._file.get_slice("points")[start:stop],
                         float(self._cell_sizes[position]))

    def arrays(self) -> dict[str, np.ndarray]:
        """Every array of the file, read into memory (to merge into a new cache)."""
        return {name: self._file.get_tensor(name) for name in _ARRAYS}


def cache_path(directory: str | Path) -> Path:
    return Path(directory) / CACHE_NAME


def open_cache(directory: str | Path) -> DenseViews | None:
    """The index folder's dense cache as it is; None when it has none."""
    path = cache_path(directory)
    return DenseViews(path) if path.exists() else None


def read_cache(directory: str | Path, models: ViewModels) -> DenseViews | None:
    """The cache when `models` made it; else None, with a warning (views are then computed)."""
    try:
        cache = open_cache(directory)
    except DenseCacheError as error:
        LOG.warning("%s; dense views are computed on demand", error)
        return None
    if cache is not None and not cache.models.made_same_views(models):
        LOG.warning("%s: made by %s, not by %s; ignored, dense views are computed on demand",
                    cache.path, cache.models.describe(), models.describe())
        return None
    return cache


def cache_info(directory: str | Path) -> CacheInfo | None:
    cache = open_cache(directory)
    return None if cache is None else CacheInfo(len(cache), cache.path.stat().st_size, cache.models)


def write_cache(directory: str | Path, models: ViewModels, ids: Sequence[int],
                views: Sequence[DenseView], keep: Sequence[int] = ()) -> CacheInfo:
    """Store `views` (view i of image `ids[i]`) as the cache, atomically; the views the cache
    already holds for ids in `keep` are kept too when `models` made them."""
    packed = _pack(np.asarray(ids, dtype=np.int64), views)
    existing = read_cache(directory, models) if len(keep) else None
    if existing is not None:
        old = existing.arrays()
        wanted = np.isin(old["ids"], np.asarray(keep, dtype=np.int64)) & ~np.isin(old["ids"], packed["ids"])
        packed = _concat(_take(old, np.flatnonzero(wanted)), packed)
    if len(np.unique(packed["ids"])) != len(packed["ids"]):
        raise DenseCacheError(f"{cache_path(directory)}: an image id was given two views")
    packed = _take(packed, np.argsort(packed["ids"], kind="stable"))
    meta = {"format": CACHE_FORMAT, "dense": models.dense, "locator": models.locator,
            "dense_sha256": models.dense_sha256, "locator_fingerprint": models.locator_fingerprint}
    path = cache_path(directory)
    with atomic_path(path) as tmp:
        save_file({name: np.ascontiguousarray(packed[name]) for name in _ARRAYS}, str(tmp), metadata=meta)
    return CacheInfo(len(packed["ids"]), path.stat().st_size, models)


def cache_items(directory: str | Path, models: ViewModels, reranker: Reranker, ids: Sequence[int],
                items: Sequence[Any], keep: Sequence[int] = (), progress: bool = False
                ) -> tuple[CacheInfo, list[tuple[int, str]]]:
    """Describe `items` (of images `ids`) and store their views as in `write_cache`; returns
    what the cache holds and (id, message) for each item that could not be described."""
    views, failed = describe_all(reranker, items, progress)
    done = [i for i, view in enumerate(views) if view is not None]
    info = write_cache(directory, models, [ids[i] for i in done], [views[i] for i in done], keep)
    return info, [(int(ids[position]), message) for position, message in failed]


def _pack(ids: np.ndarray, views: Sequence[DenseView]) -> dict[str, np.ndarray]:
    if len(ids) != len(views):
        raise DenseCacheError(f"{len(ids)} ids but {len(views)} dense views")
    if not views:
        return {"ids": ids, "offsets": np.zeros(1, np.int64), "descriptors": np.zeros((0, 0), np.float32),
                "points": np.zeros((0, 2), np.float32), "cell_sizes": np.zeros(0, np.float64)}
    counts = [len(view.descriptors) for view in views]
    return {"ids": ids,
            "offsets": np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            "descriptors": np.concatenate([view.descriptors for view in views]).astype(np.float32),
            "points": np.concatenate([view.points for view in views]).astype(np.float32),
            "cell_sizes": np.array([view.cell_size for view in views], dtype=np.float64)}


def _take(packed: dict[str, np.ndarray], positions: np.ndarray) -> dict[str, np.ndarray]:
    """The views at `positions`, in that order."""
    offsets = packed["offsets"]
    counts = np.diff(offsets)[positions]
    new_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    rows = np.repeat(offsets[:-1][positions] - new_offsets[:-1], counts) + np.arange(new_offsets[-1])
    return {"ids": packed["ids"][positions], "offsets": new_offsets,
            "descriptors": packed["descriptors"][rows], "points": packed["points"][rows],
            "cell_sizes": packed["cell_sizes"][positions]}


def _concat(first: dict[str, np.ndarray], second: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`first`'s views then `second`'s (either may be empty)."""
    if not len(first["ids"]) or not len(second["ids"]):
        return second if not len(first["ids"]) else first
    joined = {name: np.concatenate([first[name], second[name]])
              for name in ("ids", "descriptors", "points", "cell_sizes")}
    joined["offsets"] = np.concatenate([first["offsets"], second["offsets"][1:] + first["offsets"][-1]])
    return joined
