"""Filling an IVF index in parts on an engine's workers and merging them: the index one
`add_with_ids` builds, whatever order the parts finish in."""

from __future__ import annotations

import json
import pickle

import faiss
import numpy as np
import pytest
from click.testing import CliRunner
from fake_engine import Backwards
from fakes import random_unit_vectors

from benchmark.commands.bench import bench
from indexer import build
from indexer.build import build_faiss_index
from indexer.cluster.engine import LocalEngine
from indexer.factory import create_index
from indexer.parallel_add import (
    MergeLayoutError,
    PartEncoder,
    add_in_parts,
    can_add_in_parts,
    merge_part,
)

DIM = 16
COUNT = 3_000
LAYOUTS = ["IVF8,PQ4x4fs,RFlat", "IVF8,PQ4x4fs,Refine(SQ8)", "IVF8,Flat", "IVF8,PQ4x4fs",
           "IVF8,SQ8", "IDMap2,IVF8,Flat"]


def trained(factory: str) -> tuple[faiss.Index, np.ndarray, np.ndarray]:
    vectors = random_unit_vectors(COUNT, DIM, seed=11)
    index, _ = create_index(factory, DIM)
    index.train(vectors)
    return index, vectors, np.arange(COUNT, dtype=np.int64) * 7 + 3  # ids are not positions


def searched(index: faiss.Index, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    faiss.extract_index_ivf(index).nprobe = 3
    return index.search(queries, 25)


@pytest.mark.parametrize("factory", LAYOUTS)
@pytest.mark.parametrize("engine", [LocalEngine, Backwards], ids=["in-order", "out-of-order"])
def test_parts_merge_into_the_index_one_add_builds(factory, engine):
    index, vectors, ids = trained(factory)
    whole = faiss.deserialize_index(faiss.serialize_index(index))
    whole.add_with_ids(vectors, ids)
    filled = add_in_parts(index, vectors, ids, engine(), part_size=700)  # 5 parts, the last short
    assert filled.ntotal == COUNT
    top = faiss.downcast_index(filled)
    if isinstance(top, faiss.IndexIDMap2):
        top.check_consistency()  # its id -> position lookup was rebuilt after the last part
    queries = random_unit_vectors(40, DIM, seed=12)
    expected_scores, expected_ids = searched(whole, queries)
    scores, found = searched(filled, queries)
    np.testing.assert_array_equal(found, expected_ids)
    np.testing.assert_array_equal(scores, expected_scores)
    reloaded = faiss.deserialize_index(faiss.serialize_index(filled))
    np.testing.assert_array_equal(searched(reloaded, queries)[1], expected_ids)
    assert set(reloaded.search(vectors[:5], 1)[1][:, 0]) <= set(ids.tolist())


def test_the_part_encoder_survives_pickling_as_remote_engines_ship_it():
    index, vectors, ids = trained(LAYOUTS[0])
    encode = pickle.loads(pickle.dumps(PartEncoder(index)))()
    part = faiss.deserialize_index(encode((vectors[:100], ids[:100])))
    assert part.ntotal == 100 and index.ntotal == 0


def test_a_build_on_a_remote_engine_adds_in_parts_and_gives_the_same_index(monkeypatch):
    _, vectors, ids = trained(LAYOUTS[0])
    monkeypatch.setattr(build, "PART_SIZE", 1_000)
    engine = Backwards()
    parts = build_faiss_index(vectors, ids, LAYOUTS[0], progress=False, engine=engine)
    assert engine.jobs_run == 3
    alone = build_faiss_index(vectors, ids, LAYOUTS[0], progress=False)
    assert parts.tuned == alone.tuned
    queries = random_unit_vectors(30, DIM, seed=13)
    np.testing.assert_array_equal(parts.index.search(queries, 25)[1],
                                  alone.index.search(queries, 25)[1])


def test_exact_and_graph_indexes_are_added_whole(monkeypatch):
    vectors = random_unit_vectors(COUNT, DIM, seed=11)
    monkeypatch.setattr(build, "PART_SIZE", 1_000)
    for factory in ("IDMap2,Flat", "IDMap2,HNSW8"):
        index, _ = create_index(factory, DIM)
        assert not can_add_in_parts(index)
        engine = Backwards()
        built = build_faiss_index(vectors, np.arange(COUNT), factory, progress=False,
                                  engine=engine)
        assert engine.jobs_run == 0 and built.index.ntotal == COUNT


def test_bad_merges_are_refused():
    flat, _ = create_index("IDMap2,Flat", DIM)
    ivf, vectors, ids = trained(LAYOUTS[2])
    with pytest.raises(MergeLayoutError, match="IndexFlat"):
        merge_part(flat, ivf)
    refined, _, _ = trained(LAYOUTS[0])
    with pytest.raises(MergeLayoutError, match="layout differs"):
        merge_part(ivf, refined)
    ivf.add_with_ids(vectors[:10], ids[:10])
    with pytest.raises(ValueError, match="must be empty"):
        add_in_parts(ivf, vectors, ids, LocalEngine())


def test_bench_index_records_its_engine_and_refuses_ray_options_without_ray(tmp_path):
    report = tmp_path / "report.json"
    arguments = ["index", "--n", "2000", "--dim", "16", "--queries", "10", "--k", "10",
                 "--brute-force-queries", "0", "--factory", "IVF8,PQ4x4fs,RFlat", "-q"]
    result = CliRunner().invoke(bench, [*arguments, "--json", str(report)])
    assert result.exit_code == 0, result.output
    assert json.loads(report.read_text())["config"]["engine"] == "local"
    refused = CliRunner().invoke(bench, [*arguments, "--engine-workers", "2"])
    assert refused.exit_code == 2 and "--engine ray" in refused.output
