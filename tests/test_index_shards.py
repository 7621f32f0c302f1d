"""Resumable sharded embedding: restarts skip finished shards and give identical arrays."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from fakes import FakeEmbedder, FakeEmbedResult, SimulatedCrash

from indexer.shards import build_key, embed_in_shards, shard_path

ITEMS = [{"row": n} for n in range(23)] + ["/no/such/file.png"] + [{"row": 99}]


def _assert_same(a, b) -> None:
    assert a.vectors.tobytes() == b.vectors.tobytes()
    assert a.ordinals.tolist() == b.ordinals.tolist()
    assert a.errors == b.errors


def test_interrupted_run_resumes_from_finished_shards(tmp_path: Path) -> None:
    straight = embed_in_shards(ITEMS, FakeEmbedder(), tmp_path / "a", shard_size=5,
                               progress=False)
    with pytest.raises(SimulatedCrash):
        embed_in_shards(ITEMS, FakeEmbedder(crash_on_call=4), tmp_path / "b", shard_size=5,
                        progress=False)
    resumed_embedder = FakeEmbedder()
    resumed = embed_in_shards(ITEMS, resumed_embedder, tmp_path / "b", shard_size=5,
                              progress=False)
    assert resumed_embedder.calls == 2, "shards 0-2 were finished, only 3 and 4 remain"
    _assert_same(straight, resumed)


def test_result_lists_vectors_in_item_order_with_per_item_errors(tmp_path: Path) -> None:
    embedder = FakeEmbedder()
    result = embed_in_shards(ITEMS, embedder, tmp_path, shard_size=4, progress=False)
    assert result.ordinals.tolist() == [*range(23), 24]
    assert [position for position, _ in result.errors] == [23]
    assert result.errors[0][1].startswith("/no/such/file.png: ")
    expected = embedder.vectors_of([ITEMS[i] for i in result.ordinals])
    np.testing.assert_array_equal(result.vectors, expected)


def test_unreadable_shard_is_embedded_again(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    embedder = FakeEmbedder()
    first = embed_in_shards(ITEMS, embedder, tmp_path, shard_size=10, progress=False)
    broken = shard_path(tmp_path / build_key(ITEMS, embedder, 10), 1)
    broken.write_bytes(b"truncated")
    again = FakeEmbedder()
    with caplog.at_level(logging.WARNING, logger="indexer"):
        second = embed_in_shards(ITEMS, again, tmp_path, shard_size=10, progress=False)
    (record,) = caplog.records
    assert record.levelno == logging.WARNING and "shard-00001.npz" in record.getMessage()
    assert again.calls == 1
    _assert_same(first, second)


def test_other_model_or_shard_size_never_reuses_shards(tmp_path: Path) -> None:
    embed_in_shards(ITEMS, FakeEmbedder(), tmp_path, shard_size=10, progress=False)
    other = FakeEmbedder(fingerprint="other")
    embed_in_shards(ITEMS, other, tmp_path, shard_size=10, progress=False)
    assert other.calls == 3
    resized = FakeEmbedder()
    embed_in_shards(ITEMS, resized, tmp_path, shard_size=9, progress=False)
    assert resized.calls == 3


def test_embedder_breaking_its_contract_is_caught(tmp_path: Path) -> None:
    class Forgetful(FakeEmbedder):
        def embed(self, items, progress=False):
            full = super().embed(items, progress)
            return FakeEmbedResult(full.vectors[1:], full.ok[1:], full.errors)

    with pytest.raises(ValueError, match="exactly once"):
        embed_in_shards(ITEMS[:3], Forgetful(), tmp_path, progress=False)


def test_shard_size_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="shard_size"):
        embed_in_shards(ITEMS, FakeEmbedder(), tmp_path, shard_size=0)
