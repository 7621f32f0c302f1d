"""Optional GPU acceleration: clone an index to every GPU for search, k-means on GPU for training.

The CPU index stays the one source of truth (it is what gets saved); GPU copies are disposable.
FAISS GPU kernels cap k and nprobe at 2048, so larger requests run on the CPU with a warning.

Which FAISS is installed decides everything here: the default install is faiss-cpu (no GPU code
at all), the `[gpu]` extra adds faiss-gpu. Both wheels ship the same `faiss` module, so a machine
may hold a CPU binary even with faiss-gpu listed; `has_gpu_build` looks at the loaded module
itself, and every GPU path is reached only through `resolve_device`, which answers 'cpu' then.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import faiss
import numpy as np

from indexer.errors import DeviceError
from indexer.tuning import recall_at_k
from retrieval.devices import (
    DEVICES,  # noqa: F401  (the index commands' --device choices)
    DeviceUnavailableError,
    choose_device,
)

LOG = logging.getLogger(__name__)

GPU_MAX_K = 2048
GPU_MAX_NPROBE = 2048
# float16 storage halves GPU memory; it is used only when it changes almost no top-k result.
FLOAT16_MIN_RECALL = 0.99


GPU_INSTALL_HINT = ("install FAISS's GPU build: pip install -e '.[gpu]' && "
                    "pip install --force-reinstall --no-deps 'faiss-gpu>=1.15'")


def has_gpu_build() -> bool:
    """Whether the loaded FAISS has GPU code (faiss-gpu), whatever pip lists as installed."""
    return all(hasattr(faiss, name) for name in ("get_num_gpus", "GpuMultipleClonerOptions",
                                                 "index_cpu_to_all_gpus"))


def gpu_count() -> int:
    """GPUs FAISS can use: 0 with a CPU-only build, or when the GPU build finds no device."""
    if not has_gpu_build():
        return 0
    try:
        return int(faiss.get_num_gpus())
    except RuntimeError as error:  # a GPU build without a working CUDA driver
        LOG.warning("FAISS cannot count GPUs (%s); using the CPU", error)
        return 0


def resolve_device(device: str) -> str:
    """FAISS's device for a requested 'auto' | 'cpu' | 'cuda', by the rule of `choose_device`.

    What counts here is whether the FAISS build sees a GPU (faiss-cpu on a CUDA machine sees
    none), not whether torch does: the embedder resolves its own device with torch.
    """
    try:
        return choose_device(device, gpu_count() > 0, backend="FAISS")
    except DeviceUnavailableError as error:
        if device == "cuda" and not has_gpu_build():
            raise DeviceError(f"{error}: the installed FAISS is a CPU-only build; "
                              f"{GPU_INSTALL_HINT}") from error
        raise DeviceError(str(error)) from error


def gpu_limit_problem(k: int, nprobe: int | None) -> str | None:
    """Why a search with these parameters cannot run on GPU, or None when it can."""
    if k > GPU_MAX_K:
        return f"k={k} exceeds the GPU limit of {GPU_MAX_K}"
    if nprobe is not None and nprobe > GPU_MAX_NPROBE:
        return f"nprobe={nprobe} exceeds the GPU limit of {GPU_MAX_NPROBE}"
    return None


def clone_to_gpus(index: faiss.Index, float16: bool, nprobe: int | None = None) -> faiss.Index:
    """A search-only copy of `index` replicated on every GPU."""
    options = faiss.GpuMultipleClonerOptions()
    options.useFloat16 = float16
    options.shard = False
    clone = faiss.index_cpu_to_all_gpus(index, co=options)
    if nprobe is not None:
        faiss.GpuParameterSpace().set_index_parameter(clone, "nprobe", nprobe)
    return clone


def float16_recall(index: faiss.Index, queries: np.ndarray, k: int, nprobe: int | None
                   ) -> float:
    """How many of the float32 GPU top-k results a float16 GPU copy still returns."""
    _, reference = clone_to_gpus(index, float16=False, nprobe=nprobe).search(queries, k)
    _, found = clone_to_gpus(index, float16=True, nprobe=nprobe).search(queries, k)
    return recall_at_k(found, reference)


@contextlib.contextmanager
def gpu_clustering(index: faiss.Index) -> Iterator[None]:
    """Run the k-means of an IVF index's training on the GPUs (its slowest step on CPU)."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None:
        yield
        return
    try:
        assigner = faiss.index_cpu_to_all_gpus(faiss.IndexFlatIP(ivf.d))
    except (RuntimeError, AttributeError, NameError) as error:  # no GPU, or a CPU-only build
        LOG.warning("cannot train on GPU (%s); training on CPU", error)
        yield
        return
    ivf.clustering_index = assigner
    try:
        yield
    finally:
        ivf.clustering_index = None
