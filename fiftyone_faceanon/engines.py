"""Where the jobs of a run execute: this machine's process pool (``local``) or a Ray cluster (``ray``).

The core hands an engine the same three things whichever it is: a picklable callable that does
the per-item work (:class:`~.batch.Worker` for anonymizing, the metrics' batch evaluator), the jobs
(for anonymizing, chunks of files: :func:`~.batch.run_jobs`) and a worker count. The callable
pickles its settings (``__reduce__``), so each process of the pool or each Ray actor builds its own
copy once, loading the models once, and then calls it per job. An anonymizing run hands its
jobs, then each round of :func:`~.batch.unlink_run`, to one :meth:`Engine.pool`, whose local
processes it keeps for all of them.
Whatever the callable writes (outputs, sidecars) and returns is therefore the same on both engines;
an engine only decides where the calls run and streams their results back in job order.

``ray`` turns the jobs into a Ray Dataset (one row per job: its index and the pickled job) and runs
them with ``map_batches`` over a fixed pool of actors (:class:`_JobActor`), ``num_cpus`` and
``num_gpus`` each. Ray Data restarts an actor that dies and runs its unfinished rows again; the
callable's own resume check (the sidecar) makes a rerun of a finished image a skip. Each actor
returns one row per job (index, pickled result); the driver puts them back in job order, checks
that every job came back exactly once and yields the results, as :func:`.parallel.imap` does.

Ray is imported only when a run uses it, so the ``local`` path and the CLI do not pay for it and
work without the ``ray`` extra.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import socket
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, TypeVar

from .parallel import auto_workers, imap as local_imap, pool as local_pool

J = TypeVar("J")
R = TypeVar("R")

#: The engine names the CLI, the FiftyOne API and the operators accept.
ENGINES = ("local", "ray", "auto")
#: What installs Ray, named in the error when it is missing.
RAY_EXTRA = "pip install 'fiftyone_faceanon[ray]'"
#: Seconds to wait for a TCP connection to a cluster's address before giving up.
CONNECT_TIMEOUT = 5.0
#: Ray's switch for token authentication. ``ray start`` turns it on for the cluster, and a
#: driver joining by explicit address sends no token unless this is ``token`` (Ray's choice:
#: a token is not sent to an address it was not asked for).
AUTH_MODE = "RAY_AUTH_MODE"
#: Added to the error when joining an explicit address fails without that switch.
TOKEN_HINT = (f"a cluster started with `ray start` asks for its token: set {AUTH_MODE}=token, "
              "with the token in RAY_AUTH_TOKEN or ~/.ray/auth_token")


class EngineError(RuntimeError):
    """The engine cannot run: Ray is not installed or its cluster cannot be reached (one line)."""


@dataclass(frozen=True)
class Engine:
    """Where jobs run. ``kind`` ``local``: :func:`.parallel.imap`'s process pool on this machine.
    ``ray``: actors on the Ray cluster at ``address`` (``None``: ``RAY_ADDRESS`` when set, else a
    Ray instance started on this machine), each reserving ``num_cpus`` CPUs and ``num_gpus``
    GPUs."""

    kind: str = "local"
    address: str | None = None
    num_cpus: float = 1.0
    num_gpus: float = 0.0

    def connect(self) -> Engine:
        """Check that the engine can run now (for ``ray``: import Ray and join or start the
        cluster); raises :class:`EngineError` with one line when it cannot. Returns itself."""
        if self.kind == "ray":
            _connect_ray(self.address)
        return self

    def auto_workers(self, units: int) -> int:
        """:func:`.parallel.auto_workers` for ``units`` of work on this engine's cores: this
        machine's, or the actors the Ray cluster's CPUs (and GPUs) can hold at once (one per
        CPU for actors that reserve none)."""
        if self.kind == "local":
            return auto_workers(units)
        ray = _connect_ray(self.address)
        resources = ray.cluster_resources()
        slots = resources.get("CPU", 1.0) / (self.num_cpus or 1.0)
        if self.num_gpus:
            slots = min(slots, resources.get("GPU", 0.0) / self.num_gpus)
        return auto_workers(units, cores=max(1, int(slots)))

    def imap(self, fn: Callable[[J], R], jobs: Iterable[J], workers: int, chunksize: int = 1
             ) -> Iterator[R]:
        """``fn(job)`` for each job, in job order, in ``workers`` processes or actors (``0``:
        :meth:`auto_workers` over the jobs); ``chunksize`` jobs go to a process at a time."""
        if self.kind == "local":
            yield from local_imap(fn, jobs, workers, chunksize)
            return
        jobs = list(jobs)
        if jobs:
            yield from self._ray_imap(fn, jobs, workers or self.auto_workers(len(jobs)),
                                      chunksize)

    @contextmanager
    def pool(self, fn: Callable[[J], R], workers: int
             ) -> Iterator[Callable[..., Iterator[R]]]:
        """``run(jobs, chunksize=1)`` for several lists of jobs in turn (a run and its rounds
        of :func:`~.batch.unlink_run`): :meth:`imap` of each on ``workers`` processes or
        actors. ``local``: the same processes for every list while the block lasts, each
        building ``fn`` once (``workers <= 1``: this process); ``ray``: an actor pool per
        list."""
        if self.kind == "local":
            with local_pool(fn, workers) as run:
                yield run
            return
        yield lambda jobs, chunksize=1: self.imap(fn, jobs, workers, chunksize)

    def _ray_imap(self, fn: Callable[[J], R], jobs: list[J], workers: int, chunksize: int
                  ) -> Iterator[R]:
        _connect_ray(self.address)
        import ray.data

        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the caller shows its own
        context.print_on_execution_start = False
        for handler in logging.getLogger("ray.data").handlers:
            if handler.get_name() == "console":  # the file log in Ray's session folder stays
                handler.setLevel(logging.ERROR)
        blocks = math.ceil(len(jobs) / chunksize)
        rows = [{"index": i, "job": pickle.dumps(job)} for i, job in enumerate(jobs)]
        dataset = ray.data.from_items(rows, override_num_blocks=blocks).map_batches(
            _JobActor, fn_constructor_args=(fn, os.getcwd()), batch_size=chunksize,
            batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=min(workers, blocks)),
            num_cpus=self.num_cpus, num_gpus=self.num_gpus)
        done: dict[int, R] = {}
        following = 0
        for row in dataset.iter_rows():
            index = int(row["index"])
            if index < following or index in done:
                raise RuntimeError(f"ray engine: job {index} ({jobs[index]}) came back twice")
            done[index] = pickle.loads(row["result"])
            while following in done:
                yield done.pop(following)
                following += 1
        if following != len(jobs):
            raise RuntimeError(f"ray engine: {len(jobs) - following} of {len(jobs)} jobs did "
                               "not come back")


def as_engine(engine: Engine | str = "local", address: str | None = None,
              num_cpus: float = 1.0, num_gpus: float = 0.0) -> Engine:
    """An :class:`Engine` from a name of :data:`ENGINES` (an :class:`Engine` is returned as it
    is). ``auto`` is ``ray`` when ``address`` is given or ``RAY_ADDRESS`` is set, else
    ``local``; ``address`` needs ``ray`` or ``auto``."""
    if isinstance(engine, Engine):
        return engine
    if engine not in ENGINES:
        raise ValueError(f"engine {engine!r}: choose one of {', '.join(ENGINES)}")
    if engine == "auto":
        engine = "ray" if address or os.environ.get("RAY_ADDRESS") else "local"
    if engine == "local" and address:
        raise ValueError(f"a Ray address ({address}) needs the ray engine")
    return Engine(engine, address or None, num_cpus, num_gpus)


def _connect_ray(address: str | None):
    """The ``ray`` module, connected: to the running session of this process, else to the
    cluster at ``address`` (or ``RAY_ADDRESS``), else to a new Ray instance on this machine."""
    try:
        import ray
    except ImportError:
        raise EngineError(f"the ray engine needs Ray, which is not installed: {RAY_EXTRA}"
                          ) from None
    if ray.is_initialized():
        return ray
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address and address != "auto":
        _check_reachable(address)
    try:
        ray.init(address=address, include_dashboard=False, logging_level=logging.ERROR)
    except Exception as e:  # whatever Ray raises when it cannot start or join: one line
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        hint = ""
        if address and address != "auto" and AUTH_MODE not in os.environ:
            hint = f" ({TOKEN_HINT})"
        raise EngineError(f"cannot start or reach {where}: {_first_line(e)}{hint}") from None
    return ray


def _check_reachable(address: str) -> None:
    """Fail with one line, within :data:`CONNECT_TIMEOUT` seconds, when nothing listens at
    ``address`` (``host:port`` or ``ray://host:port``): Ray itself retries for minutes."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise EngineError(f"Ray address {address!r}: expected HOST:PORT, ray://HOST:PORT or auto")
    try:
        socket.create_connection((host.strip("[]"), int(port)), CONNECT_TIMEOUT).close()
    except OSError as e:
        raise EngineError(f"cannot reach the Ray cluster at {address}: "
                          f"{e.strerror or type(e).__name__}") from None


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


class _JobActor:
    """One Ray actor of a run: ``fn`` arrives pickled and is rebuilt here once (its models load
    once per actor); each call runs it on a batch of rows, one result row per job. Runs torch
    with one thread, as a pool process does, and in the driver's working folder when this node
    has it, so relative paths and error lines read as on the local engine."""

    def __init__(self, fn: Callable, cwd: str):
        import torch

        torch.set_num_threads(1)
        if os.path.isdir(cwd):
            os.chdir(cwd)
        self.fn = fn

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        results = [pickle.dumps(self.fn(pickle.loads(job))) for job in batch["job"]]
        return {"index": batch["index"], "result": np.array(results, dtype=object)}
