"""An opened index: search it, add to it, remove from it, save it.

The CPU FAISS index, the metadata table and the manifest always change together, so the three
stay consistent in memory; `save()` commits them to disk as one generation (see `indexer.store`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pyarrow as pa

from indexer import gpu, metadata, store
from indexer.cluster.engine import Engine, WorkerFactory
from indexer.dedup import already_indexed, with_content_hashes
from indexer.embedder_protocol import EmbedderLike, EmbedResultLike
from indexer.errors import (
    FingerprintMismatchError,
    IndexFormatError,
    InvalidQueryError,
    InvalidVectorsError,
    ReadOnlyIndexError,
    UnknownItemError,
    UnsupportedOperationError,
    faiss_reason,
)
from indexer.factory import factory_mismatch
from indexer.shards import DEFAULT_SHARD_SIZE, discard_builds, embed_in_shards
from indexer.sources import Source, check_metadata, file_path
from indexer.tuning import set_k_factor, set_nprobe
from indexer.vectors import add_in_chunks, validated_vectors

LOG = logging.getLogger(__name__)

BUILD_DIR_NAME = ".build"


@dataclass(frozen=True)
class IngestResult:
    """What happened to each item of a source: an id, or the reason it was skipped."""

    ids: np.ndarray  # int64 ids given to the embedded items, in source order
    ordinals: np.ndarray  # int64 positions of those items in the source
    errors: list[tuple[int, str]]  # (position in the source, message naming the file)
    # int64 positions in the source of files the index already held, not added again
    duplicates: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


@dataclass(frozen=True)
class Hit:
    rank: int  # 1-based
    id: int
    score: float  # inner product of unit vectors: cosine similarity
    row: dict[str, Any]  # the metadata row: path and every label column
    # Set by re-ranking (`indexer.rerank`) only, so a plain search answers as it always did.
    verified_inliers: int | None = None  # None there: the candidate could not be verified
    rerank_score: float | None = None
    appearance: float | None = None  # dense appearance similarity to the query; None: unverified

    @property
    def path(self) -> str | None:
        """The file behind the hit, printable (see `indexer.sources`); None for a virtual row."""
        value = self.row.get("path")
        return None if value is None else str(value)

    @property
    def file(self) -> str | None:
        """The file behind the hit spelled as the OS does, to open it; None for a virtual row."""
        return file_path(self.row)

    def to_json(self) -> dict[str, Any]:
        """The hit as `query --json` and the HTTP API print it; a re-ranked hit adds its inliers
        and appearance similarity (null when unverified) and re-ranking score."""
        answer = {"rank": self.rank, "id": self.id, "path": self.path, "score": round(self.score, 6)}
        if self.rerank_score is not None:
            answer.update(verified_inliers=self.verified_inliers,
                          appearance=None if self.appearance is None else round(self.appearance, 6),
                          rerank_score=round(self.rerank_score, 6))
        return answer


@dataclass(frozen=True)
class QueryHits:
    item: int  # position of the query in the searched items
    hits: list[Hit]


@dataclass(frozen=True)
class ImageSearch:
    results: list[QueryHits]
    errors: list[tuple[int, str]]  # queries that could not be embedded


class RetrievalIndex:
    """A FAISS index with its metadata and manifest; the CPU index is the saved truth."""

    def __init__(self, directory: str | Path, cpu_index: faiss.Index, table: pa.Table,
                 manifest: store.Manifest, *, read_only: bool, memory_mapped: bool,
                 device: str) -> None:
        self.directory = Path(directory)
        self._cpu = cpu_index
        self._table = table
        self._manifest = manifest
        self._read_only = read_only
        self._memory_mapped = memory_mapped
        self.device = device
        self._gpu: faiss.Index | None = None

    # -- reading -----------------------------------------------------------------------------

    @property
    def count(self) -> int:
        return int(self._cpu.ntotal)

    @property
    def dim(self) -> int:
        return int(self._cpu.d)

    @property
    def fingerprint(self) -> str:
        return self._manifest.fingerprint

    @property
    def manifest(self) -> store.Manifest:
        return self._manifest

    @property
    def metadata(self) -> pa.Table:
        return self._table

    def search_vectors(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids), each (n_queries, k), best first; id -1 pads missing results."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim == 1:
            queries = queries[None, :]
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise InvalidQueryError(
                f"{self.directory}: queries must have shape (n, {self.dim}), got {queries.shape}"
            )
        self.check_k(k)
        # A refine stage re-scores k_factor * k candidates, with k_factor tuned at recall_k; a
        # smaller k keeps the candidates of recall_k so that its recall is not lower.
        wide = min(max(k, int(self._manifest.tuned.get("recall_k", k))), self.count)
        if "k_factor" not in self._manifest.tuned or wide == k:
            return self._searcher(k).search(queries, k)
        scores, ids = self._searcher(wide).search(queries, wide)
        return np.ascontiguousarray(scores[:, :k]), np.ascontiguousarray(ids[:, :k])

    def search_images(self, items: Sequence[Any], embedder: EmbedderLike, k: int,
                      progress: bool = False) -> ImageSearch:
        """Embed `items` and search them; items that fail to embed are reported, not fatal."""
        self.check_fingerprint(embedder.fingerprint, "query embedder")
        self.check_k(k)
        return self.search_embedded(embedder.embed(list(items), progress=progress), k,
                                    embedder.fingerprint)

    def search_embedded(self, embedded: EmbedResultLike, k: int, fingerprint: str) -> ImageSearch:
        """Search what an embedder with `fingerprint` returned, when the caller needs the
        embedding result itself too (the server reads the blur and box predictions from it)."""
        self.check_fingerprint(fingerprint, "query embedder")
        ok = np.asarray(embedded.ok, dtype=np.int64)
        if len(ok) == 0:
            return ImageSearch(results=[], errors=sorted(embedded.errors))
        scores, ids = self.search_vectors(embedded.vectors, k)
        rows = metadata.rows_for_ids(self._table, ids)
        results = []
        for q, item in enumerate(ok.tolist()):
            hits = [
                Hit(rank=r + 1, id=int(ids[q, r]), score=float(scores[q, r]), row=row)
                for r in range(k)
                if (row := rows[q * k + r]) is not None
            ]
            results.append(QueryHits(item=item, hits=hits))
        return ImageSearch(results=results, errors=sorted(embedded.errors))

    def check_k(self, k: int) -> None:
        """Refuse k <= 0 or k > count before any costly embedding is done."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
            raise InvalidQueryError(f"{self.directory}: k must be a positive integer, got {k!r}")
        if k > self.count:
            raise InvalidQueryError(
                f"{self.directory}: k={k} is larger than the index ({self.count} vectors)"
            )

    def stored_vectors(self, ids: Sequence[int]) -> np.ndarray | None:
        """(n, dim) float32: the vectors held for `ids` (decoded, so approximate for a quantised
        encoding), for re-ranking's query expansion; None where the index cannot give them back."""
        ids = np.asarray(ids, dtype=np.int64)
        ivf = faiss.try_extract_index_ivf(self._cpu)
        try:
            if ivf is not None and ivf.direct_map.type == faiss.DirectMap.NoMap:
                ivf.set_direct_map_type(faiss.DirectMap.Hashtable)  # id -> entry, built once
            return self._cpu.reconstruct_batch(ids)
        except RuntimeError as error:
            LOG.warning("%s: a %r index cannot give its vectors back (%s)", self.directory,
                        self._manifest.factory, faiss_reason(error))
            return None

    def rows(self, ids: np.ndarray) -> list[dict[str, Any] | None]:
        """Metadata rows for `ids` in order (None where an id is unknown or -1)."""
        return metadata.rows_for_ids(self._table, ids)

    def info(self) -> dict[str, Any]:
        """A summary fit for printing or JSON: what is in the index and how it was made."""
        m = self._manifest
        return {
            "directory": str(self.directory),
            "format_version": m.format_version,
            "generation": m.generation,
            "count": self.count,
            "next_id": m.next_id,
            "dim": self.dim,
            "metric": m.metric,
            "factory": m.factory,
            "model": m.model,
            "tuned": m.tuned,
            "created": m.created,
            "updated": m.updated,
            "files": {role: dataclasses.asdict(r) for role, r in m.files.items()},
            "memory_mapped": self._memory_mapped,
            "read_only": self._read_only,
            "device": self.device,
        }

    # -- changing ----------------------------------------------------------------------------

    def add(self, source: Source, embedder: EmbedderLike, progress: bool = True,
            shard_size: int = DEFAULT_SHARD_SIZE, allow_duplicates: bool = False,
            engine: Engine | None = None, remote: WorkerFactory | None = None) -> IngestResult:
        """Embed and append `source` (resumable until the next save); call `save()` to keep it.

        Files the index already holds (same path and content, see `indexer.dedup`) are skipped
        and listed in `IngestResult.duplicates`, unless `allow_duplicates`. `engine` and `remote`:
        where the items are embedded (see `indexer.shards.embed_in_shards`).
        """
        self._require_writable()
        self.check_fingerprint(embedder.fingerprint, f"{source.origin} embedder")
        source = with_content_hashes(source, progress)
        duplicates = (np.zeros(0, dtype=np.int64) if allow_duplicates
                      else already_indexed(self._table, source.metadata))
        wanted = np.setdiff1d(np.arange(len(source), dtype=np.int64), duplicates)
        embedded = embed_in_shards([source.items[i] for i in wanted], embedder,
                                   self.directory / BUILD_DIR_NAME, shard_size, progress,
                                   engine, remote)
        ordinals = wanted[embedded.ordinals]
        rows = source.metadata.take(pa.array(ordinals))
        ids = self.add_vectors(embedded.vectors, rows, embedder.fingerprint, source.origin)
        errors = [(int(wanted[position]), message) for position, message in embedded.errors]
        return IngestResult(ids=ids, ordinals=ordinals, errors=errors, duplicates=duplicates)

    def add_vectors(self, vectors: np.ndarray, rows: pa.Table, fingerprint: str,
                    origin: str = "<vectors>") -> np.ndarray:
        """Append unit vectors with one metadata row each; returns their new, never-reused ids."""
        self._require_writable()
        self.check_fingerprint(fingerprint, origin)
        vectors = validated_vectors(vectors, self.dim, origin)
        check_metadata(rows, origin)
        if rows.num_rows != len(vectors):
            raise InvalidVectorsError(
                f"{origin}: {len(vectors)} vectors but {rows.num_rows} metadata rows"
            )
        start = self._manifest.next_id
        ids = np.arange(start, start + len(vectors), dtype=np.int64)
        table = metadata.append_rows(self._table, metadata.attach_ids(rows, ids), origin)
        add_in_chunks(self._cpu, vectors, ids, progress=False)
        self._table = table
        self._changed(next_id=start + len(vectors))
        return ids

    def remove(self, ids: Sequence[int] = (), paths: Sequence[str] = ()) -> np.ndarray:
        """Remove by id and/or path; nothing is removed if any id or path is unknown."""
        self._require_writable()
        by_path, missing_paths = metadata.ids_of_paths(self._table, paths)
        wanted = np.unique(np.concatenate([np.asarray(ids, dtype=np.int64), by_path]))
        unknown = np.setdiff1d(wanted, metadata.ids_column(self._table))
        if missing_paths or len(unknown):
            raise UnknownItemError(
                f"{self.directory}: not in the index: "
                + ", ".join([*(f"id {i}" for i in unknown.tolist()), *missing_paths])
            )
        if len(wanted) == 0:
            raise InvalidQueryError(f"{self.directory}: nothing to remove (give ids or paths)")
        try:
            self._cpu.remove_ids(wanted)
        except RuntimeError as error:
            raise UnsupportedOperationError(
                f"{self.directory}: a {self._manifest.factory!r} index cannot remove vectors "
                f"({faiss_reason(error)})"
            ) from error
        self._table = metadata.drop_ids(self._table, wanted)
        self._changed(next_id=self._manifest.next_id)
        return wanted

    def save(self) -> None:
        """Commit the index as a new generation; pending ingest shards are dropped just before."""
        self._require_writable()
        self._manifest = store.commit_generation(
            self.directory, self._cpu, self._table, self._manifest,
            before_commit=lambda: discard_builds(self.directory / BUILD_DIR_NAME),
        )

    # -- internals ---------------------------------------------------------------------------

    def _changed(self, next_id: int) -> None:
        self._manifest = dataclasses.replace(self._manifest, count=self.count, next_id=next_id)
        self._gpu = None  # stale: rebuilt from the CPU index on the next GPU search

    def _require_writable(self) -> None:
        if self._read_only:
            raise ReadOnlyIndexError(
                f"{self.directory}: opened read-only (memory-mapped); "
                "use open_index(..., mmap=False) to modify it"
            )

    def check_fingerprint(self, fingerprint: str, origin: str) -> None:
        """Refuse vectors of another model, saying which model built the index and what to do:
        a shipped name resolves to new weights after an upgrade, so the name alone can match."""
        if fingerprint != self.fingerprint:
            built_by = self._manifest.model.get("name")
            model = f" (model {built_by!r})" if built_by else ""
            raise FingerprintMismatchError(
                f"{origin}: model fingerprint {fingerprint!r} differs from {self.fingerprint!r}"
                f"{model} that built {self.directory}; vectors of different models are not "
                "comparable: build the index again with this model, or use the checkpoint "
                "folder that built it"
            )

    def _searcher(self, k: int) -> faiss.Index:
        if self.device != "cuda":
            return self._cpu
        nprobe = self._manifest.tuned.get("nprobe")
        problem = gpu.gpu_limit_problem(k, nprobe)
        if problem is not None:
            LOG.warning("%s; searching %s on CPU", problem, self.directory)
            return self._cpu
        if self._gpu is None:
            float16 = bool(self._manifest.tuned.get("gpu_float16", False))
            try:
                self._gpu = gpu.clone_to_gpus(self._cpu, float16=float16, nprobe=nprobe)
            except RuntimeError as error:
                LOG.warning("%s: no GPU copy of a %r index (%s); searching on CPU", self.directory,
                            self._manifest.factory, faiss_reason(error))
                self.device = "cpu"
                return self._cpu
        return self._gpu


