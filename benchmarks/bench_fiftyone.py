"""Samples per second of the FiftyOne operators against the same work through the ``faceanon`` CLI.

    python benchmarks/bench_fiftyone.py --n 500 [--backend ksame] [--metrics-n 500]

Takes the first N images of LFW's evaluation split (``../shared/data/lfw``, linked into a
temporary folder, never copied into the repository) and times, each in a fresh process so model
loading counts on both sides:

- ``faceanon anonymize IN -o OUT`` against ``anonymize_faces`` run through
  ``fiftyone.operators.execute_operator`` on a dataset of the same files;
- ``faceanon evaluate IN OUT`` against ``compute_anonymization_metrics`` on that dataset.

The FiftyOne process also imports fiftyone, starts its MongoDB and builds the dataset; that is
reported apart ("setup"). The overhead is (FiftyOne process wall / CLI wall - 1), and without the
setup (operator wall / CLI wall - 1).

Then both operators run again delegated, the App's default for views of more than 50 samples: a
``fiftyone delegated launch`` service is started and waits, a client process builds a second
dataset of the same files and queues ``anonymize_faces`` and then ``compute_anonymization_metrics``
on it, and the time from queueing to the completed state (what the user waits) is compared with
the same CLI runs. Both sides use their default ``workers``. Prints two Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LFW = ROOT.parent / "shared" / "data" / "lfw"
BIN = Path(sys.executable).parent


def link_inputs(n: int, folder: Path) -> Path:
    """Symlink the first ``n`` images of LFW's DevTest people into ``folder/NAME/FILE``."""
    people = [line.split()[0] for line in (LFW / "peopleDevTest.txt").read_text().splitlines()[1:]]
    count = 0
    for name in people:
        for src in sorted((LFW / "images_deepfunneled" / name).glob("*.jpg")):
            dst = folder / name / src.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.symlink_to(src)
            count += 1
            if count == n:
                return folder
    return folder


def timed(cmd: list[str], env: dict) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if out.returncode not in (0, 1):
        raise RuntimeError(f"{cmd}: exit {out.returncode}\n{out.stderr[-3000:]}")
    return wall, out.stdout


def fresh_dataset(name: str, inputs: Path):
    """A persistent dataset ``name`` of the images under ``inputs``, replacing an older one."""
    import fiftyone as fo

    if fo.dataset_exists(name):
        fo.delete_dataset(name)
    return fo.Dataset.from_dir(dataset_dir=str(inputs), dataset_type=fo.types.ImageDirectory,
                               name=name, persistent=True)


def operation(stage: str, ds, outdir: Path, backend: str, n: int) -> tuple[str, dict, object]:
    """The operator, its parameters and its view for ``stage`` (anonymize or metrics)."""
    if stage == "anonymize":
        return "anonymize_faces", {"output_dir": str(outdir), "backend": backend}, ds.view()
    return "compute_anonymization_metrics", {"run_key": "bench"}, ds.limit(n)


def worker(stage: str, inputs: Path, outdir: Path, backend: str, n: int) -> None:
    """Runs in the child: one operator on the dataset of ``inputs``; prints its timings."""
    t0 = time.perf_counter()
    import fiftyone as fo
    import fiftyone.operators as foo

    from fiftyone_faceanon.fiftyone_api import install_plugin

    install_plugin()
    t_import = time.perf_counter()
    fo.list_datasets()  # the first database call starts MongoDB
    t_db = time.perf_counter()
    name = "bench-faceanon"
    ds = fresh_dataset(name, inputs) if stage == "anonymize" else fo.load_dataset(name)
    uri, params, view = operation(stage, ds, outdir, backend, n)
    t1 = time.perf_counter()
    result = foo.execute_operator(f"@faceanon/faceanon/{uri}",
                                  ctx={"dataset": ds, "view": view, "params": params})
    t2 = time.perf_counter()
    if result.error:
        raise SystemExit(result.error)
    print(json.dumps({"setup": t1 - t0, "import": t_import - t0, "database": t_db - t_import,
                      "dataset": t1 - t_db, "operator": t2 - t1, "samples": len(view)}))


def delegated_worker(inputs: Path, outdir: Path, backend: str, n: int) -> None:
    """Runs in the client: queues both operators for the running service, one after the other,
    and prints queue-to-completion and the service's own start-to-completion times."""
    import fiftyone.operators as foo
    from fiftyone.operators.delegated import DelegatedOperationService

    ds = fresh_dataset("bench-faceanon-delegated", inputs)
    service = DelegatedOperationService()
    timings = {}
    for stage in ("anonymize", "metrics"):
        uri, params, view = operation(stage, ds, outdir, backend, n)
        if not len(view):
            continue
        t0 = time.perf_counter()
        result = foo.execute_operator(f"@faceanon/faceanon/{uri}",
                                      ctx={"dataset": ds, "view": view, "params": params},
                                      request_delegation=True)
        while (doc := service.get(result.result["id"])).run_state not in ("completed", "failed"):
            time.sleep(0.1)
        t1 = time.perf_counter()
        if doc.run_state == "failed":
            raise SystemExit(f"{uri}: {doc.result.error}")
        timings[uri] = {"waited": t1 - t0, "samples": len(view),
                        "run": (doc.completed_at - doc.started_at).total_seconds()}
        ds.reload()
    print(json.dumps(timings))


