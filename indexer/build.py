"""Build a new index from a source: embed (resumably), train, add, tune, save."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pyarrow as pa

from indexer import gpu, metadata, store
from indexer.cluster.engine import Engine, WorkerFactory
from indexer.dedup import with_content_hashes
from indexer.embedder_protocol import EmbedderLike
from indexer.errors import IndexExistsError, SourceError
from indexer.factory import (
    AUTO,
    EXACT_THRESHOLD,
    create_index,
    resolve_factory,
    train,
    training_positions,
)
from indexer.index import BUILD_DIR_NAME, IngestResult, RetrievalIndex
from indexer.parallel_add import PART_SIZE, add_in_parts, can_add_in_parts
from indexer.shards import DEFAULT_SHARD_SIZE, discard_builds, embed_in_shards
from indexer.sources import Source
from indexer.tuning import RECALL_K, sample_queries, tune_index
from indexer.vectors import add_in_chunks, validated_vectors

LOG = logging.getLogger(__name__)


@dataclass
class BuiltFaissIndex:
    """A trained, filled and tuned FAISS index, with the seconds each stage took."""

    index: faiss.Index
    factory: str
    tuned: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)


def build_faiss_index(vectors: np.ndarray, ids: np.ndarray, factory: str, device: str = "cpu",
                      exact_threshold: int = EXACT_THRESHOLD, progress: bool = True,
                      memory: int | None = None, engine: Engine | None = None
                      ) -> BuiltFaissIndex:
    """Create the index `factory` names (or "auto" picks), train it, add `vectors`, tune nprobe.

    The one path both `build_index` and the speed benchmark use, so the benchmark measures
    exactly what users get. `memory` (bytes) makes "auto" pick an index that fits in it
    (`indexer.factory.memory_factory`). With a remote `engine` an IVF index is filled in parts
    on its workers and merged (`indexer.parallel_add`): the same index, added in parallel.
    """
    faiss_index, factory_used = create_index(
        resolve_factory(factory, len(vectors), exact_threshold, vectors.shape[1], memory),
        vectors.shape[1]
    )
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    training = np.zeros(0, dtype=np.int64)
    if not faiss_index.is_trained:
        training = training_positions(faiss_index, len(vectors))
        with gpu.gpu_clustering(faiss_index) if device == "cuda" else contextlib.nullcontext():
            train(faiss_index, vectors[training], factory_used)
    seconds["train"] = time.perf_counter() - start
    start = time.perf_counter()
    if (engine is not None and engine.remote and len(vectors) > PART_SIZE
            and can_add_in_parts(faiss_index)):
        faiss_index = add_in_parts(faiss_index, vectors, ids, engine, PART_SIZE, progress)
    else:
        add_in_chunks(faiss_index, vectors, ids, progress)
    seconds["add"] = time.perf_counter() - start
    start = time.perf_counter()
    tuned = tune_index(faiss_index, vectors, ids, training)
    if device == "cuda":
        tuned.update(_float16_choice(faiss_index, vectors, training, tuned.get("nprobe")))
    seconds["tune"] = time.perf_counter() - start
    LOG.debug("FAISS %s over %d vectors: tuned %s, seconds %s", factory_used, len(vectors), tuned,
              {stage: round(value, 3) for stage, value in seconds.items()})
    return BuiltFaissIndex(faiss_index, factory_used, tuned, seconds)


def build_index(
    source: Source,
    embedder: EmbedderLike,
    out_dir: str | Path,
    factory: str = AUTO,
    device: str = "auto",
    shard_size: int = DEFAULT_SHARD_SIZE,
    progress: bool = True,
    exact_threshold: int = EXACT_THRESHOLD,
    model_name: str | None = None,
    memory: int | None = None,
    engine: Engine | None = None,
    remote: WorkerFactory | None = None,
) -> tuple[RetrievalIndex, IngestResult]:
    """Embed `source` (resumably), build and tune the index, and save it in `out_dir`.

    `factory` is a FAISS factory string or "auto" (exact up to `exact_threshold` vectors,
    IVF with fast-scan PQ and a refine stage above, nprobe and k_factor tuned to
    recall@100 >= 0.95; within `memory` bytes when given). `model_name` is recorded so that
    later commands can load the same model. A build in which no item embeds leaves nothing
    behind: no shards, and no `out_dir` if this call created it. `engine` and `remote`: where the
    items are embedded (see `indexer.shards.embed_in_shards`).
    """
    out = Path(out_dir)
    if (out / store.MANIFEST_NAME).exists():
        raise IndexExistsError(f"{out}: already holds an index; add to it or choose another folder")
    store.check_writable_folder(out)
    device = gpu.resolve_device(device)
    if len(source) == 0:
        raise SourceError("; ".join([f"{source.origin}: no items to index", *source.skipped]))
    source = with_content_hashes(source, progress)
    created = not out.exists()
    embedded = embed_in_shards(source.items, embedder, out / BUILD_DIR_NAME, shard_size, progress,
                               engine, remote)
    if len(embedded.ordinals) == 0:
        discard_builds(out / BUILD_DIR_NAME)
        if created and not any(out.iterdir()):
            out.rmdir()
        raise SourceError(
            f"{source.origin}: none of the {len(source)} items could be embedded; "
            f"first error: {embedded.errors[0][1]}"
        )
    vectors = validated_vectors(embedded.vectors, embedder.dim, source.origin)
    ids = np.arange(len(vectors), dtype=np.int64)
    built = build_faiss_index(vectors, ids, factory, device, exact_threshold, progress, memory,
                              engine)
    manifest = store.Manifest(
        model={
            "name": model_name,
            "fingerprint": embedder.fingerprint,
            "config": json.loads(json.dumps(embedder.config, default=str)),
        },
        dim=embedder.dim,
        factory=built.factory,
        count=len(vectors),
        next_id=len(vectors),
        tuned=built.tuned,
    )
    rows = metadata.attach_ids(source.metadata.take(pa.array(embedded.ordinals)), ids)
    index = RetrievalIndex(out, built.index, rows, manifest, read_only=False,
                           memory_mapped=False, device=device)
    index.save()
    return index, IngestResult(ids=ids, ordinals=embedded.ordinals, errors=embedded.errors)


def _float16_choice(index: faiss.Index, vectors: np.ndarray, training: np.ndarray,
                    nprobe: int | None) -> dict[str, Any]:
    """Whether GPU searches may store vectors in float16, judged on held-out queries."""
    queries = vectors[sample_queries(len(vectors), training)]
    k = min(RECALL_K, len(vectors))
    try:
        recall = gpu.float16_recall(index, queries, k, nprobe)
    except RuntimeError as error:
        LOG.warning("float16 GPU copy unavailable (%s); GPU search uses float32", error)
        return {"gpu_float16": False}
    return {"gpu_float16": recall >= gpu.FLOAT16_MIN_RECALL, "gpu_float16_recall": recall}
