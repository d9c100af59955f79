"""Throughput and peak memory of ``faceanon anonymize`` on the local engine and on Ray, back to back.

    python benchmarks/bench_ray.py --n 1000 --workers 1 2 --repeat 2 [--engines local ray nodes cluster]

Uses the first N images of LFW ``peopleDevTest.txt`` (250x250, one face each) from
``../shared/data``, linked into a temporary folder, and runs the code behind the CLI
(``batch.anonymize_files``, backend ``ksame``, every post-processing step on) once per engine and
worker count, each in a fresh process, the engines in turn for each worker count:

- ``ray`` on a local instance that the run's process starts through the engine
  (``Engine.connect``, as ``faceanon anonymize --engine ray`` does without an address);
- ``nodes`` on a simulated cluster of as many one-CPU nodes as workers
  (``ray.cluster_utils.Cluster``, one actor per node);
- ``cluster`` on a head started apart with ``ray start --head --num-cpus WORKERS``, as a cluster
  is run, joined through ``RAY_ADDRESS`` as ``faceanon anonymize --engine auto`` does, twice in
  a row: the first run on the new cluster starts Ray Data's detached system actors (stats,
  autoscaling coordinator, actor locations), the second finds them up as every later run on a
  cluster does.

Ray's start is timed apart, as on a cluster that is already up. The timed part is the
``anonymize_files`` call: pool or actors starting and loading their models, and every image.
Peak memory is the resident memory of the run's process and all its descendants together (the
pool's processes; Ray's GCS, raylet, agents and actors; for ``cluster``, every process of the
Ray installation). The load average before and after each run shows whether something else ran.
Prints a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import psutil

from bench_anonymize import lfw_test_images
from memory import TreeMemory

#: The port of the head that ``cluster`` starts (not Ray's default, so as not to meet another).
HEAD_PORT = 6391


def ray_process(proc: psutil.Process) -> bool:
    """Whether ``proc`` belongs to a Ray cluster on this machine (daemon, agent or worker)."""
    try:
        cmd = proc.cmdline()
    except psutil.Error:
        return False
    return bool(cmd) and (cmd[0].startswith("ray::") or "/site-packages/ray/" in " ".join(cmd[:3]))


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def one_run(src: Path, out: Path, engine: str, workers: int) -> dict:
    """Anonymize ``src`` into ``out`` in this process; the figures of the run."""
    from fiftyone_faceanon.batch import anonymize_files
    from fiftyone_faceanon.engines import as_engine
    from fiftyone_faceanon.pipeline import Pipeline, Settings

    # as measured since 2026-12-01: ksame, no verification (the engines' overhead, not the judges')
    settings = Settings(backend="ksame", device="cpu", verify=False)
    Pipeline(settings).anonymize(np.zeros((64, 64, 3), np.uint8))  # weights into the page cache
    with TreeMemory(also=ray_process if engine.startswith("cluster") else None) as memory:
        t0 = time.perf_counter()
        if engine.startswith("cluster"):  # joins the head at RAY_ADDRESS
            chosen = as_engine("auto").connect()
        elif engine == "nodes":
            from ray.cluster_utils import Cluster

            nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
            for _ in range(workers - 1):
                nodes.add_node(num_cpus=1)
            chosen = as_engine("ray", nodes.address).connect()
        else:
            chosen = as_engine(engine).connect()
        start_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        outcomes = anonymize_files([src], out, settings, workers=workers, engine=chosen)
        wall = time.perf_counter() - t0
    if engine == "nodes":  # a local instance ends with this process; simulated nodes do not
        import ray

        ray.shutdown()
        nodes.shutdown()
    elif engine.startswith("cluster"):  # leaves the cluster up for the next run
        import ray

        ray.shutdown()
    statuses = [o.status for o in outcomes]
    return {"engine": engine, "workers": workers, "images": len(outcomes),
            "faces": sum(o.faces for o in outcomes), "errors": statuses.count("error"),
            "skipped": statuses.count("skipped"), "wall_s": wall, "start_s": start_s,
            "peak_mib": memory.peak_mib}


@contextmanager
def ray_head(cpus: int) -> Iterator[dict]:
    """A Ray head with ``cpus`` CPUs started apart (``ray start --head``, with a token) for the
    block; the environment that joins it (address and token)."""
    ray = str(Path(sys.executable).with_name("ray"))
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": uuid.uuid4().hex * 2}
    subprocess.run([ray, "start", "--head", f"--num-cpus={cpus}", f"--port={HEAD_PORT}",
                    "--include-dashboard=false", "--disable-usage-stats"],
                   capture_output=True, check=True, env={**os.environ, **auth})
    try:
        yield {"RAY_ADDRESS": f"127.0.0.1:{HEAD_PORT}", **auth}
    finally:
        subprocess.run([ray, "stop", "--force"], capture_output=True, check=True)


def timed(src: Path, tmp: Path, engine: str, workers: int, round_: int, env: dict | None = None
          ) -> dict:
    """One run of :func:`one_run` in a fresh process, with the load averages around it."""
    out = tmp / f"out-{round_}-{engine.replace(', ', '-').replace(' ', '')}-{workers}"
    before = load_average()
    child = subprocess.run([sys.executable, __file__, "--one", str(src), str(out), engine,
                            str(workers)], capture_output=True, text=True, check=True,
                           env={**os.environ, **(env or {})})
    row = json.loads(child.stdout.strip().splitlines()[-1])
    row.update(round=round_, load_before=before, load_after=load_average(),
               at=time.strftime("%H:%M:%S"))
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=1, help="rounds of every configuration")
    ap.add_argument("--engines", nargs="+", default=["local", "ray"],
                    choices=["local", "ray", "nodes", "cluster"])
    ap.add_argument("--one", nargs=4, metavar=("SRC", "OUT", "ENGINE", "WORKERS"),
                    help=argparse.SUPPRESS)  # a single run, in the child process
    args = ap.parse_args()
    if args.one:
        src, out, engine, workers = args.one
        print(json.dumps(one_run(Path(src), Path(out), engine, int(workers))))
        return

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        src.mkdir()
        for p in lfw_test_images(args.n):
            (src / p.name).symlink_to(p)
        for round_ in range(1, args.repeat + 1):
            for workers in args.workers:
                for engine in args.engines:
                    if engine == "cluster":
                        with ray_head(workers) as join:
                            for run in ("cluster, 1st run", "cluster, 2nd run"):
                                rows.append(timed(src, Path(tmp), run, workers, round_, join))
                    else:
                        rows.append(timed(src, Path(tmp), engine, workers, round_))

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}\n")
    print("| round | engine | workers | images (faces, errors) | wall s | images/s | "
          "Ray start s | peak memory, all processes | load before -> after | ended |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        start = "-" if r["engine"] == "local" else f"{r['start_s']:.1f}"
        print(f"| {r['round']} | {r['engine']} | {r['workers']} | {r['images']} ({r['faces']}, "
              f"{r['errors']}) | {r['wall_s']:.1f} | **{r['images'] / r['wall_s']:.2f}** | "
              f"{start} | {r['peak_mib']:.0f} MiB | {r['load_before']} -> {r['load_after']} | "
              f"{r['at']} |")
    print("\nRay against local at equal workers (images/s, ray / local - 1):")
    for r in rows:
        local = [x for x in rows if x["engine"] == "local"
                 and (x["round"], x["workers"]) == (r["round"], r["workers"])]
        if r["engine"] != "local" and local:
            print(f"- round {r['round']}, {r['engine']}, {r['workers']} worker(s): "
                  f"{local[0]['wall_s'] / r['wall_s'] - 1:+.1%} throughput, "
                  f"{r['peak_mib'] - local[0]['peak_mib']:+.0f} MiB")


if __name__ == "__main__":
    main()
