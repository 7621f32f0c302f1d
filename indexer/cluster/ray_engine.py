"""Jobs across a Ray cluster: a pool of actors, each holding one worker (one model copy).

Ray is an optional dependency (`pip install 'blur-retrieval[ray]'`), imported only here. A worker
process that dies (killed, out of memory) is restarted by Ray and its unfinished job is run again
on the new process; results already yielded are the caller's to keep.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from indexer.cluster.engine import RAY, EngineError, Worker, WorkerFactory

LOG = logging.getLogger(__name__)

IN_FLIGHT_PER_WORKER = 2  # a job queued behind the running one keeps each worker busy
JOB_RETRIES = 3  # tries of a job whose worker process died, beyond the first


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as error:
        raise EngineError("--engine ray needs Ray: pip install 'blur-retrieval[ray]'") from error
    return ray


def _token_hint(address: str | None) -> str:
    """What to try when joining fails: since Ray 2.59 `ray start --head` enables token
    authentication, and a client that does not ask for it is refused with no word of why."""
    if address is None or os.environ.get("RAY_AUTH_MODE") == "token":
        return ""
    return ("; if the cluster was started with `ray start` (token authentication, the default "
            "since Ray 2.59), set RAY_AUTH_MODE=token here and give its token in "
            "~/.ray/auth_token or RAY_AUTH_TOKEN (`ray get-auth-token` on the head prints it)")


class _Host:
    """The body of every actor: builds the worker of a call once, then runs its jobs.

    Actors outlive a call, so a second call (an `index add` after a build, the next method
    group of a benchmark) does not start processes again; a new call's factory replaces the
    previous worker. A worker that cannot be built (a checkpoint missing on that host) fails each
    job with the factory's own exception, which reaches the caller as is.
    """

    def __init__(self) -> None:
        self.call: int | None = None
        self.worker: Worker | None = None
        self.failure: Exception | None = None

    def run(self, call: int, make_worker: WorkerFactory, job: Any) -> Any:
        if call != self.call:
            self.call, self.worker, self.failure = call, None, None
            try:
                self.worker = make_worker()
            except Exception as error:  # handed to the caller below, job after job
                self.failure = error
        if self.worker is None:
            raise self.failure
        return self.worker(job)


class RayEngine:
    """Ray actors on the cluster at `address` (None: a local cluster on this machine's cores).

    `workers` actors (None: one per CPU; with GPUs in the cluster, one per GPU), each given
    `gpus_per_worker` GPUs (None: one per worker when the cluster has GPUs, else 0) and an equal
    share of the CPUs.
    """

    name = RAY
    remote = True

    def __init__(self, address: str | None = None, gpus_per_worker: float | None = None,
                 workers: int | None = None) -> None:
        self._ray = ray = _import_ray()
        self._started = not ray.is_initialized()
        if self._started:
            # A local cluster's workers import what this process imports, from the same places
            # (a source checkout, a test folder); a joined cluster has its own environment.
            paths = {"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}}
            try:
                ray.init(address=address, include_dashboard=False, log_to_driver=False,
                         logging_level=logging.WARNING, configure_logging=False,
                         runtime_env=None if address else paths)
            except (ConnectionError, RuntimeError, ValueError) as error:
                where = f"the Ray cluster at {address}" if address else "a local Ray cluster"
                raise EngineError(f"could not start or join {where}: {error}"
                                  f"{_token_hint(address)}") from error
        resources = ray.cluster_resources()
        cpus, gpus = int(resources.get("CPU", 1)), int(resources.get("GPU", 0))
        if gpus_per_worker is None:
            gpus_per_worker = 1.0 if gpus else 0.0
        if workers is None:
            workers = max(1, int(gpus / gpus_per_worker)) if gpus_per_worker else max(1, cpus)
        if workers < 1:
            raise EngineError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self.cpus_per_worker = cpus / workers
        self.gpus_per_worker = gpus_per_worker
        self._actors: list[Any] = []
        self._calls = 0
        LOG.info("Ray cluster: %d CPUs, %d GPUs; %d workers of %.2g CPUs and %.2g GPUs each",
                 cpus, gpus, workers, self.cpus_per_worker, gpus_per_worker)

    def map_unordered(self, make_worker: WorkerFactory, jobs: Sequence[Any]
                      ) -> Iterator[tuple[int, Any]]:
        if not jobs:
            return
        ray = self._ray
        actors = self._pool()[:len(jobs)]
        self._calls += 1
        call, factory = self._calls, ray.put(make_worker)
        pending: dict[Any, tuple[int, Any]] = {}  # result reference -> (job position, actor)
        upcoming = iter(range(len(jobs)))

        def submit(actor: Any) -> None:
            position = next(upcoming, None)
            if position is not None:
                pending[actor.run.remote(call, factory, jobs[position])] = (position, actor)

        try:
            for actor in actors:
                for _ in range(IN_FLIGHT_PER_WORKER):
                    submit(actor)
            while pending:
                [done], _ = ray.wait(list(pending), num_returns=1)
                position, actor = pending.pop(done)
                yield position, self._result(done, position)
                submit(actor)
        finally:
            for reference in pending:  # a caller that stops early leaves nothing running
                ray.cancel(reference, force=False)

    def _pool(self) -> list[Any]:
        """The actors, started on first use and kept until `close`."""
        if not self._actors:
            host = self._ray.remote(_Host).options(
                num_cpus=self.cpus_per_worker, num_gpus=self.gpus_per_worker,
                max_restarts=-1, max_task_retries=JOB_RETRIES)
            self._actors = [host.remote() for _ in range(self.workers)]
        return self._actors

    def _result(self, reference: Any, position: int) -> Any:
        ray = self._ray
        try:
            return ray.get(reference)
        except ray.exceptions.RayTaskError as error:  # the worker's own exception
            cause = getattr(error, "cause", None)
            raise (cause if isinstance(cause, Exception) else EngineError(str(error))) from None
        except ray.exceptions.RayError as error:  # the worker process was lost on every try
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise EngineError(f"job {position}: its Ray worker process died on each of "
                              f"{JOB_RETRIES + 1} tries ({type(error).__name__}: {first_line})"
                              ) from error

    def close(self) -> None:
        for actor in self._actors:
            self._ray.kill(actor)
        self._actors = []
        if self._started and self._ray.is_initialized():
            self._ray.shutdown()
