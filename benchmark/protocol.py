"""The benchmark set (docs/method.md, "Protocol"): queries, database and distractors from a manifest.

Queries are the manifest's `query` rows at blur levels 1..6, the database its `database` rows
plus distractors. A positive is a database row of the query's instance; distractors carry the
label `DISTRACTOR_LABEL`, so they can never be positives. The database rows are stored before
the distractors; ties are broken by `BenchmarkSet.tie_keys`, never by that order. Rows are kept
as column arrays and turned into `ManifestRow`s on access, so a million distractors cost a few
arrays, not a million Python objects (which would also be copied into every loader process).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from retrieval.manifest import MANIFEST_NAME, ManifestRow, read_manifest, sim_config_of
from retrieval.metrics import tie_break_keys
from retrieval.sim.config import SimConfig
from retrieval.sim.layout import (
    BENCHMARK_LEVELS,
    distractor_table,
    images_per_distractor_object,
    instance_split,
)
from retrieval.sim.objects import INSTANCE_STRIDE, global_instance_id, split_instance_id

DISTRACTOR_LABEL = -1
_KEY_COLUMNS = ("category", "instance", "trajectory", "exposure")


class ProtocolError(ValueError):
    """A manifest that cannot serve as a benchmark set; the message names the file."""


@dataclass(frozen=True, eq=False)
class Rows(Sequence[ManifestRow]):
    """Manifest rows as columns; `instance` holds local indices, as `ManifestRow` does."""

    image_id: np.ndarray
    path: np.ndarray  # object array: path relative to `root`, or None for a virtual row
    category: np.ndarray
    instance: np.ndarray
    trajectory: np.ndarray
    exposure: np.ndarray
    root: Path
    sim: SimConfig | None

    def __len__(self) -> int:
        return len(self.image_id)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            raise TypeError("Rows does not support slicing; index one row at a time")
        relative = self.path[index]
        return ManifestRow(
            image_id=int(self.image_id[index]),
            path=None if relative is None else self.root / relative,
            category=int(self.category[index]),
            instance=int(self.instance[index]),
            trajectory=int(self.trajectory[index]),
            exposure=int(self.exposure[index]),
            sim=self.sim,
        )

    def __iter__(self) -> Iterator[ManifestRow]:
        return (self[i] for i in range(len(self)))

    def labels(self) -> np.ndarray:
        """Global instance ids: what decides whether two rows show the same object."""
        return global_instance_id(self.category.astype(np.int64), self.instance.astype(np.int64))

    def concat(self, other: Rows) -> Rows:
        if other.root != self.root or other.sim != self.sim:
            raise ValueError("only rows of one manifest can be concatenated")
        columns = {name: np.concatenate([getattr(self, name), getattr(other, name)])
                   for name in ("image_id", "path", *_KEY_COLUMNS)}
        return Rows(**columns, root=self.root, sim=self.sim)

    def digest(self) -> str:
        """SHA-256 of everything that decides the pixels, to tell stale cached vectors."""
        sha = hashlib.sha256(str(self.root).encode())
        sha.update(json.dumps(None if self.sim is None else self.sim.to_dict(), sort_keys=True)
                   .encode())
        for name in ("image_id", *_KEY_COLUMNS):
            sha.update(np.ascontiguousarray(getattr(self, name), dtype=np.int64).tobytes())
        sha.update("\0".join("" if p is None else p for p in self.path).encode())
        return sha.hexdigest()


class ConcatRows(Sequence[ManifestRow]):
    """Several `Rows` seen as one sequence (queries, then database, then distractors)."""

    def __init__(self, parts: Sequence[Rows]) -> None:
        self.parts = list(parts)
        self._starts = np.cumsum([0, *(len(p) for p in self.parts)])

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, index):  # type: ignore[override]
        if not 0 <= index < len(self):
            raise IndexError(f"row {index} out of range for {len(self)} rows")
        part = int(np.searchsorted(self._starts, index, side="right")) - 1
        return self.parts[part][index - int(self._starts[part])]

    def __iter__(self) -> Iterator[ManifestRow]:
        return (row for part in self.parts for row in part)


@dataclass(frozen=True, eq=False)
class BenchmarkSet:
    """Queries and the searched database (database rows first, then distractors)."""

    manifest: Path
    queries: Rows
    query_labels: np.ndarray  # int64 global instance ids
    query_levels: np.ndarray  # int64 blur level 1..6 of each query
    database: Rows
    database_labels: np.ndarray  # int64 global instance ids; DISTRACTOR_LABEL for distractors
    database_levels: np.ndarray  # int64 blur level, 0 where unknown (never-rendered virtual rows)
    manifest_distractors: int
    virtual_distractors: int
    queries_outside_levels: int  # query rows left out: blur level unknown or not in 1..6

    @property
    def distractors(self) -> int:
        return self.manifest_distractors + self.virtual_distractors

    def items(self) -> ConcatRows:
        """What gets embedded: the queries, then the database; vector i belongs to item i."""
        return ConcatRows([self.queries, self.database])

    def positive_counts(self) -> np.ndarray:
        """m per query: database rows of the query's instance (0 = a query without positive)."""
        labels, counts = np.unique(self.database_labels, return_counts=True)
        where = np.clip(np.searchsorted(labels, self.query_labels), 0, len(labels) - 1)
        found = labels[where] == self.query_labels
        return np.where(found, counts[where], 0).astype(np.int64)

    def tie_keys(self) -> np.ndarray:
        """Order of equal scores per database row: seeded keys of its image id, so that ties do
        not favour the database rows stored first and each row keeps its key wherever it sits."""
        return tie_break_keys(self.database.image_id)

    def summary(self) -> dict:
        return {
            "manifest": str(self.manifest),
            "queries": len(self.queries),
            "queries_by_level": {int(level): int((self.query_levels == level).sum())
                                 for level in BENCHMARK_LEVELS},
            "queries_outside_levels": self.queries_outside_levels,
            "queries_without_positive": int((self.positive_counts() == 0).sum()),
            "database": len(self.database) - self.distractors,
            "database_by_level": _level_counts(self.database_levels[: len(self.database)
                                                                    - self.distractors]),
            "distractors": self.distractors,
            "manifest_distractors": self.manifest_distractors,
            "virtual_distractors": self.virtual_distractors,
            "distractor_objects": self.distractor_objects(),
        }

    def distractor_objects(self) -> int:
        """Distinct objects (category, instance) the distractors show."""
        first = len(self.database) - self.distractors
        pairs = self.database.category[first:] * INSTANCE_STRIDE + self.database.instance[first:]
        return len(np.unique(pairs))


