"""Peak resident memory of a benchmark's whole process tree (this process and its pool workers:
``resource``'s RUSAGE_CHILDREN misses the workers of a forkserver pool, which are not waited for
by this process)."""

from __future__ import annotations

import threading

import psutil


class TreeMemory(threading.Thread):
    """Samples the resident memory of this process and all its descendants (the pool's
    workers), and of the processes ``also`` picks (for a Ray cluster started apart: its
    daemons are not our descendants); ``peak_mib`` is the largest total seen."""

    def __init__(self, every: float = 0.2, also=None):
        super().__init__(daemon=True)
        self.every, self.peak_mib, self.done = every, 0.0, threading.Event()
        self.also = also

    def run(self) -> None:
        me = psutil.Process()
        while not self.done.wait(self.every):
            total = 0
            procs = {me, *me.children(recursive=True)}
            if self.also:
                procs |= {p for p in psutil.process_iter() if self.also(p)}
            for proc in procs:
                try:
                    total += proc.memory_info().rss
                except psutil.NoSuchProcess:
                    pass
            self.peak_mib = max(self.peak_mib, total / 2**20)

    def __enter__(self) -> "TreeMemory":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.join()
