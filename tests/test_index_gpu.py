"""Device choice and GPU limits; GPU search paths run only where FAISS sees a GPU."""

from __future__ import annotations

import logging
from pathlib import Path

import faiss
import numpy as np
import pytest
from fakes import FakeEmbedder, virtual_source

from indexer import gpu
from indexer.api import build_index, open_index
from indexer.errors import DeviceError

HAS_GPU = gpu.gpu_count() > 0
needs_gpu = pytest.mark.skipif(not HAS_GPU, reason="FAISS sees no GPU")
needs_no_gpu = pytest.mark.skipif(HAS_GPU, reason="checks the no-GPU fallback")


def test_cpu_is_always_available() -> None:
    assert gpu.resolve_device("cpu") == "cpu"


def test_unknown_device_is_refused() -> None:
    with pytest.raises(ValueError, match="tpu"):
        gpu.resolve_device("tpu")


@needs_no_gpu
def test_without_gpu_auto_means_cpu_and_cuda_is_an_error() -> None:
    assert gpu.resolve_device("auto") == "cpu"
    with pytest.raises(DeviceError, match="no GPU"):
        gpu.resolve_device("cuda")


@pytest.fixture()
def cpu_only_faiss(monkeypatch: pytest.MonkeyPatch) -> None:
    """The faiss-cpu wheel: no GPU classes at all (its get_num_gpus exists and answers 0)."""
    for name in ("GpuMultipleClonerOptions", "index_cpu_to_all_gpus"):
        monkeypatch.delattr(faiss, name, raising=False)
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 0)


def test_a_cpu_only_faiss_falls_back_to_the_cpu(cpu_only_faiss: None, tmp_path: Path) -> None:
    assert not gpu.has_gpu_build() and gpu.gpu_count() == 0
    assert gpu.resolve_device("auto") == "cpu"
    with pytest.raises(DeviceError, match=r"CPU-only build.*\[gpu\]"):
        gpu.resolve_device("cuda")
    build_index(virtual_source(300), FakeEmbedder(dim=16), tmp_path / "idx", device="auto",
                exact_threshold=100, progress=False)
    queries = FakeEmbedder(dim=16).vectors_of([{"row": 7}])
    assert open_index(tmp_path / "idx", device="auto").search_vectors(queries, k=3)[1][0, 0] == 7


def test_gpu_clustering_without_gpu_code_trains_on_the_cpu(cpu_only_faiss: None) -> None:
    index = faiss.index_factory(8, "IVF4,Flat", faiss.METRIC_INNER_PRODUCT)
    with gpu.gpu_clustering(index):
        index.train(np.random.default_rng(0).standard_normal((400, 8), dtype=np.float32))
    assert index.is_trained


def test_the_default_install_is_faiss_cpu_and_faiss_gpu_an_extra() -> None:
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    names = [requirement.split(">")[0].split(";")[0].strip() for requirement in project["dependencies"]]
    assert "faiss-cpu" in names and "faiss-gpu" not in names
    assert any(r.startswith("faiss-gpu") for r in project["optional-dependencies"]["gpu"])


@pytest.mark.parametrize(("k", "nprobe", "problem"), [
    (10, None, None), (2048, 2048, None), (2049, None, "k=2049"), (5, 4096, "nprobe=4096"),
])
def test_gpu_limits(k: int, nprobe: int | None, problem: str | None) -> None:
    found = gpu.gpu_limit_problem(k, nprobe)
    assert found is None if problem is None else problem in found


@pytest.fixture()
def gpu_index_dir(tmp_path: Path) -> Path:
    build_index(virtual_source(3_000), FakeEmbedder(dim=32), tmp_path / "idx", device="cuda",
                exact_threshold=1_000, progress=False)
    return tmp_path / "idx"


@needs_gpu
def test_gpu_search_matches_cpu_search(gpu_index_dir: Path) -> None:
    queries = FakeEmbedder(dim=32).vectors_of([{"row": n} for n in range(0, 3_000, 97)])
    _, on_gpu = open_index(gpu_index_dir, device="cuda").search_vectors(queries, k=10)
    _, on_cpu = open_index(gpu_index_dir, device="cpu").search_vectors(queries, k=10)
    assert np.array_equal(on_gpu[:, 0], np.arange(0, 3_000, 97))
    assert np.mean(on_gpu == on_cpu) > 0.95


@needs_gpu
def test_gpu_build_saves_a_cpu_index_with_a_float16_decision(gpu_index_dir: Path) -> None:
    manifest_index = faiss.read_index(str(next(gpu_index_dir.glob("index.*.faiss"))))
    assert faiss.try_extract_index_ivf(manifest_index) is not None  # a CPU type, readable here
    assert isinstance(open_index(gpu_index_dir).manifest.tuned["gpu_float16"], bool)


@needs_gpu
def test_k_above_the_gpu_limit_falls_back_to_cpu(gpu_index_dir: Path, caplog: pytest.LogCaptureFixture
                                                  ) -> None:
    index = open_index(gpu_index_dir, device="cuda")
    with caplog.at_level(logging.WARNING, logger="indexer"):
        _, ids = index.search_vectors(FakeEmbedder(dim=32).vectors_of([{"row": 1}]), k=2049)
    assert any(r.levelno == logging.WARNING and "k=2049" in r.getMessage() for r in caplog.records)
    assert ids[0, 0] == 1