def _level_counts(levels: np.ndarray) -> dict[int, int]:
    """Images per known blur level (0 = unknown, e.g. a virtual row, is left out)."""
    values, counts = np.unique(levels[levels > 0], return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts)}


def manifest_file(location: str | Path) -> Path:
    path = Path(location)
    return path / MANIFEST_NAME if path.is_dir() else path


def load_benchmark_set(location: str | Path, distractors: int | None = None,
                       distractor_objects: int | None = None,
                       distractor_exposures: int = 1) -> BenchmarkSet:
    """The benchmark set of a manifest, with exactly `distractors` distractors when given.

    The manifest's own distractor rows come first; when more are asked for, virtual rows
    (rendered on demand, no file) are added from the manifest's simulator settings, 10 images
    per distractor object, or spread over about `distractor_objects` objects (the published
    layout: few objects, many images each), with `distractor_exposures` images per trajectory
    (`distractor_table`; more are cheaper to render). None keeps the manifest's distractor rows
    as they are.
    """
    path = manifest_file(location)
    try:
        table = read_manifest(path)
    except ValueError as error:  # the manifest reader's message names the file already
        raise ProtocolError(str(error)) from error
    if distractors is not None and distractors < 0:
        raise ProtocolError(f"{path}: distractors must be >= 0, got {distractors}")
    if distractor_objects is not None and distractor_objects < 1:
        raise ProtocolError(f"{path}: distractor objects must be >= 1, got {distractor_objects}")
    sim = sim_config_of(table)
    if sim is not None and not 1 <= distractor_exposures <= sim.exposures:
        raise ProtocolError(f"{path}: distractor exposures must be in 1..{sim.exposures} (the "
                            f"simulator's exposures), got {distractor_exposures}")
    root = path.parent.resolve()
    query_table = _role(table, "query")
    levels = np.asarray(query_table["blur_level"].fill_null(0).to_numpy(), dtype=np.int64)
    in_levels = np.isin(levels, BENCHMARK_LEVELS)
    query_table = query_table.filter(pa.array(in_levels))
    database_table = _role(table, "database")
    _check_protocol(path, query_table, database_table, synthetic=sim is not None)

    queries = _rows(query_table, root, sim, path)
    stored = _rows(_role(table, "distractor"), root, sim, path)
    wanted = len(stored) if distractors is None else distractors
    kept = _take(stored, min(wanted, len(stored)))
    per_object = images_per_distractor_object(wanted, distractor_objects)
    extra = _virtual_distractors(path, table, stored, wanted - len(kept), sim, root, per_object,
                                 distractor_exposures)
    database_rows = _rows(database_table, root, sim, path)
    database = database_rows.concat(kept).concat(extra)
    database_levels = np.concatenate([
        database_table["blur_level"].fill_null(0).to_numpy().astype(np.int64),
        _stored_levels(table, len(kept)),
        np.zeros(len(extra), dtype=np.int64),
    ])
    labels = database_rows.labels()
    return BenchmarkSet(
        manifest=path,
        queries=queries,
        query_labels=queries.labels(),
        query_levels=levels[in_levels],
        database=database,
        database_labels=np.concatenate([
            labels, np.full(len(kept) + len(extra), DISTRACTOR_LABEL, dtype=np.int64)
        ]),
        database_levels=database_levels,
        manifest_distractors=len(kept),
        virtual_distractors=len(extra),
        queries_outside_levels=int((~in_levels).sum()),
    )


