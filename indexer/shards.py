"""Resumable embedding: items are embedded shard by shard and each shard is saved atomically.

An interrupted build leaves finished shards in BUILD_ROOT/<key>/, the key being a digest of the
items, the model fingerprint and the shard size; the next run over the same items with the same
model reloads them and embeds only the rest. Shards are
concatenated in item order, so a resumed build yields exactly the arrays an uninterrupted one
would.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from indexer.cluster.engine import Engine, LocalEngine, WorkerFactory
from indexer.embedder_protocol import EmbedderLike
from retrieval.fileio import atomic_path

LOG = logging.getLogger(__name__)

DEFAULT_SHARD_SIZE = 8192


@dataclass(frozen=True)
class EmbeddedItems:
    """Vectors of the items that embedded, with their positions, and why the others failed."""

    vectors: np.ndarray  # float32 (n_ok, D)
    ordinals: np.ndarray  # int64 (n_ok,), positions in the source items, increasing
    errors: list[tuple[int, str]]


def item_key(item: Any) -> str:
    """A stable text identity for an item, used to tell whether shards match the items."""
    if isinstance(item, dict):
        return json.dumps(item, sort_keys=True, default=str)
    return str(item)


def items_digest(items: Sequence[Any]) -> str:
    digest = hashlib.sha256()
    for item in items:
        # surrogateescape: a file name that is not UTF-8 keys by its exact bytes
        digest.update(item_key(item).encode("utf-8", "surrogateescape"))
        digest.update(b"\0")
    return digest.hexdigest()


def build_key(items: Sequence[Any], embedder: EmbedderLike, shard_size: int) -> str:
    """Names the folder of one build's shards: same items, model and shard size, same key."""
    plan = f"{items_digest(items)}|{embedder.fingerprint}|{embedder.dim}|{shard_size}"
    return hashlib.sha256(plan.encode("utf-8")).hexdigest()[:16]


def shard_path(build_dir: Path, number: int) -> Path:
    return build_dir / f"shard-{number:05d}.npz"


def embed_in_shards(
    items: Sequence[Any],
    embedder: EmbedderLike,
    build_root: str | Path,
    shard_size: int = DEFAULT_SHARD_SIZE,
    progress: bool = True,
    engine: Engine | None = None,
    remote: WorkerFactory | None = None,
) -> EmbeddedItems:
    """Embed `items`, reusing shards that an interrupted run over the same items left behind.

    Each distinct build gets its own folder under `build_root`, so several pending ingests
    (say two `add` calls before a save) or a retry with another model never mix their shards.
    `engine` (default: this process) embeds the missing shards; a remote one (Ray) builds its
    workers with `remote`, a picklable factory of the same model (`RemoteEmbedder`). Each shard
    is saved as soon as it is done, whatever the order, so a rerun redoes only the others.
    """
    if shard_size <= 0:
        raise ValueError(f"shard_size must be positive, got {shard_size}")
    engine = engine or LocalEngine()
    if engine.remote and remote is None:
        raise ValueError(f"engine {engine.name} needs a picklable embedder factory (remote=...)")
    build_dir = Path(build_root) / build_key(items, embedder, shard_size)
    bounds = [
        (start, min(start + shard_size, len(items)))
        for start in range(0, len(items), shard_size)
    ]
    shards = {
        number: shard
        for number, (start, stop) in enumerate(bounds)
        if (shard := _read_shard(shard_path(build_dir, number), start, stop, embedder.dim))
        is not None
    }
    already = sum(stop - start for number, (start, stop) in enumerate(bounds) if number in shards)
    if already:
        LOG.info("%s: %d of %d items already embedded by an interrupted run; embedding the rest",
                 build_dir, already, len(items))
    missing = [number for number in range(len(bounds)) if number not in shards]
    jobs = ShardJobs(items, [bounds[number] for number in missing])
    make_worker = remote if engine.remote else lambda: embedder.embed
    with tqdm(total=len(items), initial=already, unit="img", desc="embedding",
              disable=not progress, dynamic_ncols=True) as bar:
        for position, result in engine.map_unordered(make_worker, jobs):
            number = missing[position]
            start, stop = bounds[number]
            shard = _checked_shard(result, start, stop - start, embedder.dim)
            _write_shard(shard_path(build_dir, number), shard)
            shards[number] = shard
            bar.update(stop - start)
    return _concatenate([shards[number] for number in range(len(bounds))], embedder.dim)


