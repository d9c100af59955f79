"""``images.atomic_write``: a writer killed between its temporary file and the rename leaves
nothing behind once the path is written again, and concurrent writers of one path take turns.
``images.as_written``: an image as the file ``encode_image`` writes gives it back."""

from __future__ import annotations

import multiprocessing as mp
import subprocess
import sys

import numpy as np
import pytest

from fiftyone_faceanon.images import (LoadedImage, as_written, atomic_write, encode_image,
                                      load_image)

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


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp"])
@pytest.mark.parametrize("gray", [False, True])
def test_as_written_is_what_the_written_file_reads_back(tmp_path, astronaut, suffix, gray):
    image = LoadedImage(astronaut, gray=gray)
    path = tmp_path / f"a{suffix}"
    path.write_bytes(encode_image(image, suffix))
    back = as_written(image, suffix)
    assert back.shape == astronaut.shape and back.dtype == np.uint8
    assert np.array_equal(back, load_image(path).rgb)
    if gray:  # written as its luma: three equal channels
        assert np.array_equal(back[..., 0], back[..., 2])
    elif suffix == ".png":  # lossless
        assert np.array_equal(back, astronaut)
    else:
        assert 0 < np.abs(back.astype(int) - astronaut).mean() < 3
