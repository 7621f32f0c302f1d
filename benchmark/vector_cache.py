"""Embed the benchmark items once per method into resumable on-disk matrices.

Loading is the costly part for virtual rows (each is rendered) and files (each is decoded), so
every batch of items is loaded once and handed, as pixels, to every method that takes the same
input size; loader processes prepare the next batch while the networks run. An embedder that
declares no `image_size` (a remote service, a test double) gets the items themselves.

Vectors go to `<name>-<fingerprint>.npy` (memory-mapped, float32, one row per item, NaN rows for
items that failed), and a JSON state next to it says how many items are done (and, after a run
on an engine that finishes batches out of order, which later batches are done too); a run that
stops resumes there. The state is written only after the vectors it covers are flushed, and
names the items it was made for, so vectors of another item list are never reused.

On a remote engine (Ray), each worker loads the methods once and each job loads one batch and
embeds it with all of them, as this process would.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from indexer.cluster.embedding import RemoteEmbedder
from indexer.cluster.engine import Engine, Worker
from indexer.embedder_protocol import EmbedderLike
from retrieval.embed import PixelBatches, decode_threads, default_workers, pixel_loader
from retrieval.fileio import write_json_atomic

LOG = logging.getLogger(__name__)

STREAM_BATCH = 256  # items loaded together and embedded by every method
SAVE_EVERY_S = 60.0


def safe_name(name: str) -> str:
    """A method name fit for a file name (methods may be named by checkpoint paths)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


class VectorCacheError(ValueError):
    """A cached vector file that cannot be used; the message names the file."""