class ShardJobs(Sequence):
    """The items of each missing shard, listed only when an engine asks for that job: a list of
    every job built up front held one reference per item (about 80 MB at 10,000,000)."""

    def __init__(self, items: Sequence[Any], bounds: list[tuple[int, int]]) -> None:
        self.items, self.bounds = items, bounds

    def __len__(self) -> int:
        return len(self.bounds)

    def __getitem__(self, position: int) -> list[Any]:  # type: ignore[override]
        start, stop = self.bounds[position]
        return list(self.items[start:stop])


def discard_builds(build_root: str | Path) -> None:
    """Remove all shards once their vectors are safely elsewhere."""
    shutil.rmtree(build_root, ignore_errors=True)


def _checked_shard(result: Any, start: int, count: int, dim: int) -> EmbeddedItems:
    """The embedder's answer for `count` items from `start`, checked and in item order."""
    vectors = np.ascontiguousarray(result.vectors, dtype=np.float32)
    ok = np.asarray(result.ok, dtype=np.int64)
    if vectors.ndim != 2 or vectors.shape != (len(ok), dim):
        raise ValueError(
            f"embedder returned vectors of shape {vectors.shape} for {len(ok)} items, "
            f"expected ({len(ok)}, {dim})"
        )
    order = np.argsort(ok, kind="stable")  # ids follow item order whatever the embedder's order
    failed = sorted((int(i) + start, str(message)) for i, message in result.errors)
    shard = EmbeddedItems(vectors=vectors[order], ordinals=ok[order] + start, errors=failed)
    if not _covers_exactly(shard, start, start + count):
        raise ValueError("embedder must report every item exactly once, as embedded or failed")
    return shard


def _write_shard(path: Path, shard: EmbeddedItems) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(
            handle,
            vectors=shard.vectors,
            ordinals=shard.ordinals,
            error_ordinals=np.array([i for i, _ in shard.errors], dtype=np.int64),
            error_messages=np.array([m for _, m in shard.errors], dtype=np.str_),
        )


def _read_shard(path: Path, start: int, stop: int, dim: int) -> EmbeddedItems | None:
    """A finished shard, or None when it is missing or unusable (then it is embedded again)."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            shard = EmbeddedItems(
                vectors=data["vectors"].astype(np.float32, copy=False),
                ordinals=data["ordinals"].astype(np.int64, copy=False),
                errors=[
                    (int(i), str(m))
                    for i, m in zip(data["error_ordinals"], data["error_messages"], strict=True)
                ],
            )
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        LOG.warning("%s: unreadable shard (%s); embedding it again", path, error)
        return None
    if shard.vectors.shape != (len(shard.ordinals), dim) or not _covers_exactly(shard, start, stop):
        LOG.warning("%s: shard does not match its items; embedding it again", path)
        return None
    return shard


def _covers_exactly(shard: EmbeddedItems, start: int, stop: int) -> bool:
    positions = np.concatenate([shard.ordinals, np.array([i for i, _ in shard.errors], np.int64)])
    return np.array_equal(np.sort(positions), np.arange(start, stop))


def _concatenate(shards: list[EmbeddedItems], dim: int) -> EmbeddedItems:
    if not shards:
        return EmbeddedItems(np.zeros((0, dim), np.float32), np.zeros(0, np.int64), [])
    return EmbeddedItems(
        vectors=np.concatenate([s.vectors for s in shards]),
        ordinals=np.concatenate([s.ordinals for s in shards]),
        errors=[error for s in shards for error in s.errors],
    )
