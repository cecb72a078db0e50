"""Order-preserving parallel map over jobs: a local spawn process pool, or Ray actors.

Two users: training rollouts (each worker builds its env once, then collects many episodes) and
evaluation points (each job is a whole simulated run).  Both go through one call::

    with make_executor("local", 4, init=functools.partial(build_env, cfg)) as ex:
        episodes = ex.map(collect, jobs)        # collect(state, job); state = build_env(cfg)

Contract, the same for every backend:

* ``init`` (picklable, zero arguments, may be None) runs once in each worker; its return value is
  that worker's *state*, passed as the first argument of ``fn`` for every job the worker runs.
* ``map(fn, jobs)`` returns ``[fn(state, job) for job in jobs]`` in job order, whichever worker
  ran which job.  ``fn`` must be a picklable (module-level) function.  ``on_done(i, result)``, if
  given, is called in the caller's process as each job finishes (in completion order): progress
  bars and bookkeeping see results while the others still run.
* Results therefore depend only on the jobs (each carries its own seed) and on ``init``, never on
  the backend or on the number of workers: same seeds => same results.
* An exception raised by ``fn`` or ``init`` in a worker propagates to the caller of ``map``.
* Workers run in the working directory the executor was created in (so relative paths in jobs
  mean the same as in the caller), where that directory exists on the worker's machine.

Backends:

``local``: a :class:`concurrent.futures.ProcessPoolExecutor` of ``workers`` *spawned* processes
    (spawn: no state inherited from the parent; the children get the parent's ``sys.path``).

``ray``: ``workers`` Ray actors (one CPU each), jobs dispatched to whichever actor is free.  Ray is
    imported lazily (the ``marllb[ray]`` extra).  With ``ray_address`` (``"auto"``, ``"HOST:6379"``
    or ``"ray://HOST:10001"``) the actors are spread over that cluster, whose nodes must have the
    same ``marllb`` installed (jobs name its functions by module); without it a local Ray instance
    with ``num_cpus=workers`` is started and stopped again by :meth:`RayActorExecutor.close`.
    If Ray is already initialised in this process (e.g. by a test fixture or the caller), that
    connection is used and left open.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Callable, Sequence

from simulator.config import UserError

__all__ = ["BACKENDS", "RAY_INSTALL_HINT", "Executor", "LocalPoolExecutor", "RayActorExecutor",
           "make_executor", "import_ray", "init_ray"]

log = logging.getLogger(__name__)

BACKENDS = ("local", "ray")  #: names accepted by :func:`make_executor` (and ``--backend``)
RAY_INSTALL_HINT = "pip install 'marllb[ray]'"

WorkerFn = Callable[[Any, Any], Any]  #: fn(state, job) -> result
OnDone = Callable[[int, Any], None] | None  #: on_done(job index, result), called as jobs finish


class Executor:
    """Base of the backends: ``map`` in job order, ``close`` (idempotent), context manager."""

    backend = ""
    workers = 0

    def map(self, fn: WorkerFn, jobs: Sequence[Any], on_done: OnDone = None) -> list[Any]:
        """``[fn(state, job) for job in jobs]`` computed on the workers, in job order."""
        raise NotImplementedError

    def close(self) -> None:
        """Stop the workers (waits for nothing: ``map`` is synchronous)."""
        raise NotImplementedError

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# ------------------------------------------------------------------------------------------------
# local: spawned process pool
# ------------------------------------------------------------------------------------------------
_LOCAL_STATE: Any = None  # the worker state inside a pool process (set by _local_init)


def _local_init(init: Callable[[], Any] | None) -> None:
    global _LOCAL_STATE
    _LOCAL_STATE = init() if init is not None else None


def _local_call(fn: WorkerFn, job: Any) -> Any:
    return fn(_LOCAL_STATE, job)


class LocalPoolExecutor(Executor):
    """``workers`` spawned processes on this machine; ``init`` runs once in each."""

    backend = "local"

    def __init__(self, workers: int, init: Callable[[], Any] | None = None) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = ProcessPoolExecutor(
            max_workers=workers, mp_context=mp.get_context("spawn"), initializer=_local_init,
            initargs=(init,))

    def map(self, fn: WorkerFn, jobs: Sequence[Any], on_done: OnDone = None) -> list[Any]:
        if self._pool is None:
            raise RuntimeError("executor is closed")
        futures = {self._pool.submit(_local_call, fn, job): i for i, job in enumerate(jobs)}
        results: list[Any] = [None] * len(futures)
        for future in as_completed(futures):
            i = futures[future]
            results[i] = future.result()  # re-raises the worker's exception
            if on_done is not None:
                on_done(i, results[i])
        return results

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


# ------------------------------------------------------------------------------------------------
# ray: one actor per worker
# ------------------------------------------------------------------------------------------------
def import_ray() -> Any:
    """The ``ray`` module, or a :class:`UserError` saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise UserError(f"--backend ray needs Ray, which is not installed ({exc}): "
                        f"{RAY_INSTALL_HINT}") from None
    return ray


