"""Engines without Ray: the in-process engine, choosing an engine, and the resumable stores
(index shards, benchmark vector files) fed by an engine that finishes jobs out of order and can
stop half way, as a Ray run that is killed does."""

from __future__ import annotations

import pickle
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from fake_embedder import FakeRemote
from fake_engine import Backwards
from fakes import FakeEmbedder, SimulatedCrash, virtual_source, write_pngs

from benchmark.commands.bench_map import _remotes
from benchmark.commands.main import main
from benchmark.evaluate import Method
from benchmark.vector_cache import STREAM_BATCH, embed_items
from indexer.cluster.choice import open_engine
from indexer.cluster.embedding import RemoteEmbedder
from indexer.cluster.engine import EngineError, LocalEngine
from indexer.shards import ShardJobs, embed_in_shards
from retrieval.embed import load_embedder
from retrieval.model import BlurAwareNet, save_checkpoint


def test_local_engine_builds_one_worker_and_answers_in_order():
    built = []

    def make_worker():
        built.append(1)
        return lambda job: job * 10

    assert list(LocalEngine().map_unordered(make_worker, [1, 2, 3])) == [(0, 10), (1, 20), (2, 30)]
    assert built == [1]
    assert list(LocalEngine().map_unordered(make_worker, [])) == [] and built == [1]


def test_open_engine_refuses_what_it_cannot_do():
    assert isinstance(open_engine("local"), LocalEngine)
    with pytest.raises(EngineError, match="--address 10.0.0.1:6379 needs --engine ray"):
        open_engine("local", address="10.0.0.1:6379")
    with pytest.raises(EngineError, match="unknown engine 'spark'"):
        open_engine("spark")


def test_a_remote_model_with_other_weights_refuses_to_embed(tmp_path):
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "net", BlurAwareNet("test_byobnet", embedding_dim=16).eval(),
                    {"image_size": [32, 48]})
    fingerprint = load_embedder(str(tmp_path / "net"), device="cpu").fingerprint
    remote = RemoteEmbedder(str(tmp_path / "net"), fingerprint, "cpu", 4)
    assert pickle.loads(pickle.dumps(remote)) == remote
    assert remote.load().fingerprint == fingerprint
    with pytest.raises(EngineError, match=f"is model {fingerprint}, not 0123abcd as on the driver"):
        RemoteEmbedder(str(tmp_path / "net"), "0123abcd", "cpu", 4).load()


def test_a_remote_engine_needs_a_picklable_factory(tmp_path):
    with pytest.raises(ValueError, match="needs a picklable embedder factory"):
        embed_in_shards(["a"], FakeEmbedder(), tmp_path, 2, progress=False, engine=Backwards())


def test_shards_finished_out_of_order_give_the_local_arrays(tmp_path):
    files = [str(p) for p in write_pngs(tmp_path / "img", 7)]
    (tmp_path / "img" / "bad.png").write_bytes(b"not a png")
    items = files[:3] + [str(tmp_path / "img" / "bad.png")] + files[3:]
    local = embed_in_shards(items, FakeEmbedder(), tmp_path / "local", 3, progress=False)
    remote = embed_in_shards(items, FakeEmbedder(), tmp_path / "remote", 3, progress=False,
                             engine=Backwards(), remote=FakeRemote())
    np.testing.assert_array_equal(remote.vectors, local.vectors)
    np.testing.assert_array_equal(remote.ordinals, local.ordinals)
    assert remote.errors == local.errors and remote.errors[0][0] == 3


def test_a_killed_driver_resumes_without_redoing_saved_shards(tmp_path):
    items = [{"row": i} for i in range(10)]  # shards of 3: [0-2] [3-5] [6-8] [9]
    with pytest.raises(SimulatedCrash):
        embed_in_shards(items, FakeEmbedder(), tmp_path, 3, progress=False,
                        engine=Backwards(stop_after=2), remote=FakeRemote())
    saved = sorted(path.name for path in tmp_path.rglob("shard-*.npz"))
    assert saved == ["shard-00002.npz", "shard-00003.npz"]  # the last two, run first
    engine = Backwards()
    resumed = embed_in_shards(items, FakeEmbedder(), tmp_path, 3, progress=False, engine=engine,
                              remote=FakeRemote())
    assert engine.jobs_run == 2  # only shards 0 and 1 again
    np.testing.assert_array_equal(resumed.vectors, FakeEmbedder().vectors_of(items))


def test_benchmark_vectors_resume_after_out_of_order_batches(tmp_path):
    count = 3 * STREAM_BATCH + 5  # four batches, the last short
    items = virtual_source(count).items
    embedders = {"fake": FakeEmbedder()}
    key = "items-v1"
    with pytest.raises(SimulatedCrash):
        embed_items(items, embedders, tmp_path, key, progress=False,
                    engine=Backwards(stop_after=1), remotes={"fake": FakeRemote()})
    engine = Backwards(stop_after=None)
    files = embed_items(items, embedders, tmp_path, key, progress=False, engine=engine,
                        remotes={"fake": FakeRemote()})
    assert engine.jobs_run == 4  # the crash came before any save: every batch again
    np.testing.assert_array_equal(files["fake"].vectors, FakeEmbedder().vectors_of(items))
    assert files["fake"].done == count and files["fake"].batches == set()


