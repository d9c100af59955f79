"""Running a picklable callable over many jobs, in this process or in a pool of processes.

Every process runs torch with one intra-op thread: the per-image networks are too small to gain
from more (MTCNN on a 250 px image: 0.13 s with 1 thread, several seconds with 2 on a busy
2-core machine), so parallelism comes from processes. A pool process receives the callable by
pickling, so a callable that holds models pickles its settings (``__reduce__``) and each process
loads the models once.

:func:`in_order` is the threaded counterpart inside one process, for work that releases the GIL
(OpenCV, torch): a bounded look-ahead that hands results on in order (a video's colour pass, the
GAN's training batches).
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Executor
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, TypeVar

J = TypeVar("J")
R = TypeVar("R")


def auto_workers(jobs: int, per_worker: int = 32, cores: int | None = None) -> int:
    """One process per CPU core (``cores``: this machine's when None), but only where each gets
    at least ``per_worker`` jobs: a process loads the models in about 3 s, the time of some 30
    images (500 LFW images with ``ksame``: 11 images/s with one process, 19 with two on 2 cores;
    docs/benchmarks.md)."""
    return max(1, min(cores or os.cpu_count() or 1, jobs // per_worker))


@contextmanager
def single_torch_thread() -> Iterator[None]:
    """torch with one intra-op thread inside the block (restored after)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _init(fn: Callable) -> None:
    import torch

    torch.set_num_threads(1)
    global _FN
    _FN = fn


def _call(job):
    return _FN(job)


def imap(fn: Callable[[J], R], jobs: Iterable[J], workers: int, chunksize: int = 1
         ) -> Iterator[R]:
    """``fn(job)`` for each job, in order; ``workers > 1`` runs them in that many processes
    (``0``: :func:`auto_workers`)."""
    jobs = list(jobs)
    with pool(fn, min(workers or auto_workers(len(jobs)), len(jobs))) as run:
        yield from run(jobs, chunksize)


@contextmanager
def pool(fn: Callable[[J], R], workers: int
         ) -> Iterator[Callable[..., Iterator[R]]]:
    """``run(jobs, chunksize=1)``, which gives ``fn(job)`` for each job, in order, in the same
    ``workers`` processes for every list of jobs it is given while the block lasts (each
    process builds ``fn`` once), or in this process for ``workers <= 1``."""
    if workers <= 1:
        def run(jobs: Iterable[J], chunksize: int = 1) -> Iterator[R]:
            with single_torch_thread():
                yield from map(fn, jobs)

        yield run
        return
    import multiprocessing as mp

    ctx = mp.get_context("forkserver" if os.name == "posix" else "spawn")
    with ctx.Pool(workers, initializer=_init, initargs=(fn,)) as processes:
        def run(jobs: Iterable[J], chunksize: int = 1) -> Iterator[R]:
            yield from processes.imap(_call, jobs, chunksize)

        yield run


def in_order(pool: Executor, fn: Callable, items: Iterable[tuple], ahead: int
             ) -> Iterator[tuple]:
    """``(item, fn(*item))`` for each item, in order, computed by ``pool`` (threads) up to
    ``ahead`` items ahead of the one handed on."""
    waiting: deque = deque()
    for item in items:
        waiting.append((item, pool.submit(fn, *item)))
        if len(waiting) > ahead:
            item, done = waiting.popleft()
            yield item, done.result()
    for item, done in waiting:
        yield item, done.result()
