"""The engine interface and the in-process engine."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

LOCAL = "local"
RAY = "ray"
ENGINES = (LOCAL, RAY)

Worker = Callable[[Any], Any]
WorkerFactory = Callable[[], Worker]


class EngineError(RuntimeError):
    """The engine cannot be started or a job failed on every try; the message says which."""


class Engine(Protocol):
    """Runs jobs through workers that a factory builds, one worker per process."""

    name: str
    remote: bool  # True: the factory and jobs are pickled to other processes

    def map_unordered(self, make_worker: WorkerFactory, jobs: Sequence[Any]
                      ) -> Iterator[tuple[int, Any]]:
        """(position of the job in `jobs`, its result) for every job, as each finishes."""
        ...

    def close(self) -> None: ...


class LocalEngine:
    """This process, one job after the other: no pickling, the factory may be a closure."""

    name = LOCAL
    remote = False

    def map_unordered(self, make_worker: WorkerFactory, jobs: Sequence[Any]
                      ) -> Iterator[tuple[int, Any]]:
        if not jobs:
            return
        worker = make_worker()
        for position, job in enumerate(jobs):
            yield position, worker(job)

    def close(self) -> None:
        pass
