"""`blur-retrieval serve INDEX_DIR`: the index and its model behind an HTTP server.

FastAPI and uvicorn are imported only when the command runs, so the rest of the CLI works
without the `serve` extra.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
from pathlib import Path

import click

from indexer.errors import IndexStoreError
from retrieval.devices import DEVICES

EXTRA_HINT = "install the serve extra: pip install -e '.[serve]'"


@click.command("serve")
@click.argument("index_dir", type=click.Path(path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; 0.0.0.0 opens the server to the network.")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
              help="Where to embed queries and search.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Server processes; each loads the model, all share the memory-mapped index.")
@click.option("--allowed-host", "allowed_hosts", multiple=True, metavar="NAME[:PORT]",
              help="Also answer requests with this Host header, e.g. the name a proxy in front "
                   "forwards (without a port: on any port); repeatable. A request for a Host "
                   "other than these, the loopback names and --host gets 400.")
def serve_command(index_dir: Path, host: str, port: int, device: str, workers: int,
                  allowed_hosts: tuple[str, ...]) -> None:
    """Answer searches of INDEX_DIR over HTTP: a web page at /, a JSON API (schema at
    /openapi.json)."""
    missing = _missing_extra()
    if missing is not None:
        raise click.UsageError(f"{EXTRA_HINT} ({missing} is not installed)")
    import uvicorn

    from indexer.serve.app import SETTINGS_ENV, create_app
    from indexer.serve.connections import uvicorn_settings
    from indexer.serve.hosts import host_rules
    from indexer.serve.search import load_searcher

    try:
        searcher = load_searcher(index_dir, device)
    except (IndexStoreError, ValueError) as error:  # CheckpointError is a ValueError
        raise click.UsageError(f"cannot serve {index_dir}: {error}") from error
    health = searcher.health()
    click.echo(f"serving {health['index']['count']} images of {index_dir} with model "
               f"{health['model']['name']} on {health['device']['model']}; listening on "
               f"http://{host}:{port}/ (API schema at /openapi.json)")
    if workers == 1:
        uvicorn.run(create_app(searcher, host_rules(host, port, allowed_hosts)), host=host,
                    port=port, **uvicorn_settings())
        return
    del searcher  # each worker process loads its own copy
    os.environ[SETTINGS_ENV] = json.dumps({
        "index_dir": str(index_dir.resolve()), "device": device, "host": host, "port": port,
        "allowed_hosts": list(allowed_hosts),
        "log_level": logging.getLogger("indexer").getEffectiveLevel()})
    uvicorn.run("indexer.serve.app:app_from_environment", factory=True, host=host, port=port,
                workers=workers, **uvicorn_settings())


def _missing_extra() -> str | None:
    """The first serve dependency that cannot be imported (python-multipart's module was named
    `multipart` before release 0.0.13)."""
    for names in (("fastapi",), ("uvicorn",), ("python_multipart", "multipart")):
        if not any(_importable(name) for name in names):
            return names[0]
    return None


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True
