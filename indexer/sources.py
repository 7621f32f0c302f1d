"""Where database items come from: a folder of images, a manifest, or rows built in memory.

A `Source` pairs the items handed to the embedder with one metadata row per item; the
metadata travels into the index so a hit can be traced back to its file and labels.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from indexer.errors import SourceError

PATH_COLUMN = "path"
ID_COLUMN = "id"
MANIFEST_FILE = "manifest.parquet"


@dataclass(frozen=True)
class Source:
    """Items for the embedder and their metadata, row i describing item i."""

    items: list[Any]
    metadata: pa.Table
    origin: str = "<memory>"

    def __post_init__(self) -> None:
        if len(self.items) != self.metadata.num_rows:
            raise SourceError(
                f"{self.origin}: {len(self.items)} items but {self.metadata.num_rows} metadata rows"
            )
        check_metadata(self.metadata, self.origin)

    def __len__(self) -> int:
        return len(self.items)


def check_metadata(metadata: pa.Table, origin: str) -> None:
    """Metadata must name each item's path and leave the `id` column to the index."""
    if PATH_COLUMN not in metadata.column_names:
        raise SourceError(f"{origin}: metadata has no '{PATH_COLUMN}' column")
    if ID_COLUMN in metadata.column_names:
        raise SourceError(
            f"{origin}: metadata column '{ID_COLUMN}' is reserved for index ids; "
            "rename it in the source"
        )


def source_from_paths(paths: list[str | os.PathLike], origin: str = "<memory>") -> Source:
    """Image files given one by one; metadata holds only their paths."""
    names = [str(p) for p in paths]
    return Source(items=names, metadata=pa.table({PATH_COLUMN: pa.array(names, pa.string())}),
                  origin=origin)


def source_from_folder(folder: str | os.PathLike) -> Source:
    """Every image under `folder` (recursive, sorted), recorded by absolute path.

    Absolute paths keep hits resolvable when the index is queried from another directory.
    """
    from retrieval.images import iter_image_files

    root = Path(folder).resolve()
    if not root.is_dir():
        raise SourceError(f"{folder}: not a folder")
    return source_from_paths(list(iter_image_files(root)), origin=str(folder))


def source_from_manifest(manifest_path: str | os.PathLike) -> Source:
    """Rows of a dataset manifest (files or virtual simulator rows) with all their labels.

    The manifest stores paths relative to its folder; the index records each item's absolute
    path (null for virtual rows) so hits resolve from anywhere.
    """
    from retrieval.manifest import manifest_items

    if not Path(manifest_path).exists():
        raise SourceError(f"{manifest_path}: no such manifest")
    try:
        items, table = manifest_items(manifest_path)
    except ValueError as error:  # the manifest reader's errors name the file already
        raise SourceError(str(error)) from error
    paths = [None if item.path is None else str(item.path) for item in items]
    table = table.set_column(table.schema.get_field_index(PATH_COLUMN), PATH_COLUMN,
                             pa.array(paths, pa.string()))
    return Source(items=list(items), metadata=table, origin=str(manifest_path))


def source_from(location: str | os.PathLike) -> Source:
    """A manifest (`.parquet`, or a folder holding `manifest.parquet`), else a folder of images.

    A dataset folder with a manifest is read through it, keeping its labels and virtual rows.
    """
    path = Path(location)
    if path.is_dir():
        manifest = path / MANIFEST_FILE
        return source_from_manifest(manifest) if manifest.is_file() else source_from_folder(path)
    if path.suffix == ".parquet":
        return source_from_manifest(path)
    raise SourceError(f"{location}: expected a folder of images or a manifest .parquet file")
