"""The dense cache in parts: a write holds one part, an interrupted run keeps its finished parts,
parts of other checkpoints and the single file of earlier versions are read and cleaned as the
format says. Tiny untrained networks (tests/fakes.py)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from fakes import MODELS, OTHER_DENSE, FakeEmbedder, tiny_reranker, write_pngs
from safetensors.numpy import save_file

from benchmark.commands import index as cli
from benchmark.commands import index_rerank as rerank_cli
from indexer.rerank import cache as dense_cache
from indexer.rerank.cache import DenseCacheError, cache_info, cache_parts, open_cache, read_cache, write_cache
from indexer.rerank.parts import LEGACY_NAME, Part, pack, write_part
from retrieval.rerank.reranker import Reranker
from retrieval.rerank.verify import DenseView, RerankParams


@pytest.fixture(scope="module")
def reranker() -> Reranker:
    return tiny_reranker(RerankParams(weight=2, cap=100))


@pytest.fixture(autouse=True)
def tiny_models(monkeypatch: pytest.MonkeyPatch, reranker: Reranker) -> None:
    monkeypatch.setattr(cli, "load_embedder", lambda *args: FakeEmbedder())
    monkeypatch.setattr(rerank_cli, "load_reranker", lambda *args: (reranker, MODELS))


def _index(folder: Path, *extra: str, images: int = 6) -> Path:
    write_pngs(folder / "db", images)
    result = CliRunner().invoke(cli.index_group, ["build", str(folder / "db"), "--out",
                                                  str(folder / "idx"), "-q", *extra])
    assert result.exit_code == 0, result.output
    return folder / "idx"


def _dense(index_dir: Path) -> Result:
    return CliRunner().invoke(cli.index_group, ["dense", str(index_dir), "-q"])


def _assert_same(made: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    """Same arrays; floats (descriptors, points, cell sizes) to float32 rounding, since the
    networks' CPU kernels may differ in their last bits with the batch size (seen on one machine,
    not on another)."""
    assert made.keys() == expected.keys()
    for name in expected:
        assert made[name].dtype == expected[name].dtype and made[name].shape == expected[name].shape, name
        if np.issubdtype(expected[name].dtype, np.floating):
            np.testing.assert_allclose(made[name], expected[name], rtol=1e-5, atol=1e-5, err_msg=name)
        else:
            assert np.array_equal(made[name], expected[name]), name


def _rows(arrays: dict[str, np.ndarray], position: int) -> np.ndarray:
    return arrays["descriptors"][arrays["offsets"][position]:arrays["offsets"][position + 1]]


def _count_calls(monkeypatch: pytest.MonkeyPatch, reranker: Reranker, stop_at: int | None = None
                 ) -> list[int]:
    """Every describe_items call's item count, from now on; Ctrl-C during call `stop_at` (once)."""
    real = reranker.describe_items
    calls: list[int] = []

    def describe(items: list, threads: int = 1) -> tuple:
        calls.append(len(items))
        if len(calls) == stop_at:
            raise KeyboardInterrupt
        return real(items, threads)

    monkeypatch.setattr(reranker, "describe_items", describe)
    return calls


def _views(count: int, seed: int = 0) -> list[DenseView]:
    rng = np.random.default_rng(seed)
    return [DenseView(rng.standard_normal((3 + n % 4, 8)).astype(np.float32),
                      rng.random((3 + n % 4, 2)).astype(np.float32), 1.0 + n) for n in range(count)]