def init_ray(num_cpus: int, address: str | None = None) -> bool:
    """Make sure this process is connected to Ray; returns True if this call connected it.

    With ``address``: connect to that cluster.  Without: start a local Ray instance with
    ``num_cpus`` CPUs, no dashboard, whose workers get this process's ``sys.path`` as
    ``PYTHONPATH`` (so they import the same modules a spawned local worker would).  If Ray is
    already initialised, nothing happens and False is returned (the caller must then not shut
    it down).
    """
    ray = import_ray()
    if ray.is_initialized():
        if address is not None:
            log.warning("Ray is already initialised in this process; ignoring address %r", address)
        return False
    if address is not None:
        log.info("connecting to the Ray cluster at %s", address)
        ray.init(address=address, logging_level=logging.WARNING)
    else:
        paths = [p or os.getcwd() for p in sys.path]
        ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level=logging.WARNING,
                 runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(paths)}})
    return True


class _RayWorker:
    """Body of one Ray actor: moves to the caller's working directory ``cwd`` (if it exists on
    this node), builds its state once, then runs jobs on it."""

    def __init__(self, init: Callable[[], Any] | None, cwd: str) -> None:
        if os.path.isdir(cwd):
            os.chdir(cwd)
        self.state = init() if init is not None else None

    def run(self, fn: WorkerFn, job: Any) -> Any:
        return fn(self.state, job)


class RayActorExecutor(Executor):
    """``workers`` Ray actors of one CPU each; ``init`` runs once in each actor.

    ``map`` keeps every actor busy (a new job goes to the first actor that finishes) and returns
    the results in job order.  ``close`` kills the actors and, if this executor started Ray,
    shuts Ray down.
    """

    backend = "ray"

    def __init__(self, workers: int, init: Callable[[], Any] | None = None,
                 address: str | None = None) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self._ray = import_ray()
        self.workers = workers
        self._owns_ray = init_ray(workers, address)
        actor_cls = self._ray.remote(num_cpus=1)(_RayWorker)
        cwd = os.getcwd()
        self._actors: list[Any] = [actor_cls.remote(init, cwd) for _ in range(workers)]

    def map(self, fn: WorkerFn, jobs: Sequence[Any], on_done: OnDone = None) -> list[Any]:
        ray = self._ray
        if not self._actors:
            raise RuntimeError("executor is closed")
        fn_ref = ray.put(fn)
        results: list[Any] = [None] * len(jobs)
        pending: dict[Any, tuple[int, Any]] = {}  # object ref -> (job index, actor)
        idle = list(self._actors)
        next_job = 0
        while next_job < len(jobs) or pending:
            while idle and next_job < len(jobs):
                actor = idle.pop(0)
                pending[actor.run.remote(fn_ref, jobs[next_job])] = (next_job, actor)
                next_job += 1
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                i, actor = pending.pop(ref)
                results[i] = ray.get(ref)  # re-raises the worker's exception
                idle.append(actor)
                if on_done is not None:
                    on_done(i, results[i])
        return results

    def close(self) -> None:
        for actor in self._actors:
            self._ray.kill(actor)
        self._actors = []
        if self._owns_ray:
            self._ray.shutdown()
            self._owns_ray = False


def make_executor(backend: str, workers: int, *, init: Callable[[], Any] | None = None,
                  ray_address: str | None = None) -> Executor:
    """An executor of ``workers`` (>= 1) workers on ``backend`` (one of :data:`BACKENDS`).

    ``ray_address`` is only meaningful for ``ray`` (a UserError otherwise).  Raises
    :class:`UserError` for an unknown backend, ``workers < 1`` or Ray missing.
    """
    if backend not in BACKENDS:
        raise UserError(f"backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if workers < 1:
        raise UserError(f"backend {backend!r} needs workers >= 1, got {workers}")
    if backend == "ray":
        return RayActorExecutor(workers, init, ray_address)
    if ray_address is not None:
        raise UserError("--ray-address is only used with --backend ray")
    return LocalPoolExecutor(workers, init)
