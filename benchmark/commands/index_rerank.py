"""The re-ranking side of the index commands: loading the re-ranker for `query --rerank` and
`index build --dense`, and keeping an index's dense cache in step with `index add`.

Kept apart from `benchmark.commands.index` so the verbs read as plain index work; the dense
cache is imported when a command uses it, torch only when a command loads a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from benchmark.commands.support import model_load_errors
from indexer.sources import printable
from retrieval.rerank.names import DEFAULT_LOCATOR, SHIPPED_DENSE

if TYPE_CHECKING:
    from indexer.index import Hit, RetrievalIndex
    from indexer.rerank.cache import ViewModels
    from retrieval.rerank.reranker import Reranker

DEFAULT_DENSE = SHIPPED_DENSE
MAX_LISTED_SKIPS = 20

locator_option = click.option("--locator", default=DEFAULT_LOCATOR, show_default=True,
                              help="Model whose box head finds the object, for dense views.")


def load_reranker(dense: str, locator: str, device: str) -> tuple[Reranker, ViewModels]:
    """The re-ranker and the identity of its checkpoints (which names the dense views it makes)."""
    from indexer.rerank.cache import view_models
    from retrieval.rerank.reranker import load_reranker as load

    return load(dense, locator, device), view_models(dense, locator)


def load_rerank_models(dense: str, locator: str, device: str) -> tuple[Reranker, ViewModels]:
    """`load_reranker` with each checkpoint problem a usage error naming the checkpoint."""
    from retrieval.rerank.dense_checkpoint import DenseCheckpointError
    from retrieval.rerank.reranker import LocatorError

    with model_load_errors(locator, option="--locator"):
        try:
            return load_reranker(dense, locator, device)
        except DenseCheckpointError as error:
            raise click.UsageError(printable(f"--dense {dense}: {error}")) from error
        except LocatorError as error:
            raise click.UsageError(printable(f"--locator {locator}: {error}")) from error


def cache_models(index_dir: Path, device: str) -> tuple[Reranker, ViewModels] | None:
    """The models that made the index's dense cache, to extend it; None when it has no cache,
    or (with a warning: new images are then described when queried) when they cannot be
    loaded or now hold other weights."""
    from indexer.rerank.cache import DenseCacheError, open_cache

    try:
        cache = open_cache(index_dir)
    except DenseCacheError as error:
        click.echo(f"warning: {printable(str(error))}; it is not extended", err=True)
        return None
    if cache is None:
        return None
    recorded = cache.models
    try:
        reranker, models = load_reranker(recorded.dense, recorded.locator, device)
    except (ValueError, OSError) as error:  # checkpoint, dense checkpoint and device errors
        click.echo(printable(f"warning: {cache.directory}: dense cache not extended, its models "
                             f"cannot be loaded ({error})"), err=True)
        return None
    if not models.made_same_views(recorded):
        click.echo(printable(f"warning: {cache.directory}: dense cache not extended, made by "
                             f"{recorded.describe()} but these checkpoints now hold "
                             f"{models.describe()}"), err=True)
        return None
    return reranker, models


def cache_views(index: RetrievalIndex, rerank: tuple[Reranker, ViewModels], ids: Sequence[int],
                items: Sequence[Any], quiet: bool, keep: Sequence[int] = ()) -> None:
    """Store the dense views of `items` (images `ids`) in the index's cache and say its size;
    a cache that cannot be written only warns, as the vectors are already indexed."""
    from indexer.rerank.cache import DenseCacheError, cache_items

    reranker, models = rerank
    try:
        info, failed = cache_items(index.directory, models, reranker, ids, items, keep,
                                   progress=not quiet)
    except (DenseCacheError, OSError) as error:
        click.echo(printable(f"warning: dense cache not written ({error})"), err=True)
        return
    for image_id, message in failed[:MAX_LISTED_SKIPS]:
        click.echo(printable(f"dense cache: no view of id {image_id}: {message}"), err=True)
    if len(failed) > MAX_LISTED_SKIPS:
        click.echo(f"... and {len(failed) - MAX_LISTED_SKIPS} more without a view", err=True)
    click.echo(f"dense cache: {info.summary()}")


def cache_index(index: RetrievalIndex, rerank: tuple[Reranker, ViewModels], quiet: bool) -> None:
    """Give an index built without `--dense` its cache, or complete one: every indexed file whose
    view the cache lacks (views made by other models are all described again, and views without
    the mirror vector when the re-ranking parameters use one) is described."""
    import numpy as np

    from indexer.metadata import ids_column
    from indexer.rerank.cache import read_cache
    from indexer.sources import file_paths

    reranker, models = rerank
    ids = ids_column(index.metadata)
    files = file_paths(index.metadata)
    cache = read_cache(index.directory, models)  # None, with a warning, when damaged or foreign
    held = np.zeros(0, np.int64) if cache is None else np.asarray(cache.ids)
    if cache is not None and reranker.params.mirror:
        held = held[cache.mirrored()]
    missing = ~np.isin(ids, held)
    todo = [i for i, file in enumerate(files) if file is not None and missing[i]]
    virtual = sum(file is None for file in files)
    if virtual:
        click.echo(f"dense cache: {virtual} rows without a file are left out (only `index build "
                   "--dense` describes rendered rows)", err=True)
    click.echo(f"dense cache: {len(held)} views kept, {len(todo)} images to describe")
    if not todo:
        return
    cache_views(index, (reranker, models), ids[todo].tolist(), [files[i] for i in todo], quiet,
                keep=ids.tolist())


def dense_cache_info(index_dir: Path) -> dict[str, Any] | None:
    """The dense cache's part of `index info`: None without one, its problem when unreadable."""
    from indexer.rerank.cache import DenseCacheError, cache_info

    try:
        info = cache_info(index_dir)
    except DenseCacheError as error:
        return {"error": printable(str(error))}
    return None if info is None else {"views": info.views, "bytes": info.bytes,
                                      "dense": info.models.dense, "locator": info.models.locator}


def shown_score(hit: Hit) -> float:
    """The score that orders the hits: the re-ranking score where there is one."""
    return hit.score if hit.rerank_score is None else hit.rerank_score
