"""One part file of the dense cache (see `indexer.rerank.cache`): naming, reading, writing.

A part is a self-contained safetensors file, so each one can be written atomically on its own
and memory-mapped on its own; ordering parts by number tells readers which view is newest.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from retrieval.fileio import atomic_path
from retrieval.rerank.verify import DenseView

LEGACY_NAME = "dense_views.safetensors"  # the single file of earlier versions: the oldest part
_PART_NAME = re.compile(r"dense_views\.(\d{5,})\.safetensors")
CACHE_FORMAT = "1"
_ARRAYS = ("ids", "offsets", "descriptors", "points", "cell_sizes")
MIRRORS = "mirrors"  # optional float32 [n, E]: each view's mirror vector, where every view has one


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


def part_number(path: Path) -> int:
    """The part's place in write order; the legacy file comes before every numbered part."""
    match = _PART_NAME.fullmatch(path.name)
    return -1 if match is None else int(match.group(1))


def cache_parts(directory: str | Path) -> list[Path]:
    """The part files of the index folder's dense cache, oldest first."""
    folder = Path(directory)
    parts = sorted((path for path in folder.glob("dense_views.*.safetensors")
                    if _PART_NAME.fullmatch(path.name)), key=part_number)
    legacy = folder / LEGACY_NAME
    return [legacy, *parts] if legacy.is_file() else parts


def is_part_name(name: str) -> bool:
    """Whether `name` is the name of a part file (the legacy single file included)."""
    return name == LEGACY_NAME or _PART_NAME.fullmatch(name) is not None


def part_path(directory: str | Path, number: int) -> Path:
    return Path(directory) / f"dense_views.{number:05d}.safetensors"


class Part:
    """One memory-mapped part: ids, offsets and cell sizes read, the cells only when asked."""

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
            self._mirrors = self._file.get_tensor(MIRRORS) if MIRRORS in set(self._file.keys()) else None
            shapes = {name: self._file.get_slice(name).get_shape() for name in _ARRAYS}
        except (OSError, SafetensorError, KeyError, DenseCacheError) as error:
            raise DenseCacheError(f"{path}: unreadable dense cache ({error})") from error
        rows = shapes["descriptors"][0]
        if not (len(self._offsets) == len(self.ids) + 1 == len(self._cell_sizes) + 1
                and shapes["points"] == [rows, 2] and self._offsets[-1] == rows
                and (self._mirrors is None or (self._mirrors.ndim == 2
                                               and len(self._mirrors) == len(self.ids)))):
            mirrors = None if self._mirrors is None else list(self._mirrors.shape)
            raise DenseCacheError(f"{path}: inconsistent dense cache (array shapes {shapes}, "
                                  f"mirrors {mirrors})")
        self.path = path

    @property
    def has_mirrors(self) -> bool:
        """Whether its views carry mirror vectors (re-ranking with a mirror share needs them)."""
        return self._mirrors is not None

    def __len__(self) -> int:
        return len(self.ids)

    def view(self, position: int) -> DenseView:
        """The view at `position` (of `ids`), read from the mapped file."""
        start, stop = int(self._offsets[position]), int(self._offsets[position + 1])
        return DenseView(self._file.get_slice("descriptors")[start:stop],
                         self._file.get_slice("points")[start:stop],
                         float(self._cell_sizes[position]),
                         None if self._mirrors is None else self._mirrors[position])


def pack(ids: np.ndarray, views: Sequence[DenseView]) -> dict[str, np.ndarray]:
    """The arrays of a part holding `views` (of images `ids`, ascending); mirror vectors only
    where every view has one (a view without is described again when they are needed)."""
    if not views:
        return {"ids": ids, "offsets": np.zeros(1, np.int64), "descriptors": np.zeros((0, 0), np.float32),
                "points": np.zeros((0, 2), np.float32), "cell_sizes": np.zeros(0, np.float64)}
    counts = [len(view.descriptors) for view in views]
    arrays = {"ids": ids,
              "offsets": np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
              "descriptors": np.concatenate([view.descriptors for view in views]).astype(np.float32),
              "points": np.concatenate([view.points for view in views]).astype(np.float32),
              "cell_sizes": np.array([view.cell_size for view in views], dtype=np.float64)}
    if all(view.mirror is not None for view in views):
        arrays[MIRRORS] = np.stack([view.mirror for view in views]).astype(np.float32)
    return arrays


def write_part(path: Path, models: ViewModels, arrays: dict[str, np.ndarray]) -> None:
    """Write one part atomically: an interrupted write leaves no half part behind."""
    meta = {"format": CACHE_FORMAT, "dense": models.dense, "locator": models.locator,
            "dense_sha256": models.dense_sha256, "locator_fingerprint": models.locator_fingerprint}
    with atomic_path(path) as tmp:
        names = [*_ARRAYS, *([MIRRORS] if MIRRORS in arrays else [])]
        save_file({name: np.ascontiguousarray(arrays[name]) for name in names}, str(tmp), metadata=meta)
