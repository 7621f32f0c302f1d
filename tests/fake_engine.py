"""An engine for tests that behaves as a remote one would, in this process."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from fake_embedder import SimulatedCrash


class Backwards:
    """A 'remote' engine in this process: pickles nothing, runs the jobs last first, and stops
    with SimulatedCrash after `stop_after` results (None: never)."""

    name = "backwards"
    remote = True

    def __init__(self, stop_after: int | None = None) -> None:
        self.stop_after = stop_after
        self.jobs_run = 0

    def map_unordered(self, make_worker, jobs: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        worker = make_worker() if jobs else None
        for given, position in enumerate(reversed(range(len(jobs)))):
            if given == self.stop_after:
                raise SimulatedCrash("driver killed")
            self.jobs_run += 1
            yield position, worker(jobs[position])

    def close(self) -> None:
        pass