def _part_sizes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of views of every part written from now on."""
    real: Callable = dense_cache.write_part
    sizes: list[int] = []

    def write(path: Path, models: object, arrays: dict[str, np.ndarray]) -> None:
        sizes.append(len(arrays["ids"]))
        real(path, models, arrays)

    monkeypatch.setattr(dense_cache, "write_part", write)
    return sizes


def test_build_dense_writes_parts_that_read_back_as_the_one_part_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    whole = _index(tmp_path / "whole", "--dense")
    monkeypatch.setattr(dense_cache, "PART_VIEWS", 2)
    split = _index(tmp_path / "split", "--dense")
    assert len(cache_parts(whole)) == 1
    assert [path.name for path in cache_parts(split)] == [f"dense_views.{n:05d}.safetensors"
                                                          for n in range(3)]
    assert [Part(path).ids.tolist() for path in cache_parts(split)] == [[0, 1], [2, 3], [4, 5]]
    _assert_same(open_cache(split).arrays(), open_cache(whole).arrays())
    size = sum(path.stat().st_size for path in cache_parts(split))
    assert (cache_info(split).views, cache_info(split).bytes) == (6, size)


def test_an_interrupted_index_dense_keeps_its_finished_parts_and_resumes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reranker: Reranker) -> None:
    complete = open_cache(_index(tmp_path / "whole", "--dense")).arrays()
    monkeypatch.setattr(dense_cache, "PART_VIEWS", 2)
    index_dir = _index(tmp_path / "split")
    calls = _count_calls(monkeypatch, reranker, stop_at=3)
    stopped = _dense(index_dir)
    assert stopped.exit_code != 0 and calls == [2, 2, 2]
    assert len(cache_parts(index_dir)) == 2
    finished = read_cache(index_dir, MODELS)
    assert finished.ids.tolist() == [0, 1, 2, 3]
    for image_id in range(4):  # to float32 rounding, as in _assert_same
        np.testing.assert_allclose(finished.get(image_id).descriptors, _rows(complete, image_id),
                                   rtol=1e-5, atol=1e-5)
    resumed = _dense(index_dir)
    assert resumed.exit_code == 0 and "4 views kept, 2 images to describe" in resumed.stdout
    assert calls[3:] == [2], "only the images without a view are described"
    _assert_same(open_cache(index_dir).arrays(), complete)


def test_parts_of_other_checkpoints_before_the_newest_are_ignored_then_removed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reranker: Reranker,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(dense_cache, "PART_VIEWS", 2)
    index_dir = _index(tmp_path, "--dense")
    complete, first_parts = open_cache(index_dir).arrays(), cache_parts(index_dir)
    monkeypatch.setattr(rerank_cli, "load_reranker", lambda *args: (reranker, OTHER_DENSE))
    _count_calls(monkeypatch, reranker, stop_at=2)
    assert _dense(index_dir).exit_code != 0, "one part of the other checkpoints, then stopped"
    assert len(cache_parts(index_dir)) == 4
    cache = open_cache(index_dir)
    assert cache.models == OTHER_DENSE and cache.ids.tolist() == [0, 1]
    with caplog.at_level(logging.WARNING):
        assert read_cache(index_dir, MODELS) is None
    assert "ignored" in caplog.text
    assert read_cache(index_dir, OTHER_DENSE).ids.tolist() == [0, 1]
    resumed = _dense(index_dir)
    assert resumed.exit_code == 0 and "2 views kept, 4 images to describe" in resumed.stdout
    assert not set(first_parts) & set(cache_parts(index_dir))
    assert {Part(path).models for path in cache_parts(index_dir)} == {OTHER_DENSE}
    _assert_same(open_cache(index_dir).arrays(), complete)  # the same network made both


def test_the_single_file_of_earlier_versions_is_read_then_folded_into_parts(tmp_path: Path) -> None:
    index_dir = _index(tmp_path, "--dense")
    complete = open_cache(index_dir).arrays()
    (part,) = cache_parts(index_dir)
    part.unlink()
    legacy = index_dir / LEGACY_NAME
    save_file(complete, str(legacy), metadata={
        "format": "1", "dense": MODELS.dense, "locator": MODELS.locator,
        "dense_sha256": MODELS.dense_sha256, "locator_fingerprint": MODELS.locator_fingerprint})
    assert cache_parts(index_dir) == [legacy]
    _assert_same(open_cache(index_dir).arrays(), complete)
    assert "6 views kept, 0 images to describe" in _dense(index_dir).stdout
    runner = CliRunner()
    assert runner.invoke(cli.index_group, ["remove", str(index_dir), "--id", "1"]).exit_code == 0
    write_pngs(tmp_path / "more", 1, seed=9)
    added = runner.invoke(cli.index_group, ["add", str(index_dir), str(tmp_path / "more"), "-q"])
    assert added.exit_code == 0 and "dense cache: 6 views" in added.stdout, "5 kept, 1 added"
    assert not legacy.exists() and len(cache_parts(index_dir)) == 2
    cache = open_cache(index_dir)
    assert cache.ids.tolist() == [0, 2, 3, 4, 5, 6]
    for image_id in (0, 2, 3, 4, 5):
        assert np.array_equal(cache.get(image_id).descriptors, _rows(complete, image_id))


def test_a_write_holds_at_most_one_part_of_views(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 reranker: Reranker) -> None:
    monkeypatch.setattr(dense_cache, "PART_VIEWS", 3)
    sizes = _part_sizes(monkeypatch)
    calls = _count_calls(monkeypatch, reranker)
    index_dir = _index(tmp_path, "--dense", images=7)
    assert calls == [3, 3, 1] and sizes == [3, 3, 1]
    views = _views(10)
    for path in cache_parts(index_dir):
        path.unlink()
    legacy = index_dir / LEGACY_NAME  # an earlier version's cache: all 10 views in one file
    write_part(legacy, MODELS, pack(np.arange(10), views))
    sizes.clear()
    info = write_cache(index_dir, MODELS, [20], _views(1, seed=1), keep=range(1, 10))
    assert sizes == [1, 3, 3, 3], "the 9 views kept are rewritten a part at a time"
    assert info.views == 10 and not legacy.exists()
    cache = open_cache(index_dir)
    assert cache.ids.tolist() == [*range(1, 10), 20]
    for image_id in range(1, 10):
        assert np.array_equal(cache.get(image_id).descriptors, views[image_id].descriptors)
    parts = cache_parts(index_dir)
    with pytest.raises(DenseCacheError, match="two views"):
        write_cache(index_dir, MODELS, [1, 1], _views(2))
    assert cache_parts(index_dir) == parts, "nothing written"


def test_mirror_vectors_round_trip_and_are_kept_only_where_every_view_has_one(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    mirrored = [dataclasses.replace(view, mirror=rng.standard_normal(16).astype(np.float32))
                for view in _views(3)]
    write_part(tmp_path / "a.safetensors", MODELS, pack(np.arange(3), mirrored))
    part = Part(tmp_path / "a.safetensors")
    assert part.has_mirrors
    for position, view in enumerate(mirrored):
        assert np.array_equal(part.view(position).mirror, view.mirror)
    mixed = [*mirrored[:2], _views(1)[0]]
    assert "mirrors" not in pack(np.arange(3), mixed)
    write_part(tmp_path / "b.safetensors", MODELS, pack(np.arange(3), mixed))
    assert not Part(tmp_path / "b.safetensors").has_mirrors
    assert Part(tmp_path / "b.safetensors").view(0).mirror is None
    broken = pack(np.arange(3), mirrored)
    broken["mirrors"] = broken["mirrors"][:2]  # one view short
    write_part(tmp_path / "c.safetensors", MODELS, broken)
    with pytest.raises(DenseCacheError, match="c.safetensors.*inconsistent.*mirrors"):
        Part(tmp_path / "c.safetensors")


def test_a_write_deletes_the_temporaries_of_a_killed_part_write(tmp_path: Path) -> None:
    killed = tmp_path / ".dense_views.00002.safetensors.k2x9_abc.tmp"  # as atomic_path names it
    killed.write_bytes(b"half a part")
    (tmp_path / ".metadata.2.parquet.k2x9_abc.tmp").write_bytes(b"the index's own, not the cache's")
    write_cache(tmp_path, MODELS, [0, 1], _views(2))
    assert sorted(path.name for path in tmp_path.glob(".*.tmp")) == [".metadata.2.parquet.k2x9_abc.tmp"]
    assert open_cache(tmp_path).ids.tolist() == [0, 1]
