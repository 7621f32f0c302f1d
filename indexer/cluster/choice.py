"""Choosing an engine by name: the one module that knows every engine."""

from __future__ import annotations

from indexer.cluster.engine import ENGINES, LOCAL, RAY, Engine, EngineError, LocalEngine


def open_engine(name: str, address: str | None = None, gpus_per_worker: float | None = None,
                workers: int | None = None) -> Engine:
    """The engine `name` names. For "ray": join the cluster at `address` (None: start a local one
    on this machine's cores), `workers` actors (None: one per CPU the cluster has), each given
    `gpus_per_worker` GPUs (None: one each when the cluster has GPUs, else none)."""
    if name == LOCAL:
        if address is not None:
            raise EngineError(f"--address {address} needs --engine {RAY}")
        return LocalEngine()
    if name == RAY:
        from indexer.cluster.ray_engine import RayEngine

        return RayEngine(address=address, gpus_per_worker=gpus_per_worker, workers=workers)
    raise EngineError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
