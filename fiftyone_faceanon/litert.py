"""The shipped MediaPipe networks (``models/*.tflite``), run with LiteRT (``ai-edge-litert``) on
the CPU: the hands (:mod:`~fiftyone_faceanon.hands`) and the face mesh
(:mod:`~fiftyone_faceanon.mesh`)."""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager

import numpy as np

_local = threading.local()


def _interpreter(name: str):
    """This thread's interpreter of a shipped network (a LiteRT interpreter must not run in two
    threads at once; the video pipeline renders frames in several)."""
    from ai_edge_litert.interpreter import Interpreter

    from .weights import model_path

    nets = _local.__dict__.setdefault("nets", {})
    if name not in nets:
        path = str(model_path(name))
        with _quiet_stderr():
            nets[name] = Interpreter(model_path=path, num_threads=1)
            nets[name].allocate_tensors()
    return nets[name]


@contextmanager
def _quiet_stderr():
    """File descriptor 2 sent to the null device: LiteRT's runtime prints "INFO: Created
    TensorFlow Lite XNNPACK delegate for CPU." there at each interpreter's creation, which no
    log level turns off (the interpreter without that delegate is 4x slower)."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def run(name: str, x: np.ndarray) -> list[np.ndarray]:
    """One (S, S, 3) float32 input through the shipped network ``name``: its outputs, batch
    axis dropped."""
    net = _interpreter(name)
    net.set_tensor(net.get_input_details()[0]["index"], x[None].astype(np.float32))
    net.invoke()
    return [net.get_tensor(d["index"])[0] for d in net.get_output_details()]