def test_benchmark_vectors_saved_per_batch_are_reused(tmp_path, monkeypatch):
    monkeypatch.setattr("benchmark.vector_cache.SAVE_EVERY_S", -1.0)  # save after every batch
    count = 3 * STREAM_BATCH + 5
    items = virtual_source(count).items
    embedders = {"fake": FakeEmbedder()}
    with pytest.raises(SimulatedCrash):
        embed_items(items, embedders, tmp_path, "k", progress=False,
                    engine=Backwards(stop_after=2), remotes={"fake": FakeRemote()})
    engine = Backwards()
    files = embed_items(items, embedders, tmp_path, "k", progress=False, engine=engine,
                        remotes={"fake": FakeRemote()})
    assert engine.jobs_run == 2  # batches 3 and 2 were saved; 1 and 0 are embedded again
    np.testing.assert_array_equal(files["fake"].vectors, FakeEmbedder().vectors_of(items))
    local = embed_items(items, embedders, tmp_path / "local", "k", progress=False, workers=0)
    np.testing.assert_array_equal(files["fake"].vectors, local["fake"].vectors)


def test_a_local_run_after_an_interrupted_remote_one_embeds_past_the_prefix(tmp_path, monkeypatch):
    monkeypatch.setattr("benchmark.vector_cache.SAVE_EVERY_S", -1.0)
    count = 2 * STREAM_BATCH
    items = virtual_source(count).items
    with pytest.raises(SimulatedCrash):  # batch 1 is saved, batch 0 is not
        embed_items(items, {"fake": FakeEmbedder()}, tmp_path, "k", progress=False,
                    engine=Backwards(stop_after=1), remotes={"fake": FakeRemote()})
    embedder = FakeEmbedder()
    files = embed_items(items, {"fake": embedder}, tmp_path, "k", progress=False, workers=0)
    assert embedder.items_embedded == count  # this process resumes at the prefix only
    np.testing.assert_array_equal(files["fake"].vectors, FakeEmbedder().vectors_of(items))


def test_without_ray_installed_the_engine_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(EngineError, match=r"--engine ray needs Ray: pip install 'blur-retrieval\[ray\]'"):
        open_engine("ray")


@pytest.mark.parametrize("options, message", [
    (["--engine-workers", "2"], "--engine-workers needs --engine ray"),
    (["--address", "10.0.0.1:6379"], "--address 10.0.0.1:6379 needs --engine ray"),
])
def test_ray_options_without_the_ray_engine_are_usage_errors(tmp_path, options, message):
    write_pngs(tmp_path / "img", 2)
    result = CliRunner().invoke(main, ["index", "build", str(tmp_path / "img"), "--out",
                                       str(tmp_path / "index"), "--model", "blur-aware",
                                       "--device", "cpu", "-q", *options])
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "index").exists()


def test_bench_map_refuses_loader_workers_with_the_ray_engine(tmp_path):
    result = CliRunner().invoke(main, ["bench", "map", "--preset", "tiny", "--engine", "ray",
                                       "--workers", "2", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "with --engine ray, give --engine-workers" in result.output
    assert not (tmp_path / "out" / "report.json").exists()


def test_bench_map_workers_resolve_an_auto_device_on_their_own_hosts():
    # The driver resolves "auto" for itself (cpu here); a remote worker on a GPU node must not
    # inherit that, so its model spec carries what the user asked for.
    method = Method("blur-aware", FakeEmbedder())
    config = {"device": "cpu", "batch_size": 8, "engine": {"device": "auto"}}
    remotes = _remotes([method], config, Backwards())
    assert remotes["blur-aware"].device == "auto" and remotes["blur-aware"].batch_size == 8
    assert _remotes([method], config, LocalEngine()) is None


def test_a_refused_join_names_rays_token_authentication(monkeypatch):
    from indexer.cluster.ray_engine import _token_hint

    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    assert "RAY_AUTH_MODE=token" in _token_hint("10.0.0.1:6379")
    assert _token_hint(None) == ""  # a local cluster of our own needs no token
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    assert _token_hint("10.0.0.1:6379") == ""  # already asked for: the hint would mislead


def test_shard_jobs_list_a_shards_items_only_when_asked():
    class Counting(list):
        slices = 0

        def __getitem__(self, key):
            if isinstance(key, slice):
                Counting.slices += 1
            return super().__getitem__(key)

    items = Counting(range(10))
    jobs = ShardJobs(items, [(0, 4), (8, 10)])
    assert len(jobs) == 2 and Counting.slices == 0  # nothing listed up front
    assert jobs[1] == [8, 9] and Counting.slices == 1
    assert list(jobs) == [[0, 1, 2, 3], [8, 9]]
    with pytest.raises(IndexError):
        jobs[2]
