"""``images.atomic_write``: a writer killed between its temporary file and the rename leaves
nothing behind once the path is written again, and concurrent writers of one path take turns."""

from __future__ import annotations

import multiprocessing as mp
import subprocess
import sys

from fiftyone_faceanon.images import atomic_write

KILLED_WRITER = """
import os, signal, sys
os.replace = lambda *args: os.kill(os.getpid(), signal.SIGKILL)  # dies just before the rename
from fiftyone_faceanon.images import atomic_write
atomic_write(sys.argv[1], b"old, never renamed")
"""


def test_next_write_takes_over_what_a_killed_writer_left(tmp_path):
    target = tmp_path / "a.png.json"
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(target)], timeout=120)
    assert proc.returncode == -9
    assert [p.name for p in tmp_path.iterdir()] == [".a.png.json.tmp"]
    atomic_write(target, b"new")
    assert [p.name for p in tmp_path.iterdir()] == ["a.png.json"]
    assert target.read_bytes() == b"new"


def _write_many(path: str, tag: bytes) -> None:
    for i in range(200):
        atomic_write(path, tag * 1000 + str(i).encode())


def test_concurrent_writers_take_turns(tmp_path):
    target = tmp_path / "shared.bin"
    ctx = mp.get_context("spawn")
    writers = [ctx.Process(target=_write_many, args=(str(target), tag)) for tag in (b"a", b"b")]
    for w in writers:
        w.start()
    for w in writers:
        w.join(120)
    assert [w.exitcode for w in writers] == [0, 0]
    assert [p.name for p in tmp_path.iterdir()] == ["shared.bin"]
    data = target.read_bytes()
    assert data[:1000] in (b"a" * 1000, b"b" * 1000) and data[1000:] == b"199"
