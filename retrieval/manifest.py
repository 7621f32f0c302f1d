"""The manifest: one parquet row per image, real (a file) or virtual (rendered on demand).

Columns are fixed by `MANIFEST_SCHEMA`; the simulator settings that virtual rows need
travel in the parquet file's metadata, so a manifest is self-describing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from retrieval.fileio import write_parquet_atomic
from retrieval.sim.config import SimConfig
from retrieval.sim.objects import split_instance_id

MANIFEST_NAME = "manifest.parquet"
_SIM_KEY = b"blur_retrieval.sim_config"

MANIFEST_SCHEMA = pa.schema([
    ("image_id", pa.int64()),
    ("path", pa.string()),  # relative to the manifest's folder; null for virtual rows
    ("instance", pa.int64()),  # global id: category * 1_000_000 + local index
    ("category", pa.int32()),
    ("trajectory", pa.int32()),
    ("exposure", pa.int8()),
    ("blur_severity", pa.float32()),  # null for virtual rows that were never rendered
    ("blur_level", pa.int8()),
    ("bbox_cx", pa.float32()),
    ("bbox_cy", pa.float32()),
    ("bbox_w", pa.float32()),
    ("bbox_h", pa.float32()),
    ("split", pa.string()),
    ("role", pa.string()),
])


class ManifestError(ValueError):
    """A manifest file that cannot be used, with the file named in the message."""


@dataclass(frozen=True)
class ManifestRow:
    """What the embedder needs to get one image: a file, or the parameters to render it."""

    image_id: int
    path: Path | None  # absolute path of the stored file, None for a virtual row
    category: int
    instance: int  # local instance index within the category
    trajectory: int
    exposure: int
    sim: SimConfig | None

    def describe(self) -> str:
        return str(self.path) if self.path else f"virtual row image_id={self.image_id}"


def write_manifest(path: str | Path, columns: dict, sim: SimConfig | None) -> pa.Table:
    table = pa.table(columns, schema=MANIFEST_SCHEMA)
    if sim is not None:
        table = table.replace_schema_metadata({_SIM_KEY: json.dumps(sim.to_dict(), sort_keys=True)})
    write_parquet_atomic(path, table)
    return table


def read_manifest(path: str | Path) -> pa.Table:
    """Read and validate a manifest; errors name the file and the problem."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ManifestError(f"{path}: not a readable parquet file ({exc})") from exc
    missing = [name for name in MANIFEST_SCHEMA.names if name not in table.column_names]
    if missing:
        raise ManifestError(f"{path}: missing manifest columns {', '.join(missing)}")
    try:
        sim_config_of(table)
    except (ValueError, TypeError) as exc:  # checked here, where the file is known
        raise ManifestError(f"{path}: unusable simulator settings in its metadata: {exc}") from exc
    return table


def sim_config_of(table: pa.Table) -> SimConfig | None:
    """The simulator settings stored with a manifest (None for one without virtual rows)."""
    metadata = table.schema.metadata or {}
    return SimConfig.from_dict(json.loads(metadata[_SIM_KEY])) if _SIM_KEY in metadata else None


def manifest_items(path: str | Path) -> tuple[list[ManifestRow], pa.Table]:
    """Rows of a manifest as embeddable items, with the table itself as metadata."""
    path = Path(path)
    manifest_file = path / MANIFEST_NAME if path.is_dir() else path
    table = read_manifest(manifest_file)
    sim = sim_config_of(table)
    root = manifest_file.parent.resolve()
    data = table.select(["image_id", "path", "instance", "category", "trajectory", "exposure"])
    items = []
    for row in data.to_pylist():
        if row["path"] is None and sim is None:
            raise ManifestError(
                f"{manifest_file}: virtual row image_id={row['image_id']} but no simulator settings"
            )
        items.append(ManifestRow(
            image_id=row["image_id"],
            path=root / row["path"] if row["path"] is not None else None,
            category=row["category"],
            instance=split_instance_id(row["instance"])[1],
            trajectory=row["trajectory"],
            exposure=row["exposure"],
            sim=sim,
        ))
    return items, table