def start_service(env: dict, log: Path) -> subprocess.Popen:
    """``fiftyone delegated launch`` writing to ``log``, returned once it says it is running."""
    service = subprocess.Popen([str(BIN / "fiftyone"), "delegated", "launch"],
                               env={**env, "PYTHONUNBUFFERED": "1"}, stdout=log.open("w"),
                               stderr=subprocess.STDOUT)
    while "service running" not in log.read_text():
        if service.poll() is not None:
            raise RuntimeError(f"fiftyone delegated launch exited with {service.returncode}, "
                               f"see {log}")
        time.sleep(0.2)
    return service


def stop_service(service: subprocess.Popen) -> None:
    """Ctrl-C, as its banner asks (again if it was caught mid-operation), then harder."""
    for sig in (signal.SIGINT, signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        service.send_signal(sig)
        try:
            service.wait(timeout=15)
            return
        except subprocess.TimeoutExpired:
            continue


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500, help="samples to anonymize")
    ap.add_argument("--metrics-n", type=int, default=None, help="samples to evaluate (default n)")
    ap.add_argument("--backend", default="ksame")
    ap.add_argument("--worker", choices=["anonymize", "metrics", "delegated"],
                    help=argparse.SUPPRESS)
    ap.add_argument("paths", nargs="*", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    m = args.n if args.metrics_n is None else args.metrics_n
    if args.worker == "delegated":
        delegated_worker(args.paths[0], args.paths[1], args.backend, m)
        return
    if args.worker:
        worker(args.worker, args.paths[0], args.paths[1], args.backend, m)
        return
    # the inputs' links, the outputs and the MongoDB database: deleted at the end
    with tempfile.TemporaryDirectory(prefix="bench-fo-", ignore_cleanup_errors=True) as tmp:
        compare(args, m, Path(tmp))


def compare(args: argparse.Namespace, m: int, tmp: Path) -> None:
    """Both tables, the CLI and FiftyOne processes working in ``tmp``."""
    env = {**os.environ, "FIFTYONE_DATABASE_DIR": str(tmp / "db"),
           "FIFTYONE_PLUGINS_DIR": str(tmp / "plugins"), "FIFTYONE_DO_NOT_TRACK": "true",
           "FIFTYONE_DATABASE_VALIDATION": "false", "FIFTYONE_SHOW_PROGRESS_BARS": "false"}
    inputs = link_inputs(args.n, tmp / "in")
    me = [sys.executable, __file__, "--backend", args.backend, "--n", str(args.n),
          "--metrics-n", str(m)]
    print(f"backend {args.backend}, LFW DevTest 250x250, {os.cpu_count()} CPU(s)\n")
    print("| work | samples | CLI s (samples/s) | FiftyOne process s (samples/s) | "
          "of which setup s (import / MongoDB / dataset) | operator s | "
          "overhead (process / CLI - 1) | "
          "without setup (operator / CLI - 1) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |", flush=True)
    cli = {}
    cli["anonymize_faces"], _ = timed([str(BIN / "faceanon"), "anonymize", str(inputs), "-o",
                                       str(tmp / "cli"), "--backend", args.backend], env)
    fo_wall, out = timed([*me, "--worker", "anonymize", str(inputs), str(tmp / "fo")], env)
    row("anonymize_faces", args.n, cli["anonymize_faces"], fo_wall,
        json.loads(out.strip().splitlines()[-1]))
    if m:
        sub = tmp / "in_m"  # the first m images, for the CLI's folder-to-folder evaluation
        for rel in sorted(p.relative_to(inputs) for p in inputs.rglob("*.jpg"))[:m]:
            for base, dst in ((inputs, sub / "orig"), (tmp / "cli", sub / "anon")):
                (dst / rel).parent.mkdir(parents=True, exist_ok=True)
                (dst / rel).symlink_to((base / rel).resolve())
                if base != inputs:
                    (dst / f"{rel}.json").symlink_to((base / f"{rel}.json").resolve())
        cli["compute_anonymization_metrics"], _ = timed(
            [str(BIN / "faceanon"), "evaluate", str(sub / "orig"), str(sub / "anon"), "--out",
             str(tmp / "eval.json")], env)
        fo_wall, out = timed([*me, "--worker", "metrics", str(inputs), str(tmp / "fo")], env)
        row("compute_anonymization_metrics", m, cli["compute_anonymization_metrics"], fo_wall,
            json.loads(out.strip().splitlines()[-1]))

    print("\nDelegated, to a running `fiftyone delegated launch`:\n")
    print("| work | samples | CLI s (samples/s) | queued to completed s (samples/s) | "
          "of which running s | overhead (queued to completed / CLI - 1) |")
    print("| --- | --- | --- | --- | --- | --- |", flush=True)
    service = start_service(env, tmp / "service.log")
    try:
        _, out = timed([*me, "--worker", "delegated", str(inputs), str(tmp / "fo_delegated")],
                       env)
    finally:
        stop_service(service)
    for name, t in json.loads(out.strip().splitlines()[-1]).items():
        n, waited = t["samples"], t["waited"]
        print(f"| {name} | {n} | {cli[name]:.1f} ({n / cli[name]:.2f}) | "
              f"{waited:.1f} ({n / waited:.2f}) | {t['run']:.1f} | "
              f"{100 * (waited / cli[name] - 1):+.1f}% |", flush=True)


def row(name: str, n: int, cli: float, wall: float, t: dict) -> None:
    print(f"| {name} | {n} | {cli:.1f} ({n / cli:.2f}) | {wall:.1f} ({n / wall:.2f}) | "
          f"{t['setup']:.1f} ({t['import']:.1f} / {t['database']:.1f} / {t['dataset']:.1f}) | "
          f"{t['operator']:.1f} | {100 * (wall / cli - 1):+.1f}% | "
          f"{100 * (t['operator'] / cli - 1):+.1f}% |", flush=True)

if __name__ == "__main__":
    main()
