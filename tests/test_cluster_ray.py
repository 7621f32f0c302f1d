"""`--engine ray` on a local two-worker Ray cluster: the same ids and vectors as this process
(to 1e-5 with a real network), a worker process killed mid-job, and the commands end to end."""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from fake_embedder import CannotLoad, DiesOnce, FakeEmbedder, FakeRemote
from fakes import random_unit_vectors, write_pngs

from benchmark.commands.main import main
from indexer.factory import create_index
from indexer.index import open_index
from indexer.parallel_add import add_in_parts
from indexer.shards import embed_in_shards
from retrieval.model import BlurAwareNet, save_checkpoint

ray = pytest.importorskip("ray")

from indexer.cluster.ray_engine import RayEngine  # noqa: E402 - needs Ray, skipped above

WORKERS = ["--engine", "ray", "--engine-workers", "2"]


@pytest.fixture(scope="module")
def cluster():
    """One local cluster for the whole module (starting one takes seconds): the engines and the
    commands below join it instead of starting their own. It starts no worker itself."""
    starter = RayEngine(workers=1)
    yield
    starter.close()


@pytest.fixture
def engine(cluster):
    """Two workers, stopped after the test so the commands' own workers find free CPUs."""
    joined = RayEngine(workers=2)
    yield joined
    joined.close()


@pytest.fixture(scope="module")
def tiny_net(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("net") / "net"
    net = BlurAwareNet("test_byobnet", embedding_dim=16, blur_head=True, loc_head=True)
    save_checkpoint(folder, net.eval(), {"image_size": [32, 48]})
    return folder


def test_ray_shards_equal_the_local_ones(tmp_path, engine):
    items = [str(p) for p in write_pngs(tmp_path / "img", 9)] + [str(tmp_path / "missing.png")]
    local = embed_in_shards(items, FakeEmbedder(), tmp_path / "local", 2, progress=False)
    remote = embed_in_shards(items, FakeEmbedder(), tmp_path / "ray", 2, progress=False,
                             engine=engine, remote=FakeRemote())
    np.testing.assert_array_equal(remote.vectors, local.vectors)
    np.testing.assert_array_equal(remote.ordinals, local.ordinals)
    assert remote.errors == local.errors and [i for i, _ in remote.errors] == [9]


def test_a_killed_worker_is_replaced_and_its_job_run_again(tmp_path, engine):
    items = [{"row": i} for i in range(8)]
    marker = tmp_path / "died"
    result = embed_in_shards(items, FakeEmbedder(), tmp_path / "build", 2, progress=False,
                             engine=engine, remote=DiesOnce(marker))
    assert marker.exists()  # a worker process really died
    np.testing.assert_array_equal(result.vectors, FakeEmbedder().vectors_of(items))


def test_a_worker_that_cannot_load_the_model_raises_its_own_error(tmp_path, engine):
    with pytest.raises(FileNotFoundError, match="no checkpoint at /models/net on this host"):
        embed_in_shards([{"row": i} for i in range(6)], FakeEmbedder(), tmp_path, 2,
                        progress=False, engine=engine, remote=CannotLoad())
    assert not list(tmp_path.rglob("shard-*.npz"))
    again = embed_in_shards([{"row": 0}], FakeEmbedder(), tmp_path, 2, progress=False,
                            engine=engine, remote=FakeRemote())  # the workers serve on
    np.testing.assert_array_equal(again.vectors, FakeEmbedder().vectors_of([{"row": 0}]))


def test_index_build_and_add_on_ray_store_the_local_vectors(tmp_path, cluster, tiny_net):
    paths = write_pngs(tmp_path / "img", 10)
    for folder in ("first", "second"):
        (tmp_path / folder).mkdir()
    for i, path in enumerate(paths):
        path.rename(tmp_path / ("first" if i < 6 else "second") / path.name)
    runner = CliRunner()
    for name, extra in (("local", []), ("ray", WORKERS)):
        out = tmp_path / name
        common = ["--model", str(tiny_net), "--device", "cpu", "-q", *extra]
        built = runner.invoke(main, ["index", "build", str(tmp_path / "first"), "--out", str(out),
                                     "--shard-size", "2", *common])
        assert built.exit_code == 0, built.output
        added = runner.invoke(main, ["index", "add", str(out), str(tmp_path / "second"), *common])
        assert added.exit_code == 0, added.output
    local, remote = (open_index(tmp_path / name, mmap=True, device="cpu") for name in ("local", "ray"))
    assert remote.count == local.count == 10
    assert remote.metadata.column("path").to_pylist() == local.metadata.column("path").to_pylist()
    ids = list(range(10))
    np.testing.assert_allclose(remote.stored_vectors(ids), local.stored_vectors(ids), atol=1e-5)


def test_bench_map_on_ray_gives_the_local_scores(tmp_path, cluster, tiny_net):
    reports = {}
    for name, extra in (("local", ["--workers", "0"]), ("ray", WORKERS)):
        out = tmp_path / name
        result = CliRunner().invoke(main, [
            "bench", "map", "--preset", "tiny", "--distractors", "300", "--methods", str(tiny_net),
            "--factory", "exact", "--device", "cpu", "--out", str(out), "-q", *extra])
        assert result.exit_code == 0, result.output
        reports[name] = json.loads((out / "report.json").read_text())
        vectors = list((out / ".cache").glob("*.npy"))
        assert len(vectors) == 1
        reports[name]["vectors"] = np.load(vectors[0])
    np.testing.assert_allclose(reports["ray"]["vectors"], reports["local"]["vectors"], atol=1e-5)
    local, remote = (reports[name]["results"] for name in ("local", "ray"))
    assert json.dumps(remote, sort_keys=True) == json.dumps(local, sort_keys=True)
    assert reports["ray"]["config"]["engine"] == {"name": "ray", "address": None, "workers": 2,
                                                  "device": "cpu"}


def test_an_ivf_index_filled_in_parts_on_ray_equals_one_add(engine):
    vectors = random_unit_vectors(2_000, 16, seed=3)
    ids = np.arange(2_000, dtype=np.int64) * 5
    index, _ = create_index("IVF8,PQ4x4fs,RFlat", 16)
    index.train(vectors)
    whole = faiss.deserialize_index(faiss.serialize_index(index))
    whole.add_with_ids(vectors, ids)
    filled = add_in_parts(index, vectors, ids, engine, part_size=300)
    for built in (whole, filled):
        faiss.extract_index_ivf(built).nprobe = 4
    queries = vectors[:20]
    np.testing.assert_array_equal(filled.search(queries, 30)[1], whole.search(queries, 30)[1])
