"""The ray engine on a simulated two-node cluster (``ray.cluster_utils.Cluster``, one CPU per
node), with real models and photos: the local engine's bytes, every image done once, also when a
worker is killed with SIGKILL mid-run, and a rerun that resumes after the driver was killed."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import psutil
import pytest
from click.testing import CliRunner
from conftest import (ENGINE_IMAGES, ENGINE_SEED, RAY_OBJECT_STORE, file_tree, need_ray,
                      run_counts)

from fiftyone_faceanon.cli import main

FACEANON = Path(sys.executable).parent / "faceanon"


@pytest.fixture(scope="module")
def cluster():
    """Two Ray nodes on this machine, one CPU each; this process is connected to them."""
    ray = need_ray()
    from ray.cluster_utils import Cluster

    nodes = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "object_store_memory": RAY_OBJECT_STORE, "include_dashboard": False})
    nodes.add_node(num_cpus=1, object_store_memory=RAY_OBJECT_STORE)
    ray.init(address=nodes.address, logging_level=logging.ERROR)
    yield nodes
    ray.shutdown()
    nodes.shutdown()


def command(cluster, src: Path, out: Path) -> list:
    return [FACEANON, "anonymize", src, "-o", out, "--seed", str(ENGINE_SEED), "--engine", "ray",
            "--ray-address", cluster.address, "--workers", "2", "--no-verify"]


def start(cluster, src: Path, out: Path, log: Path) -> subprocess.Popen:
    """``faceanon anonymize --engine ray`` as its own driver process, stderr to ``log``."""
    with open(log, "w") as err:
        return subprocess.Popen(command(cluster, src, out), stdout=subprocess.DEVNULL,
                                stderr=err)


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.05)


def outputs(out: Path) -> int:
    return len(list(out.glob("*.jpg")))


def engine_actors(since: float) -> list[psutil.Process]:
    """The engine's Ray actor processes started after ``since`` (children of the nodes'
    raylets, which are children of this process)."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if "_JobActor" in " ".join(proc.cmdline()) and proc.create_time() >= since:
                found.append(proc)
        except psutil.NoSuchProcess:
            pass
    return found


def test_two_nodes_give_the_bytes_of_the_local_engine(cluster, engine_inputs, engine_reference,
                                                      tmp_path):
    import ray

    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    result = CliRunner().invoke(main, [str(a) for a in (
        "anonymize", engine_inputs, "-o", tmp_path / "out", "--seed", ENGINE_SEED, "--engine",
        "ray", "--workers", 2, "--no-verify")])
    assert result.exit_code == 0, result.output
    counts = run_counts(result.output)
    assert counts["ok"] + counts["no_face"] == ENGINE_IMAGES and counts["skipped"] == 0
    assert file_tree(tmp_path / "out") == file_tree(engine_reference)


def test_worker_killed_mid_run(cluster, engine_inputs, engine_reference, tmp_path):
    """One of the two actors (one per node) gets SIGKILL: Ray restarts it and runs its rows
    again; the run ends with every image once, the local bytes and no temporary file."""
    out, log = tmp_path / "out", tmp_path / "stderr.txt"
    since = time.time()
    proc = start(cluster, engine_inputs, out, log)
    wait_until(lambda: outputs(out) >= 4 or proc.poll() is not None, 300, "the first outputs")
    actors = engine_actors(since)
    assert len(actors) == 2 and len({a.ppid() for a in actors}) == 2, actors  # one per node
    actors[0].send_signal(signal.SIGKILL)
    assert outputs(out) < ENGINE_IMAGES, "the run ended before the kill"
    assert proc.wait(timeout=300) == 0, log.read_text()
    counts = run_counts(log.read_text())
    assert counts["error"] == 0 and sum(counts.values()) == ENGINE_IMAGES
    assert file_tree(out) == file_tree(engine_reference)


def test_driver_killed_then_rerun_resumes(cluster, engine_inputs, engine_reference, tmp_path):
    out, log = tmp_path / "out", tmp_path / "stderr.txt"
    since = time.time()
    proc = start(cluster, engine_inputs, out, log)
    wait_until(lambda: outputs(out) >= 4 or proc.poll() is not None, 300, "the first outputs")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    wait_until(lambda: not engine_actors(since), 60, "Ray to end the dead driver's actors")
    done = outputs(out)
    assert done < ENGINE_IMAGES, "the run ended before the kill"
    rerun = subprocess.run(command(cluster, engine_inputs, out), capture_output=True, text=True,
                           timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    counts = run_counts(rerun.stderr)
    # an image written when its sidecar was not yet (one per actor at most) is done again
    assert done - 2 <= counts["skipped"] < ENGINE_IMAGES and counts["error"] == 0
    assert sum(counts.values()) == ENGINE_IMAGES
    assert file_tree(out) == file_tree(engine_reference)