class VectorFile:
    """One method's vectors for the item list, with the count of items already embedded."""

    def __init__(self, directory: Path, name: str, embedder: EmbedderLike, count: int,
                 items_key: str) -> None:
        stem = f"{safe_name(name)}-{embedder.fingerprint}"
        self.path = directory / f"{stem}.npy"
        self.state_path = directory / f"{stem}.json"
        self.key = {"items": items_key, "count": count, "dim": int(embedder.dim),
                    "fingerprint": embedder.fingerprint}
        state = self._read_state()
        if state is not None and state.get("key") == self.key and self.path.is_file():
            self.vectors = self._open_existing(count, int(embedder.dim))
            self.done = int(state["done"])
            self.batches = {int(number) for number in state.get("batches", [])}
            self.errors = [(int(i), str(m)) for i, m in state["errors"]]
        else:
            directory.mkdir(parents=True, exist_ok=True)
            self.vectors = np.lib.format.open_memmap(self.path, mode="w+", dtype=np.float32,
                                                     shape=(count, int(embedder.dim)))
            self.done, self.batches, self.errors = 0, set(), []

    def _read_state(self) -> dict | None:
        if not self.state_path.is_file():
            return None
        try:
            return json.loads(self.state_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
            raise VectorCacheError(f"{self.state_path}: unreadable state ({error}); "
                                   "delete it to embed again") from error

    def _open_existing(self, count: int, dim: int) -> np.memmap:
        try:
            vectors = np.load(self.path, mmap_mode="r+")
        except (OSError, ValueError) as error:
            raise VectorCacheError(f"{self.path}: unreadable vectors ({error}); "
                                   "delete it to embed again") from error
        if vectors.shape != (count, dim) or vectors.dtype != np.float32:
            raise VectorCacheError(f"{self.path}: holds {vectors.dtype} {vectors.shape}, "
                                   f"expected float32 ({count}, {dim})")
        return vectors

    def store(self, positions: np.ndarray, result: Any, failures: list[tuple[int, str]]) -> None:
        """Write vectors of `positions[result.ok]`; failed items become NaN rows."""
        ok = positions[np.asarray(result.ok, dtype=np.int64)]
        self.vectors[ok] = result.vectors
        failed = failures + [(int(positions[i]), message) for i, message in result.errors]
        for position, _ in failed:
            self.vectors[position] = np.nan
        self.errors.extend(failed)

    def rewind(self, done: int) -> None:
        """Forget what was recorded past `done`: those items are about to be embedded again."""
        self.done = min(self.done, done)
        self.batches = set()
        self.errors = [error for error in self.errors if error[0] < done]

    def finished_batches(self, count: int) -> set[int]:
        """Numbers of the STREAM_BATCH-item batches (of `count` items) whose vectors are saved."""
        return {number for number in range(_batch_count(count))
                if min((number + 1) * STREAM_BATCH, count) <= self.done} | self.batches

    def keep_batches(self, finished: set[int]) -> None:
        """Forget what was recorded outside the `finished` batches: they are embedded again."""
        self.errors = [error for error in self.errors if error[0] // STREAM_BATCH in finished]

    def save(self, done: int, batches: set[int] | None = None) -> None:
        """Vectors flushed, then the state: items before `done` and the later `batches` are done."""
        self.vectors.flush()
        self.done = done
        self.batches = set(batches or ()) - set(range(_batch_count(done)))
        write_json_atomic(self.state_path, {"key": self.key, "done": done,
                                            "batches": sorted(self.batches),
                                            "errors": self.errors})


def _input_size(embedder: EmbedderLike) -> tuple[int, int] | None:
    size = getattr(embedder, "image_size", None)
    return None if size is None else (int(size[0]), int(size[1]))


def _batch_count(count: int) -> int:
    return -(-count // STREAM_BATCH)


def _batch_ranges(count: int) -> list[range]:
    return [range(start, min(start + STREAM_BATCH, count)) for start in range(0, count, STREAM_BATCH)]


def _loaded_batches(items: Sequence[Any], size: tuple[int, int] | None, first: int,
                    workers: int, render_device: str
                    ) -> Iterator[tuple[np.ndarray, list[Any], list[tuple[int, str]]]]:
    """(item positions, what to embed, load failures) per batch, from batch `first` on."""
    batches = _batch_ranges(len(items))
    if size is None:
        for batch in batches[first:]:
            yield np.arange(batch.start, batch.stop), [items[i] for i in batch], []
        return
    dataset = PixelBatches(items, batches, size, render_device, decode_threads(workers))
    loader = pixel_loader(dataset, workers if len(batches) - first > 1 else 0,
                          order=range(first, len(batches)))
    for loaded in loader:
        pixels = loaded["pixels"].numpy()
        errors = [(int(i), str(message)) for i, message in loaded["errors"]]
        yield loaded["ok"].numpy(), list(pixels), errors


def embed_items(items: Sequence[Any], embedders: Mapping[str, EmbedderLike], directory: Path,
                items_key: str, progress: bool = True, workers: int | None = None,
                engine: Engine | None = None,
                remotes: Mapping[str, RemoteEmbedder] | None = None) -> dict[str, VectorFile]:
    """Embed every item with every method (resuming earlier work); returns the vector files.

    With a remote `engine`, its workers load the methods from `remotes` (one per method).
    """
    if engine is not None and engine.remote and set(remotes or ()) != set(embedders):
        raise ValueError(f"engine {engine.name} needs a RemoteEmbedder for every method")
    files = {name: VectorFile(directory, name, embedder, len(items), items_key)
             for name, embedder in embedders.items()}
    groups: dict[tuple[int, int] | None, list[str]] = {}
    for name, embedder in embedders.items():
        groups.setdefault(_input_size(embedder), []).append(name)
    workers = default_workers() if workers is None else workers
    for size, names in groups.items():
        if engine is not None and engine.remote:
            _embed_group_on(engine, items, BlockEmbedding(tuple((n, remotes[n]) for n in names), size),
                            [files[n] for n in names], progress)
        else:
            _embed_group(items, size, {n: embedders[n] for n in names}, [files[n] for n in names],
                         progress, workers)
    return files


def _embed_group(items: Sequence[Any], size: tuple[int, int] | None,
                 embedders: Mapping[str, EmbedderLike], files: list[VectorFile],
                 progress: bool, workers: int) -> None:
    done = min(f.done for f in files)
    if done >= len(items):
        LOG.info("%s: vectors of all %d items reused from %s", ", ".join(embedders), len(items),
                 files[0].path.parent)
        return
    first = done // STREAM_BATCH
    if first:
        LOG.info("%s: resuming at item %d of %d", ", ".join(embedders), first * STREAM_BATCH, len(items))
    for file in files:
        file.rewind(first * STREAM_BATCH)
    device = str(getattr(next(iter(embedders.values())), "device", "cpu"))
    render_device = "cpu" if workers else device
    saved_at = time.monotonic()
    with tqdm(total=len(items), initial=first * STREAM_BATCH, unit="img",
              desc="embed " + ", ".join(embedders), disable=not progress, dynamic_ncols=True,
              smoothing=0.05) as bar:
        batches = _loaded_batches(items, size, first, workers, render_device)
        for number, (positions, payload, failures) in enumerate(batches, start=first):
            for file, embedder in zip(files, embedders.values()):
                file.store(positions, embedder.embed(payload), failures)
            bar.update(len(positions) + len(failures))
            if time.monotonic() - saved_at > SAVE_EVERY_S:
                for file in files:
                    file.save(min((number + 1) * STREAM_BATCH, len(items)))
                saved_at = time.monotonic()
    for file in files:
        file.save(len(items))


@dataclass(frozen=True)
class BlockEmbedding:
    """Worker factory for a remote engine: a worker loads `methods` (all of one input `size`)
    once; each job, one batch of items, is loaded once and embedded by every method."""

    methods: tuple[tuple[str, RemoteEmbedder], ...]
    size: tuple[int, int] | None

    def __call__(self) -> Worker:
        embedders = {name: remote.load() for name, remote in self.methods}
        render_device = str(getattr(next(iter(embedders.values())), "device", "cpu"))

        def embed_block(items: list[Any]) -> tuple[np.ndarray, list[Any], dict[str, Any]]:
            positions, payload, failures = next(_loaded_batches(items, self.size, 0, 0,
                                                                render_device))
            return positions, failures, {name: embedder.embed(payload)
                                         for name, embedder in embedders.items()}

        return embed_block


def _embed_group_on(engine: Engine, items: Sequence[Any], worker: BlockEmbedding,
                    files: list[VectorFile], progress: bool) -> None:
    """`_embed_group` on a remote engine: batches finish in any order; each is saved once done."""
    batches = _batch_ranges(len(items))
    finished = set.intersection(*(file.finished_batches(len(items)) for file in files))
    todo = [number for number in range(len(batches)) if number not in finished]
    for file in files:
        file.keep_batches(finished)
    if finished:
        LOG.info("%s: %d of %d batches reused", ", ".join(name for name, _ in worker.methods),
                 len(finished), len(batches))
    saved_at = time.monotonic()
    jobs = [[items[i] for i in batches[number]] for number in todo]
    with tqdm(total=len(items), initial=sum(len(batches[n]) for n in finished), unit="img",
              desc="embed " + ", ".join(name for name, _ in worker.methods),
              disable=not progress, dynamic_ncols=True, smoothing=0.05) as bar:
        for position, (ok, failures, results) in engine.map_unordered(worker, jobs):
            start = batches[todo[position]].start
            shifted = [(start + int(i), message) for i, message in failures]
            for file, (name, _) in zip(files, worker.methods):
                file.store(start + np.asarray(ok, dtype=np.int64), results[name], shifted)
            finished.add(todo[position])
            bar.update(len(batches[todo[position]]))
            if time.monotonic() - saved_at > SAVE_EVERY_S:
                _save_finished(files, finished, batches)
                saved_at = time.monotonic()
    _save_finished(files, finished, batches)


def _save_finished(files: list[VectorFile], finished: set[int], batches: list[range]) -> None:
    prefix = next((number for number in range(len(batches)) if number not in finished), len(batches))
    done = batches[prefix - 1].stop if prefix else 0
    for file in files:
        file.save(done, finished)


def failed_positions(files: Mapping[str, VectorFile], count: int) -> np.ndarray:
    """Bool per item: True where any method failed, so every method sees the same items."""
    failed = np.zeros(count, dtype=bool)
    for file in files.values():
        failed[[position for position, _ in file.errors]] = True
    return failed


def all_errors(files: Mapping[str, VectorFile]) -> list[tuple[int, str]]:
    """Failures of every method, each (item, message) once, in item order."""
    return sorted({error for file in files.values() for error in file.errors})