def _role(table: pa.Table, role: str) -> pa.Table:
    return table.filter(pc.equal(table["role"], role))


def _stored_levels(table: pa.Table, count: int) -> np.ndarray:
    levels = _role(table, "distractor")["blur_level"].fill_null(0).to_numpy()
    return np.asarray(levels[:count], dtype=np.int64)


def _rows(table: pa.Table, root: Path, sim: SimConfig | None, path: Path) -> Rows:
    paths = np.array(table["path"].to_pylist(), dtype=object)
    if sim is None and any(p is None for p in paths):
        raise ProtocolError(f"{path}: virtual rows but no simulator settings to render them")
    category, local = np.divmod(table["instance"].to_numpy().astype(np.int64), INSTANCE_STRIDE)
    return Rows(
        image_id=table["image_id"].to_numpy().astype(np.int64),
        path=paths,
        category=category,
        instance=local,
        trajectory=table["trajectory"].to_numpy().astype(np.int64),
        exposure=table["exposure"].to_numpy().astype(np.int64),
        root=root,
        sim=sim,
    )


def _take(rows: Rows, count: int) -> Rows:
    columns = {name: getattr(rows, name)[:count] for name in ("image_id", "path", *_KEY_COLUMNS)}
    return Rows(**columns, root=rows.root, sim=rows.sim)


def _check_protocol(path: Path, queries: pa.Table, database: pa.Table, synthetic: bool) -> None:
    """docs/method.md, "Protocol": test instances only, query and database trajectories disjoint."""
    if queries.num_rows == 0:
        raise ProtocolError(f"{path}: no query rows at blur levels 1..6")
    if database.num_rows == 0:
        raise ProtocolError(f"{path}: no database rows")
    query_keys = set(zip(queries["instance"].to_pylist(), queries["trajectory"].to_pylist()))
    database_keys = set(zip(database["instance"].to_pylist(), database["trajectory"].to_pylist()))
    shared = sorted(query_keys & database_keys)
    if shared:
        instance, trajectory = shared[0]
        raise ProtocolError(
            f"{path}: {len(shared)} trajectories hold both queries and database images "
            f"(first: instance {instance}, trajectory {trajectory}); they must be disjoint"
        )
    if synthetic:  # shipped models were trained on the simulator's `train` instances only
        instances = np.unique(np.concatenate([queries["instance"].to_numpy(),
                                              database["instance"].to_numpy()]))
        not_test = [int(i) for i in instances if instance_split(*split_instance_id(int(i))) != "test"]
        if not_test:
            raise ProtocolError(
                f"{path}: {len(not_test)} query/database instances are not test instances "
                f"(first: {not_test[0]}); the shipped models may have trained on them"
            )


def _virtual_distractors(path: Path, table: pa.Table, stored: Rows, count: int,
                         sim: SimConfig | None, root: Path, images_per_object: int,
                         exposures_per_trajectory: int = 1) -> Rows:
    """`count` virtual distractor rows that repeat none of the manifest's distractors.

    They come from the simulator's distractor table with the manifest's seed, so a data set
    synthesised with M distractors and topped up to N here holds the same rows as one
    synthesised with N.
    """
    empty = np.zeros(0, dtype=np.int64)
    if count <= 0:
        return Rows(empty, np.zeros(0, dtype=object), empty, empty, empty, empty, root, sim)
    if sim is None:
        raise ProtocolError(
            f"{path}: {count} more distractors asked for, but the manifest has no simulator "
            "settings to render virtual ones"
        )
    categories = int(pc.max(table["category"]).as_py()) + 1
    candidates = distractor_table(len(stored) + count, categories, sim.seed, sim.exposures,
                                  images_per_object, exposures_per_trajectory)
    existing = set(zip(*(getattr(stored, name).tolist() for name in _KEY_COLUMNS)))
    keys = zip(*(candidates[name].tolist() for name in _KEY_COLUMNS))
    fresh = np.array([key not in existing for key in keys], dtype=bool)
    chosen = {name: candidates[name][fresh][:count].astype(np.int64) for name in _KEY_COLUMNS}
    first_id = int(pc.max(table["image_id"]).as_py()) + 1
    return Rows(
        image_id=np.arange(first_id, first_id + count, dtype=np.int64),
        path=np.full(count, None, dtype=object),
        **chosen,
        root=root,
        sim=sim,
    )
