"""Where database items come from: a folder of images, a manifest, or rows built in memory.

A `Source` pairs the items handed to the embedder with one metadata row per item; the
metadata travels into the index so a hit can be traced back to its file and labels.

File names that are not valid UTF-8 (held by Python as surrogate escapes) cannot be stored as
Arrow strings. Their `path` is stored in a printable form, each undecodable byte written as
`\\xNN` (Python's "backslashreplace"), and the exact bytes the OS gave go in an extra binary
column `path_bytes` (null for every other row; absent when no row needs it). `file_path` reads a
row back to the very file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from indexer.errors import SourceError

PATH_COLUMN = "path"
PATH_BYTES_COLUMN = "path_bytes"
ID_COLUMN = "id"
MANIFEST_FILE = "manifest.parquet"


@dataclass(frozen=True)
class Source:
    """Items for the embedder and their metadata, row i describing item i."""

    items: list[Any]
    metadata: pa.Table
    origin: str = "<memory>"
    # Why inputs met while gathering the items were left out (a folder that cannot be listed),
    # each naming its path: commands report them with the items that fail to embed.
    skipped: tuple[str, ...] = ()

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


def printable(text: str) -> str:
    """`text` with every byte that is not UTF-8 (a surrogate escape) written as `\\xNN`: safe to
    print, to write as JSON and to store in Arrow. Text without such bytes is returned unchanged."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def path_columns(paths: Sequence[str | None]) -> dict[str, pa.Array]:
    """The `path` column of `paths` (None: a virtual row), plus `path_bytes` when a name is not
    UTF-8, so such files are indexed and found again instead of failing the whole source."""
    shown = [None if path is None else printable(path) for path in paths]
    columns = {PATH_COLUMN: pa.array(shown, pa.string())}
    escaped = [path is not None and path != text for path, text in zip(paths, shown)]
    if any(escaped):
        columns[PATH_BYTES_COLUMN] = pa.array(
            [os.fsencode(path) if needed else None for path, needed in zip(paths, escaped)],
            pa.binary())
    return columns


def file_path(row: Mapping[str, Any]) -> str | None:
    """The file a metadata row names, spelled exactly as the OS does; None for a virtual row."""
    raw = row.get(PATH_BYTES_COLUMN)
    return os.fsdecode(raw) if raw is not None else row.get(PATH_COLUMN)


def file_paths(table: pa.Table) -> list[str | None]:
    """`file_path` of every row of `table`, in order."""
    shown = table.column(PATH_COLUMN).to_pylist()
    if PATH_BYTES_COLUMN not in table.column_names:
        return shown
    raw = table.column(PATH_BYTES_COLUMN).to_pylist()
    return [text if data is None else os.fsdecode(data) for text, data in zip(shown, raw)]


def source_from_paths(paths: list[str | os.PathLike], origin: str = "<memory>",
                      skipped: Sequence[str] = ()) -> Source:
    """Image files given one by one; metadata holds only their paths."""
    names = [os.fspath(p) for p in paths]
    return Source(items=names, metadata=pa.table(path_columns(names)), origin=origin,
                  skipped=tuple(skipped))


def source_from_folder(folder: str | os.PathLike) -> Source:
    """Every image under `folder` (recursive, sorted), recorded by absolute path.

    Absolute paths keep hits resolvable when the index is queried from another directory.
    Folders that cannot be listed are left out and named in `Source.skipped`.
    """
    from retrieval.images import list_image_files

    root = Path(folder).resolve()
    if not root.is_dir():
        raise SourceError(f"{folder}: not a folder")
    files, unlistable = list_image_files(root)
    return source_from_paths(files, origin=str(folder), skipped=[message for _, message in unlistable])


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
    columns = path_columns([None if item.path is None else str(item.path) for item in items])
    table = table.set_column(table.schema.get_field_index(PATH_COLUMN), PATH_COLUMN,
                             columns.pop(PATH_COLUMN))
    for name, column in columns.items():
        table = table.append_column(name, column)
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
