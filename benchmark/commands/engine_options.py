"""`--engine`, `--address` and `--engine-workers`: where the commands that embed many images
(`index build`, `index add`, `bench map`) do that work, and where `index build` and `bench
index` fill IVF indexes in parts; and opening that engine."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import click

from indexer.cluster.engine import ENGINES, LOCAL, RAY, EngineError
from indexer.models import recorded_model
from indexer.shards import DEFAULT_SHARD_SIZE

if TYPE_CHECKING:
    from indexer.cluster.embedding import RemoteEmbedder
    from indexer.cluster.engine import Engine
    from indexer.embedder_protocol import EmbedderLike

RAY_SHARD_SIZE = 1024  # items per shard on a cluster: small enough that every worker gets some


def engine_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The three options, as keyword arguments engine, address and engine_workers."""
    options = [
        click.option("--engine", type=click.Choice(ENGINES), default=LOCAL, show_default=True,
                     help="Where images are decoded or rendered and embedded, and IVF "
                          "indexes filled: this process, or a Ray cluster (pip install "
                          "'blur-retrieval[ray]'), one model copy per worker."),
        click.option("--address", metavar="HOST:PORT",
                     help=f"Ray cluster to join (started with `ray start --head`); default with "
                          f"--engine {RAY}: a local cluster on this machine's cores."),
        click.option("--engine-workers", type=click.IntRange(min=1), metavar="N",
                     help="Ray workers (default: one per CPU of the cluster, one per GPU when "
                          "it has GPUs)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@contextlib.contextmanager
def opened_engine(engine: str, address: str | None, workers: int | None, device: str
                  ) -> Iterator[Engine]:
    """The engine asked for, shut down afterwards; one that cannot start is a usage error.
    With `device` "cpu" the workers hold no GPU (else one each when the cluster has GPUs)."""
    from indexer.cluster.choice import open_engine

    if engine == LOCAL and workers is not None:
        raise click.UsageError(f"--engine-workers needs --engine {RAY}")
    try:
        opened = open_engine(engine, address=address, workers=workers,
                             gpus_per_worker=0.0 if device == "cpu" else None)
    except EngineError as error:
        raise click.UsageError(str(error)) from error
    try:
        yield opened
    except EngineError as error:
        raise click.ClickException(str(error)) from error
    finally:
        opened.close()


def shard_size_for(engine: Engine) -> int:
    """Items per resumable shard when --shard-size is not given."""
    return RAY_SHARD_SIZE if engine.remote else DEFAULT_SHARD_SIZE


def remote_embedder(engine: Engine, model: str, embedder: EmbedderLike, device: str,
                    batch_size: int) -> RemoteEmbedder | None:
    """What a remote engine's workers load: the same checkpoint, checked by its fingerprint."""
    from indexer.cluster.embedding import RemoteEmbedder

    if not engine.remote:
        return None
    return RemoteEmbedder(recorded_model(model), embedder.fingerprint, device, batch_size)
