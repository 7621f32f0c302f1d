"""Which FAISS index to build and how to train it.

Exact search is affordable up to about a hundred thousand vectors. Above that `auto` picks an
inverted file whose lists hold 4-bit fast-scan PQ codes (SIMD look-up tables: many codes per
instruction), followed by a refine stage that re-scores the best `k_factor * k` candidates
exactly; `indexer.tuning` sets nprobe and k_factor to recall@100 >= 0.95 on held-out vectors.
The refine stage keeps every vector (float32, or 8-bit SQ8 above `SQ8_THRESHOLD` vectors), so it
costs the memory of the flat index plus the codes, and it cannot remove vectors.
"""

from __future__ import annotations

import math

import faiss
import numpy as np

from indexer.errors import InvalidFactoryError, MemoryBudgetError, faiss_reason

AUTO = "auto"
EXACT_FACTORY = "IDMap2,Flat"
EXACT_THRESHOLD = 100_000
# Above this many vectors, 8-bit scalar quantisation keeps an IVF index in memory (4x smaller).
SQ8_THRESHOLD = 2_000_000
# FAISS k-means wants at least 39 points per centroid; 64 gives stable centroids at modest cost.
MIN_POINTS_PER_LIST = 39
TRAIN_POINTS_PER_LIST = 64
TRAIN_POINTS_OTHER = 65_536
TRAIN_SEED = 1234


def ivf_list_count(n: int) -> int:
    """About 4 * sqrt(n) lists, a power of two, with enough points per list to train."""
    nlist = 2 ** round(math.log2(max(4 * math.sqrt(max(n, 1)), 1)))
    while nlist > 1 and nlist * MIN_POINTS_PER_LIST > n:
        nlist //= 2
    return nlist