def _check_agreement(directory: Path, manifest: store.Manifest, faiss_index: faiss.Index,
                     table: pa.Table) -> None:
    """The manifest, index file and metadata must describe one index; a damaged or hand-edited
    manifest would otherwise be trusted and carried on by every later save."""
    index_file = directory / manifest.files["index"].name
    if not (faiss_index.ntotal == manifest.count == table.num_rows
            and faiss_index.d == manifest.dim):
        raise IndexFormatError(
            f"{index_file}: holds {faiss_index.ntotal} vectors of dimension {faiss_index.d}, but "
            f"the manifest says {manifest.count} of dimension {manifest.dim} and the metadata has "
            f"{table.num_rows} rows"
        )
    damaged = f"{directory / store.MANIFEST_NAME}: damaged manifest: restore it or rebuild the index"
    ids = metadata.ids_column(table)
    if len(ids) and ids.max() >= manifest.next_id:
        raise IndexFormatError(
            f"{damaged}; its next_id {manifest.next_id} is not above the largest id in use "
            f"({int(ids.max())}), so new vectors would reuse ids"
        )
    mismatch = factory_mismatch(manifest.factory, faiss_index)
    if mismatch is not None:
        raise IndexFormatError(f"{damaged}; its factory does not describe {index_file}: {mismatch}")


def open_index(directory: str | Path, mmap: bool = True, device: str = "auto") -> RetrievalIndex:
    """Open a saved index; `mmap=True` maps it read-only so many processes share one copy."""
    device = gpu.resolve_device(device)
    manifest, faiss_index, table, mapped = store.load_generation(directory, mmap)
    _check_agreement(Path(directory), manifest, faiss_index, table)
    if "nprobe" in manifest.tuned:
        set_nprobe(faiss_index, manifest.tuned["nprobe"])
    if "k_factor" in manifest.tuned:
        set_k_factor(faiss_index, manifest.tuned["k_factor"])
    return RetrievalIndex(directory, faiss_index, table, manifest, read_only=mmap,
                          memory_mapped=mapped, device=device)
