"""`--engine ray --address` on a cluster of two Ray nodes (two raylets, each with its own object
store and one CPU, started on this machine the way `ray start` starts them on two): the workers
land on both nodes and the vectors are still those of this process. Machines apart are not
tested; what differs there is the network and the files each machine must have (README)."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from fake_embedder import FakeEmbedder, FakeRemote, NodeOfWorker

from indexer.shards import embed_in_shards

ray = pytest.importorskip("ray")

from ray.cluster_utils import Cluster  # noqa: E402 - needs Ray, skipped above

from indexer.cluster.ray_engine import RayEngine  # noqa: E402


@pytest.fixture(scope="module")
def two_nodes():
    """A head node and one more, one CPU each. A joined cluster has its own environment, so the
    nodes are started with this process's import path: their workers unpickle the test fakes."""
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(path for path in sys.path if path)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        cluster.shutdown()
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


def test_workers_spread_over_both_nodes_and_store_the_local_vectors(tmp_path, two_nodes):
    engine = RayEngine(address=two_nodes.address, workers=2)
    try:
        assert engine.cpus_per_worker == 1.0  # so the two workers cannot share a node
        nodes = {node for _, node in engine.map_unordered(NodeOfWorker(), list(range(4)))}
        alive = {node["NodeID"] for node in ray.nodes() if node["Alive"]}
        assert len(alive) == 2 and nodes == alive
        items = [{"row": i} for i in range(9)]
        local = embed_in_shards(items, FakeEmbedder(), tmp_path / "local", 2, progress=False)
        remote = embed_in_shards(items, FakeEmbedder(), tmp_path / "ray", 2, progress=False,
                                 engine=engine, remote=FakeRemote())
        np.testing.assert_array_equal(remote.vectors, local.vectors)
        np.testing.assert_array_equal(remote.ordinals, local.ordinals)
    finally:
        engine.close()
