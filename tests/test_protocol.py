"""The benchmark set on a tiny synthesized data set, and evaluation with a fake embedder."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pyarrow.compute as pc
import pytest

from benchmark import vector_cache
from benchmark.evaluate import Method, evaluate
from benchmark.protocol import DISTRACTOR_LABEL, ProtocolError, load_benchmark_set
from benchmark.scoring import KNN_KEY
from benchmark.vector_cache import embed_items
from retrieval.manifest import MANIFEST_NAME, read_manifest, sim_config_of, write_manifest
from retrieval.sim.config import SimConfig
from retrieval.sim.layout import Preset, distractor_table, instance_split
from retrieval.synth import synthesize

# Instance 2 of categories 0 and 1 is a test instance; 3 trajectories = 1 query + 2 database.
MINI = Preset(categories=2, instances=3, trajectories=3, height=32, width=48, distractors=4)
TEST_INSTANCES = (2, 1_000_002)


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mini")
    synthesize(folder, MINI, SimConfig(height=32, width=48, seed=3), progress=False)
    return folder


@dataclass
class FakeResult:
    vectors: np.ndarray
    ok: np.ndarray
    errors: list[tuple[int, str]]


class InstanceEmbedder:
    """A vector per instance plus noise growing with exposure: blur hurts, deterministically."""

    def __init__(self, noise: float, name: str = "fake", fail_image_ids: tuple[int, ...] = (),
                 crash_on_call: int | None = None) -> None:
        self.noise, self.dim = noise, 8
        self.fingerprint, self.config = f"{name}-{noise}", {"noise": noise}
        self.fail_image_ids, self.crash_on_call = fail_image_ids, crash_on_call
        self.calls, self.embedded = 0, 0

    def embed(self, items, progress=False):
        self.calls += 1
        if self.calls == self.crash_on_call:
            raise RuntimeError("simulated crash")
        vectors, ok, errors = [], [], []
        for position, row in enumerate(items):
            if row.image_id in self.fail_image_ids:
                errors.append((position, f"image {row.image_id}: unreadable"))
                continue
            base = np.random.default_rng([row.category, row.instance]).standard_normal(self.dim)
            noise = np.random.default_rng([99, row.image_id]).standard_normal(self.dim)
            vector = base + self.noise * (row.exposure + 1) * noise
            vectors.append(vector / np.linalg.norm(vector))
            ok.append(position)
        self.embedded += len(ok)
        return FakeResult(np.array(vectors, np.float32).reshape(-1, self.dim),
                          np.array(ok, dtype=np.int64), errors)


def rewrite(source, target, edit):
    """Copy a manifest with `edit(columns)` applied to its columns (a dict of lists)."""
    table = read_manifest(source)
    columns = table.to_pydict()
    edit(columns)
    target.mkdir(parents=True, exist_ok=True)
    write_manifest(target / MANIFEST_NAME, columns, sim_config_of(table))
    return target


def test_queries_database_and_positives(mini):
    table = read_manifest(mini)
    bench = load_benchmark_set(mini)
    queries = table.filter(pc.equal(table["role"], "query"))
    np.testing.assert_array_equal(bench.queries.image_id, queries["image_id"].to_numpy())
    np.testing.assert_array_equal(bench.query_labels, queries["instance"].to_numpy())
    np.testing.assert_array_equal(bench.query_levels, queries["blur_level"].to_numpy())
    database = table.filter(pc.equal(table["role"], "database"))
    assert len(bench.database) == database.num_rows + MINI.distractors
    np.testing.assert_array_equal(bench.database_labels[: database.num_rows],
                                  database["instance"].to_numpy())
    assert (bench.database_labels[database.num_rows:] == DISTRACTOR_LABEL).all()
    assert (bench.positive_counts() == 2).all()  # two database trajectories per instance
    summary = bench.summary()
    assert summary["queries"] == queries.num_rows and summary["queries_without_positive"] == 0
    assert sum(summary["queries_by_level"].values()) == queries.num_rows
    levels, counts = np.unique(database["blur_level"].to_numpy(), return_counts=True)
    assert summary["database_by_level"] == dict(zip(levels.tolist(), counts.tolist()))


def test_split_rules_hold_on_the_synthesized_set(mini):
    bench = load_benchmark_set(mini)
    database = bench.database_labels != DISTRACTOR_LABEL
    query_keys = set(zip(bench.query_labels.tolist(), bench.queries.trajectory.tolist()))
    database_keys = set(zip(bench.database_labels[database].tolist(),
                            bench.database.trajectory[database].tolist()))
    assert query_keys and database_keys and not query_keys & database_keys
    assert set(bench.query_labels.tolist()) == set(TEST_INSTANCES)
    for row in bench.queries:
        assert instance_split(row.category, row.instance) == "test"
        assert row.path.is_file() and row.path.is_absolute()


def test_distractors_are_cut_or_topped_up_with_virtual_rows(mini):
    stored = load_benchmark_set(mini)
    assert stored.distractors == stored.manifest_distractors == MINI.distractors
    cut = load_benchmark_set(mini, distractors=2)
    assert (cut.manifest_distractors, cut.virtual_distractors) == (2, 0)
    np.testing.assert_array_equal(cut.database.image_id, stored.database.image_id[:-2])

    topped = load_benchmark_set(mini, distractors=10)
    assert (topped.manifest_distractors, topped.virtual_distractors) == (4, 6)
    virtual = [topped.database[i] for i in range(len(topped.database) - 6, len(topped.database))]
    assert all(row.path is None and row.sim is not None for row in virtual)
    assert min(row.image_id for row in virtual) > int(stored.database.image_id.max())
    # The manifest holds rows 0..3 of the seed's distractor table, so the top-up is rows 4..9.
    table = distractor_table(10, MINI.categories, 3, SimConfig().exposures)
    expected = list(zip(*(table[k][4:].tolist() for k in
                          ("category", "instance", "trajectory", "exposure"))))
    assert [(r.category, r.instance, r.trajectory, r.exposure) for r in virtual] == expected
    assert (topped.database_labels[-10:] == DISTRACTOR_LABEL).all()


def test_distractor_objects_spread_the_distractors_over_fewer_objects(mini):
    published = load_benchmark_set(mini, distractors=48, distractor_objects=3)
    usual = load_benchmark_set(mini, distractors=48)
    # 48 over about 3 objects: 16 images per object, one per trajectory (the manifest's own 4
    # rows come first, as in every layout).
    virtual = [published.database[i] for i in range(len(published.database) - 44,
                                                    len(published.database))]
    objects = {(row.category, row.instance) for row in virtual}
    for category, instance in objects:
        trajectories = [row.trajectory for row in virtual
                        if (row.category, row.instance) == (category, instance)]
        assert len(trajectories) == len(set(trajectories))
        assert max(trajectories) < 16
    assert published.distractor_objects() < usual.distractor_objects()
    assert published.summary()["distractor_objects"] == published.distractor_objects()
    assert max(row.trajectory for row in virtual) >= 10  # beyond the default 10 per object
    with pytest.raises(ProtocolError, match="distractor objects must be >= 1"):
        load_benchmark_set(mini, distractors=48, distractor_objects=0)


def test_queries_without_positive_are_counted(mini, tmp_path):
    def drop_database_of_second_instance(columns):
        keep = [not (r == "database" and i == TEST_INSTANCES[1])
                for r, i in zip(columns["role"], columns["instance"])]
        for name in columns:
            columns[name] = [v for v, k in zip(columns[name], keep) if k]

    folder = rewrite(mini, tmp_path / "orphans", drop_database_of_second_instance)
    bench = load_benchmark_set(folder)
    orphans = int((bench.query_labels == TEST_INSTANCES[1]).sum())
    assert orphans > 0
    np.testing.assert_array_equal(bench.positive_counts() == 0,
                                  bench.query_labels == TEST_INSTANCES[1])
    assert bench.summary()["queries_without_positive"] == orphans

    result = evaluate(bench, [Method("fake", InstanceEmbedder(0.0))], tmp_path / "cache",
                      factory="exact", progress=False)
    overall = result.runs[0].summary["overall"]
    assert overall["queries"] == len(bench.queries) and overall["no_positive"] == orphans
    assert overall["map100"] == 1.0  # mean over the queries that have a positive


def test_queries_outside_levels_1_to_6_are_left_out_and_counted(mini, tmp_path):
    def blur_first_query_beyond_6(columns):
        columns["blur_level"][columns["role"].index("query")] = 7

    bench = load_benchmark_set(rewrite(mini, tmp_path / "l7", blur_first_query_beyond_6))
    assert bench.queries_outside_levels == 1
    assert len(bench.queries) == len(load_benchmark_set(mini).queries) - 1


@pytest.mark.parametrize(("edit", "message"), [
    (lambda c: c["trajectory"].__setitem__(c["role"].index("database"), 0),
     "hold both queries and database images"),
    (lambda c: c["instance"].__setitem__(c["role"].index("query"), 0), "not test instances"),
    (lambda c: c["role"].__setitem__(slice(None), ["train"] * len(c["role"])), "no query rows"),
])
def test_manifests_breaking_the_protocol_are_refused(mini, tmp_path, edit, message):
    folder = rewrite(mini, tmp_path / "bad", edit)
    with pytest.raises(ProtocolError, match=message) as error:
        load_benchmark_set(folder)
    assert str(folder / MANIFEST_NAME) in str(error.value)


def test_virtual_distractors_need_simulator_settings(mini, tmp_path):
    table = read_manifest(mini)
    (tmp_path / "real").mkdir()
    write_manifest(tmp_path / "real" / MANIFEST_NAME, table.to_pydict(), sim=None)
    assert load_benchmark_set(tmp_path / "real").distractors == MINI.distractors
    with pytest.raises(ProtocolError, match="no simulator settings"):
        load_benchmark_set(tmp_path / "real", distractors=MINI.distractors + 1)
    with pytest.raises(ProtocolError, match="manifest not found"):
        load_benchmark_set(tmp_path / "nowhere")


def test_more_blur_noise_ranks_worse_and_levels_are_stratified(mini, tmp_path):
    bench = load_benchmark_set(mini, distractors=40)
    methods = [Method("sharp", InstanceEmbedder(0.0, "sharp")),
               Method("noisy", InstanceEmbedder(0.6, "noisy"))]
    result = evaluate(bench, methods, tmp_path, factory="exact", progress=False)
    sharp, noisy = (run.summary for run in result.runs)
    assert sharp["overall"]["map100"] == sharp["overall"]["map_full"] == 1.0
    assert noisy["overall"]["map100"] < 1.0
    for level, entry in noisy["levels"].items():
        assert entry["queries"] == int((bench.query_levels == level).sum())
        assert (entry["map100"] is None) == (entry["queries"] == 0)
    assert noisy["overall"][KNN_KEY] is None  # exact search: nothing to compare with


def test_an_item_failing_for_one_method_is_left_out_for_all(mini, tmp_path):
    bench = load_benchmark_set(mini)
    failing = int(bench.database.image_id[0])  # a positive of the first test instance
    methods = [Method("a", InstanceEmbedder(0.0, "a", fail_image_ids=(failing,))),
               Method("b", InstanceEmbedder(0.0, "b"))]
    result = evaluate(bench, methods, tmp_path, factory="exact", progress=False)
    assert not result.database_valid[0] and result.database_valid[1:].all()
    assert [message for _, message in result.errors] == [f"image {failing}: unreadable"]
    for run in result.runs:
        assert 0 not in run.ranked_ids
        first = bench.query_labels[result.query_rows] == bench.database_labels[0]
        assert (run.exact.num_positives[first] == 1).all()


def test_embedding_resumes_after_a_crash_and_reuses_finished_work(mini, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(vector_cache, "STREAM_BATCH", 4)
    monkeypatch.setattr(vector_cache, "SAVE_EVERY_S", -1.0)  # save after every batch
    items = load_benchmark_set(mini).items()
    crashing = InstanceEmbedder(0.3, crash_on_call=3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        embed_items(items, {"m": crashing}, tmp_path, "key", progress=False)
    resumed = InstanceEmbedder(0.3)
    caplog.set_level(logging.INFO, logger="benchmark")
    files = embed_items(items, {"m": resumed}, tmp_path, "key", progress=False)
    assert resumed.embedded == len(items) - 8  # two batches of 4 were saved before the crash
    assert [r.getMessage() for r in caplog.records] == [f"m: resuming at item 8 of {len(items)}"]
    fresh = embed_items(items, {"m": InstanceEmbedder(0.3)}, tmp_path / "fresh", "key",
                        progress=False)
    np.testing.assert_array_equal(files["m"].vectors, fresh["m"].vectors)

    again = InstanceEmbedder(0.3)
    caplog.clear()
    embed_items(items, {"m": again}, tmp_path, "key", progress=False)
    assert again.calls == 0
    assert [r.getMessage() for r in caplog.records] == [f"m: vectors of all {len(items)} items reused "
                                                        f"from {tmp_path}"]
    other_items = InstanceEmbedder(0.3)
    embed_items(items, {"m": other_items}, tmp_path, "another key", progress=False)
    assert other_items.embedded == len(items)


class ConstantEmbedder(InstanceEmbedder):
    """Every image gets the same vector, so every score ties."""

    def embed(self, items, progress=False):
        result = super().embed(items, progress)
        return FakeResult(np.full_like(result.vectors, 1 / np.sqrt(self.dim)), result.ok,
                          result.errors)


def test_ties_follow_the_image_id_keys_not_the_database_order(mini, tmp_path):
    bench = load_benchmark_set(mini, distractors=40)
    keys = bench.tie_keys()
    result = evaluate(bench, [Method("flat", ConstantEmbedder(0.0, "flat"))], tmp_path,
                      factory="exact", progress=False)
    run = result.runs[0]
    rows = len(bench.database)  # 44 < 100: every row is ranked, in tie-key order
    np.testing.assert_array_equal(run.ranked_ids[:, :rows],
                                  np.broadcast_to(np.argsort(keys), (len(result.query_rows), rows)))
    assert not np.array_equal(np.argsort(keys)[:4], np.arange(4))  # positives do not lead
    overall = run.summary["overall"]
    # Every query's positives tie distractors inside the top 100; rank 100 lies beyond the 44
    # rows, so no tie decides what enters the top 100.
    assert (overall["ties_in_top_k"], overall["ties_at_cutoff"]) == (overall["queries"], 0)
