"""Command-line verbs of the index layer: `index build|add|dense|remove|info` and `query`.

Exit status: 0 when everything was done (files already in the index, skipped by `index add`,
count as done); 1 when some inputs were skipped (the rest was still indexed or answered) or the
index could not be changed; 2 for usage errors, including an index folder that cannot be used, a
model that cannot be loaded and an output path that cannot be written. Under `--json`, an error
that ends the command also prints `{"error": "..."}` on stdout.

FAISS and the index modules are imported inside the commands, so `--help` answers at once.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from benchmark.commands.engine_options import (
    RAY_SHARD_SIZE,
    engine_options,
    opened_engine,
    remote_embedder,
    shard_size_for,
)
from benchmark.commands.index_info import format_info
from benchmark.commands.index_rerank import (
    DEFAULT_DENSE,
    MAX_LISTED_SKIPS,
    cache_index,
    cache_models,
    cache_views,
    dense_cache_info,
    load_rerank_models,
    locator_option,
    shown_score,
)
from benchmark.commands.options import parse_memory, writable_file, writable_folder
from benchmark.commands.support import JsonErrorsCommand, model_load_errors
from indexer.errors import IndexStoreError, OutputPathError
from indexer.grid import GridRow, draw_grid
from indexer.models import DEFAULT_MODEL, load_embedder, model_of, recorded_model
from indexer.shards import DEFAULT_SHARD_SIZE
from indexer.sources import Source, printable, source_from
from retrieval.devices import DEVICES

if TYPE_CHECKING:
    from indexer.embedder_protocol import EmbedderLike
    from indexer.index import IngestResult, RetrievalIndex

EXIT_SKIPPED = 1


def _list_image_files(folder: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    from retrieval.images import list_image_files

    return list_image_files(folder)


def _stat_problem(path: Path) -> str:
    """Why a query path that does not exist cannot be read (a link loop is not a missing file)."""
    from retrieval.images import stat_problem

    try:
        path.stat()
    except OSError as error:
        return stat_problem(path, error)
    return "not a file or folder"


_device_option = click.option("--device", type=click.Choice(DEVICES), default="auto",
                              show_default=True, help="Where to embed and search.")
_batch_option = click.option("--batch-size", type=click.IntRange(min=1), default=64,
                             show_default=True, help="Images per embedding batch.")
_quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress bars.")


@click.group("index")
def index_group() -> None:
    """Build and maintain an index folder (FAISS index, metadata, manifest)."""


@index_group.command("build")
@click.argument("src", type=click.Path(exists=True, path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              callback=writable_folder, help="Index folder to create; an interrupted build resumes there.")
@click.option("--model", default=DEFAULT_MODEL, show_default=True,
              help="Embedding model name or checkpoint path.")
@click.option("--factory", default="auto", show_default=True,
              help="FAISS factory string, or 'auto': exact search for small sets, IVF above.")
@click.option("--index-memory", callback=parse_memory, metavar="SIZE",
              help="Memory budget of the index for --factory auto, e.g. 2GB: a compressed index "
                   "(IVF-PQ, with an 8-bit refine stage where it fits) when flat vectors do not fit.")
@_device_option
@_batch_option
@click.option("--shard-size", type=click.IntRange(min=1),
              help=f"Items per resumable embedding shard (default: {DEFAULT_SHARD_SIZE}; "
                   f"{RAY_SHARD_SIZE} with --engine ray, so that every worker gets some).")
@click.option("--dense", is_flag=False, flag_value=DEFAULT_DENSE, default=None,
              metavar="[PATH_OR_NAME]",
              help="Also cache every image's dense view for `query --rerank`, made by this dense "
                   f"checkpoint (alone: the shipped '{DEFAULT_DENSE}').")
@locator_option
@engine_options
@_quiet_option
def build_command(src: Path, out_dir: Path, model: str, factory: str, index_memory: int | None,
                  device: str, batch_size: int, shard_size: int | None, dense: str | None,
                  locator: str, engine: str, address: str | None, engine_workers: int | None,
                  quiet: bool) -> None:
    """Index SRC (a folder of images or a manifest .parquet) into a new folder."""
    from indexer.build import build_index
    from indexer.gpu import resolve_device

    if index_memory is not None and factory != "auto":
        raise click.UsageError(f"--index-memory chooses among auto indexes; it cannot be used "
                               f"with --factory {factory!r}")
    with _failures_as_click_errors():
        resolve_device(device)  # fail before the model is loaded
        source = source_from(src)
        with model_load_errors(model):
            embedder = load_embedder(model, device, batch_size)
        rerank = None if dense is None else load_rerank_models(dense, locator, device)
        with opened_engine(engine, address, engine_workers, device) as opened:
            index, result = build_index(
                source, embedder, out_dir, factory=factory, device=device,
                shard_size=shard_size or shard_size_for(opened), progress=not quiet,
                model_name=recorded_model(model), memory=index_memory, engine=opened,
                remote=remote_embedder(opened, model, embedder, device, batch_size))
    if rerank is not None:
        items = [source.items[i] for i in result.ordinals]
        cache_views(index, rerank, result.ids, items, quiet)
    _finish_ingest(index, source, result, verb="indexed")


@index_group.command("add")
@click.argument("index_dir", type=click.Path(path_type=Path))
@click.argument("src", type=click.Path(exists=True, path_type=Path))
@click.option("--model", default=None, help="Defaults to the model that built the index.")
@click.option("--allow-duplicates", is_flag=True,
              help="Add files the index already holds (same path and content) again.")
@_device_option
@_batch_option
@engine_options
@_quiet_option
def add_command(index_dir: Path, src: Path, model: str | None, allow_duplicates: bool,
                device: str, batch_size: int, engine: str, address: str | None,
                engine_workers: int | None, quiet: bool) -> None:
    """Append the images or rows of SRC to the index in INDEX_DIR (and their dense views to its
    dense cache, when it has one)."""
    from indexer.index import open_index
    from indexer.metadata import ids_column

    with _failures_as_click_errors():
        index = open_index(index_dir, mmap=False, device=device)
        source = source_from(src)
        embedder = _load_for(index, model, device, batch_size)
        rerank = cache_models(index_dir, device)
        with opened_engine(engine, address, engine_workers, device) as opened:
            result = index.add(source, embedder, progress=not quiet,
                               allow_duplicates=allow_duplicates,
                               shard_size=shard_size_for(opened), engine=opened,
                               remote=remote_embedder(opened, model or model_of(index), embedder, device,
                                              batch_size))
        index.save()
    if rerank is not None:
        items = [source.items[i] for i in result.ordinals]
        cache_views(index, rerank, result.ids, items, quiet, keep=ids_column(index.metadata))
    _finish_ingest(index, source, result, verb="added")


@index_group.command("dense")
@click.argument("index_dir", type=click.Path(path_type=Path))
@click.option("--dense", default=DEFAULT_DENSE, show_default=True,
              help="Dense checkpoint that makes the views.")
@locator_option
@_device_option
@_quiet_option
def dense_command(index_dir: Path, dense: str, locator: str, device: str, quiet: bool) -> None:
    """Cache the dense views of an index's images for `query --rerank`, as `index build --dense`
    would have; views the cache already holds from the same checkpoints are kept, not redone."""
    from indexer.index import open_index

    with _failures_as_click_errors():
        index = open_index(index_dir, mmap=True, device="cpu")
    cache_index(index, load_rerank_models(dense, locator, device), quiet)


@index_group.command("remove")
@click.argument("index_dir", type=click.Path(path_type=Path))
@click.option("--id", "ids", type=int, multiple=True, help="Id to remove (repeatable).")
@click.option("--path", "paths", multiple=True, help="Indexed path to remove (repeatable).")
def remove_command(index_dir: Path, ids: tuple[int, ...], paths: tuple[str, ...]) -> None:
    """Remove vectors by id or by path; ids of the others never change."""
    from indexer.index import open_index

    if not ids and not paths:
        raise click.UsageError("give at least one --id or --path")
    with _failures_as_click_errors():
        index = open_index(index_dir, mmap=False, device="cpu")
        removed = index.remove(ids=ids, paths=paths)
        index.save()
    click.echo(f"removed {len(removed)} vectors; {index.count} remain in {index_dir}")


@index_group.command("info", cls=JsonErrorsCommand)
@click.argument("index_dir", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def info_command(index_dir: Path, as_json: bool) -> None:
    """Print what an index holds and how it was made."""
    from indexer.index import open_index

    try:
        info = open_index(index_dir, mmap=True, device="cpu").info()
    except IndexStoreError as error:
        raise click.UsageError(str(error)) from error
    info["dense_cache"] = dense_cache_info(index_dir)
    click.echo(json.dumps(info, indent=2) if as_json else format_info(info))


@click.command("query", cls=JsonErrorsCommand)
@click.argument("index_dir", type=click.Path(path_type=Path))
@click.argument("queries", nargs=-1, required=True)
@click.option("-k", "k", type=int, default=10, show_default=True, help="Hits per query.")
@click.option("--json", "as_json", is_flag=True, help="Print results as JSON.")
@click.option("--grid", type=click.Path(dir_okay=False, path_type=Path), callback=writable_file,
              help="Also write a PNG contact sheet of each query and its hits.")
@click.option("--model", default=None, help="Defaults to the model that built the index.")
@click.option("--rerank", "rerank_k", type=click.IntRange(min=1), default=None, metavar="K",
              help="Re-rank the top K hits by geometric verification against the query.")
@click.option("--dense", default=DEFAULT_DENSE, show_default=True,
              help="Dense checkpoint (folder or shipped name) that --rerank verifies with.")
@locator_option
@_device_option
@_batch_option
@_quiet_option
def query_command(index_dir: Path, queries: tuple[str, ...], k: int, as_json: bool,
                  grid: Path | None, model: str | None, rerank_k: int | None, dense: str,
                  locator: str, device: str, batch_size: int, quiet: bool) -> None:
    """Search INDEX_DIR with images (files, or folders searched recursively)."""
    from indexer.index import open_index
    from indexer.rerank.cache import read_cache
    from indexer.rerank.search import RerankedQuery, rerank_search

    try:
        index = open_index(index_dir, mmap=True, device=device)
        index.check_k(k)
    except IndexStoreError as error:
        raise click.UsageError(str(error)) from error
    items, skipped = _expand_queries(queries)
    answered: list[tuple[str, list[dict[str, Any]], str | None]] = []
    sheet: list[GridRow] = []
    if items:
        rerank = None if rerank_k is None else load_rerank_models(dense, locator, device)
        paths = [path for _, path in items]
        try:
            embedder = _load_for(index, model, device, batch_size)
            found = (index.search_images(paths, embedder, k, progress=not quiet) if rerank is None
                     else rerank_search(index, paths, embedder, rerank[0], k, rerank_k,
                                        read_cache(index_dir, rerank[1]), progress=not quiet))
        except IndexStoreError as error:
            raise click.UsageError(str(error)) from error
        skipped += [(items[i][0], items[i][1], message) for i, message in found.errors]
        answered = [(items[r.item][1], [h.to_json() for h in r.hits],
                     r.skipped if isinstance(r, RerankedQuery) else None) for r in found.results]
        sheet = [GridRow(items[r.item][1], [(h.file, shown_score(h)) for h in r.hits])
                 for r in found.results]
    skipped.sort(key=lambda entry: entry[0])
    grid_error = _write_grid(sheet, grid) if grid is not None and sheet else None
    if as_json:
        answer: dict[str, Any] = {
            "results": [{"query": printable(query), "hits": hits,
                         **({} if note is None else {"rerank": printable(f"skipped: {note}")})}
                        for query, hits, note in answered],
            "skipped": [{"path": printable(path), "error": printable(error)}
                        for _, path, error in skipped],
        }
        click.echo(json.dumps(answer if grid_error is None else {**answer, "error": grid_error},
                              indent=2))
    else:
        _print_answers(answered, skipped)
    if grid_error is not None:  # the answers are printed: only the sheet is missing
        click.echo(f"Error: {grid_error}", err=True)
        click.get_current_context().exit(2)
    if grid is not None and sheet:  # on stderr under --json, so stdout stays JSON
        click.echo(printable(f"wrote {grid}"), err=as_json)
    if skipped:
        click.get_current_context().exit(EXIT_SKIPPED)



@contextlib.contextmanager
def _failures_as_click_errors() -> Iterator[None]:
    """Index and source problems end the command with their message, not a traceback; an output
    folder that cannot be written is a usage error."""
    try:
        yield
    except OutputPathError as error:
        raise click.UsageError(printable(str(error))) from error
    except IndexStoreError as error:
        raise click.ClickException(printable(str(error))) from error


def _load_for(index: RetrievalIndex, model: str | None, device: str, batch_size: int
              ) -> EmbedderLike:
    """The model asked for, else the one that built `index`; a load failure says what to pass."""
    name = model or model_of(index)
    hint = None if model else (f"{index.directory} was built with it (fingerprint "
                               f"{index.fingerprint}); pass --model a copy of that checkpoint")
    with model_load_errors(name, hint=hint):
        return load_embedder(name, device, batch_size)


def _write_grid(rows: list[GridRow], path: Path) -> str | None:
    """Draw the contact sheet; None when written, else why not (the caller still prints results)."""
    try:
        draw_grid(rows, path)
    except OSError as error:
        return printable(f"--grid {path}: cannot write the contact sheet ({error.strerror or error})")
    return None


def _expand_queries(queries: Sequence[str]
                    ) -> tuple[list[tuple[int, str]], list[tuple[int, str, str]]]:
    """Query files with their positions, and (position, path, error) for what cannot be read."""
    entries: list[tuple[str, str | None]] = []
    for given in queries:
        path = Path(given)
        if path.is_dir():
            files, unlistable = _list_image_files(path)
            found = [(str(p), None) for p in files] + unlistable
            entries += found or [(given, f"{given}: no images in folder")]
        elif path.exists():
            entries.append((given, None))
        else:
            entries.append((given, f"{given}: {_stat_problem(path)}"))
    items = [(i, path) for i, (path, error) in enumerate(entries) if error is None]
    skipped = [(i, path, error) for i, (path, error) in enumerate(entries) if error is not None]
    return items, skipped


def _print_answers(answered: list[tuple[str, list[dict[str, Any]], str | None]],
                   skipped: list[tuple[int, str, str]]) -> None:
    """Each query's path, then a table of its hits under a header line."""
    for query, hits, note in answered:
        click.echo(printable(query))
        if note is not None:
            click.echo(printable(f"  re-ranking skipped: {note}"))
        reranked = any("rerank_score" in hit for hit in hits)
        if hits:
            verified = f"  {'rerank':>6}  {'appearance':>10}  {'inliers':>7}" if reranked else ""
            click.echo(f"  {'rank':>4}  {'score':>6}{verified}  {'id':<8} path")
        for hit in hits:
            verified = ""
            if reranked:
                inliers = "-" if hit["verified_inliers"] is None else hit["verified_inliers"]
                appearance = "-" if hit["appearance"] is None else f"{hit['appearance']:.4f}"
                verified = f"  {hit['rerank_score']:.4f}  {appearance:>10}  {inliers:>7}"
            click.echo(f"  {hit['rank']:>4}  {hit['score']:.4f}{verified}  {hit['id']:<8} "
                       f"{hit['path']}")
    for _, _, error in skipped:  # messages name their file
        click.echo(f"skipped: {printable(error)}", err=True)


def _finish_ingest(index: RetrievalIndex, source: Source, result: IngestResult,
                   verb: str) -> None:
    skipped = [*source.skipped, *(message for _, message in result.errors)]
    for message in skipped[:MAX_LISTED_SKIPS]:
        click.echo(f"skipped: {printable(message)}", err=True)
    if len(skipped) > MAX_LISTED_SKIPS:
        click.echo(f"... and {len(skipped) - MAX_LISTED_SKIPS} more skipped", err=True)
    duplicates = (f" ({len(result.duplicates)} already in the index, not added again; "
                  "--allow-duplicates adds them)" if len(result.duplicates) else "")
    click.echo(printable(f"{verb} {len(result.ids)} of {len(source)} items from {source.origin}"
                         f"{duplicates}; {index.count} vectors in {index.directory}"))
    if skipped:
        click.get_current_context().exit(EXIT_SKIPPED)