def pq_subquantizers(dim: int) -> int:
    """PQ sub-vectors of two dimensions each where `dim` allows it (the largest divisor of `dim`
    up to dim / 2): 64 four-bit codes, 32 bytes, for the 128-dimensional embeddings."""
    return max((m for m in range(1, max(dim // 2, 1) + 1) if dim % m == 0), default=1)


def auto_factory(n: int, exact_threshold: int = EXACT_THRESHOLD, dim: int = 128) -> str:
    """The factory string `--factory auto` picks for `n` vectors of dimension `dim`."""
    if n <= exact_threshold:
        return EXACT_FACTORY
    refine = "RFlat" if n <= SQ8_THRESHOLD else "Refine(SQ8)"
    return f"IDMap2,IVF{ivf_list_count(n)},PQ{pq_subquantizers(dim)}x4fs,{refine}"


def resolve_factory(factory: str, n: int, exact_threshold: int = EXACT_THRESHOLD,
                    dim: int = 128, memory: int | None = None) -> str:
    """`factory`, or for "auto" the choice for `n` vectors (within `memory` bytes if given)."""
    if factory != AUTO:
        return factory
    return auto_factory(n, exact_threshold, dim) if memory is None else memory_factory(
        n, dim, memory, exact_threshold)


ID_BYTES = 8  # an int64 id, in the id map or in an inverted list


def estimated_bytes(factory: str, n: int, dim: int) -> int:
    """Memory of `n` vectors in an index that one of the factories chosen here builds (not for
    arbitrary strings): stored codes and ids per vector, plus IVF centroids."""
    parts = factory.split(",")
    per_vector, fixed = 0, 0
    for part in parts:
        if part == "IDMap2":
            per_vector += ID_BYTES
        elif part == "Flat" or part == "RFlat":
            per_vector += 4 * dim
        elif part == "Refine(SQ8)":
            per_vector += dim
        elif part.startswith("IVF"):
            per_vector += ID_BYTES
            fixed += int(part[3:]) * dim * 4
        elif part.startswith("PQ"):
            subquantizers = int(part[2:].split("x")[0])
            per_vector += (subquantizers + 1) // 2
            fixed += subquantizers * 16 * (dim // subquantizers) * 4
    return n * per_vector + fixed


def memory_candidates(n: int, dim: int, exact_threshold: int = EXACT_THRESHOLD) -> list[str]:
    """What auto may build for `n` vectors, largest and most accurate first: the plain auto
    choice, then IVF-PQ with an 8-bit refine stage, then IVF-PQ alone with fewer sub-vectors."""
    nlist = ivf_list_count(n)
    candidates = [auto_factory(n, exact_threshold, dim)]
    m = pq_subquantizers(dim)
    candidates.append(f"IDMap2,IVF{nlist},PQ{m}x4fs,Refine(SQ8)")
    for subquantizers in sorted({m, *(d for d in (dim // 4, dim // 8) if d and dim % d == 0)},
                                reverse=True):
        candidates.append(f"IVF{nlist},PQ{subquantizers}x4fs")
    return list(dict.fromkeys(candidates))


def memory_factory(n: int, dim: int, memory: int, exact_threshold: int = EXACT_THRESHOLD) -> str:
    """The first of `memory_candidates` whose estimated size fits in `memory` bytes."""
    candidates = memory_candidates(n, dim, exact_threshold)
    for factory in candidates:
        if estimated_bytes(factory, n, dim) <= memory:
            return factory
    smallest = min(estimated_bytes(f, n, dim) for f in candidates)
    raise MemoryBudgetError(f"--index-memory {memory:,} bytes is too small for {n:,} vectors of "
                            f"dimension {dim}: the smallest index here needs about {smallest:,}")


def is_ivf(index: faiss.Index) -> bool:
    return faiss.try_extract_index_ivf(index) is not None


def create_index(factory: str, dim: int) -> tuple[faiss.Index, str]:
    """An empty inner-product index for `factory`, and the factory string actually used.

    Indexes that cannot take external ids (flat, HNSW, PQ, a refine stage...) get an `IDMap2`
    wrapper so that ids stay stable through additions and removals.
    """
    index = _from_factory(factory, dim)
    top = faiss.downcast_index(index)
    if (is_ivf(index) and not isinstance(top, faiss.IndexRefine)) or isinstance(top, faiss.IndexIDMap):
        return index, factory
    wrapped = f"IDMap2,{factory}"
    return _from_factory(wrapped, dim), wrapped


def structure(index: faiss.Index) -> str:
    """What a factory string decides about `index`, as nested FAISS classes, e.g.
    `IndexIDMap2(IndexFlat)` or `IndexIVFFlat[nlist=1024](IndexFlat)`: equal for the index a
    factory builds and the same index after training, filling, saving and loading."""
    node = faiss.downcast_index(index)
    name = "IndexFlat" if isinstance(node, faiss.IndexFlat) else type(node).__name__
    if isinstance(node, faiss.IndexIVF):
        return f"{name}[nlist={node.nlist}]({structure(node.quantizer)})"
    if isinstance(node, faiss.IndexPreTransform):
        steps = [_transform_name(node.chain.at(i)) for i in range(node.chain.size())]
        return f"{name}[{', '.join(steps)}]({structure(node.index)})"
    if isinstance(node, faiss.IndexIDMap):  # IndexIDMap2 derives from it
        return f"{name}({structure(node.index)})"
    if isinstance(node, faiss.IndexRefine):
        return f"{name}({structure(node.base_index)}, {structure(node.refine_index)})"
    return name


def _transform_name(transform: faiss.VectorTransform) -> str:
    """A trained OPQ or PCA matrix is saved as a plain linear transform: all read as one."""
    step = faiss.downcast_VectorTransform(transform)
    return "LinearTransform" if isinstance(step, faiss.LinearTransform) else type(step).__name__


def factory_mismatch(factory: str, index: faiss.Index) -> str | None:
    """Why `factory` does not build an index like `index` (None when it does)."""
    try:
        built = structure(_from_factory(factory, index.d))
    except InvalidFactoryError as error:
        return str(error)
    found = structure(index)
    return None if built == found else f"factory {factory!r} builds {built}, not {found}"


def training_positions(index: faiss.Index, n: int, seed: int = TRAIN_SEED) -> np.ndarray:
    """Sorted positions of a deterministic random sample of the vectors to train on."""
    ivf = faiss.try_extract_index_ivf(index)
    wanted = TRAIN_POINTS_PER_LIST * ivf.nlist if ivf is not None else TRAIN_POINTS_OTHER
    if wanted >= n:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=wanted, replace=False)).astype(np.int64)


def train(index: faiss.Index, vectors: np.ndarray, factory: str) -> None:
    """Train `index` on `vectors`, turning FAISS's terse failures into a clear message."""
    try:
        index.train(vectors)
    except RuntimeError as error:
        reason = faiss_reason(error)
        raise InvalidFactoryError(f"cannot train factory {factory!r}: {reason}") from error


def _from_factory(factory: str, dim: int) -> faiss.Index:
    try:
        return faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as error:
        reason = faiss_reason(error)
        raise InvalidFactoryError(f"invalid FAISS factory string {factory!r}: {reason}") from error
