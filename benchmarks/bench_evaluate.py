"""Speed and memory of the full metrics suite (``faceanon evaluate``) on LFW.

The first ``--n`` images of LFW's evaluation split (``peopleDevTest.txt``, first image of each
person, then the second, ...) are linked into ``WORK/orig`` and anonymized once with the ``ksame``
backend into ``WORK/anon`` (resumed on a rerun; not timed). Then ``evaluate_dirs`` runs with
every available metric and the script prints pairs/s, seconds per metric group and peak memory
(resident set size) as a Markdown table for ``docs/benchmarks.md``.

``--threads`` sets torch's intra-op threads (default 1: on a CPU shared with other jobs, OpenMP's
spin-waiting threads cost far more CPU than they save).

    python benchmarks/bench_evaluate.py --n 500 --work /tmp/faceanon_bench_evaluate --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LFW = ROOT.parent / "shared" / "data" / "lfw"


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def lfw_dev_test(n: int) -> list[Path]:
    """``n`` peopleDevTest images, one per person first, then second images, ..."""
    people = []
    for line in (LFW / "peopleDevTest.txt").read_text().splitlines()[1:]:
        name, count = line.split("\t")
        people.append((name, int(count)))
    images = []
    for k in range(1, max(c for _, c in people) + 1):
        for name, count in people:
            if k <= count:
                images.append(LFW / "images_deepfunneled" / name / f"{name}_{k:04d}.jpg")
                if len(images) == n:
                    return images
    return images


def prepare(work: Path, n: int) -> tuple[Path, Path]:
    from fiftyone_faceanon.batch import anonymize_files
    from fiftyone_faceanon.pipeline import Settings

    orig, anon = work / "orig", work / "anon"
    for src in lfw_dev_test(n):
        link = orig / src.parent.name / src.name
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(src)
    t0 = time.perf_counter()
    outcomes = anonymize_files([orig], anon, Settings(backend="ksame", device="cpu"))
    print(f"anonymized {sum(o.status != 'skipped' for o in outcomes)} images with ksame "
          f"({time.perf_counter() - t0:.0f} s, not part of the benchmark)", file=sys.stderr)
    return orig, anon


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500, help="pairs")
    ap.add_argument("--work", type=Path, default=Path("/tmp/faceanon_bench_evaluate"))
    ap.add_argument("--batch", type=int, default=8, help="pairs per MTCNN batch")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)

    from fiftyone_faceanon.metrics import Evaluator, evaluate_dirs

    orig, anon = prepare(args.work, args.n)
    rss_before = peak_rss_mib()
    t0 = time.perf_counter()
    evaluator = Evaluator(device="cpu")
    load_s = time.perf_counter() - t0
    t0, c0 = time.perf_counter(), time.process_time()
    report = evaluate_dirs(orig, anon, evaluator=evaluator, batch=args.batch)
    run_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    pairs = len(report["pairs"])
    faces = sum(len(p["faces"]) for p in report["pairs"])
    result = {
        "pairs": pairs, "faces": faces, "errors": len(report["errors"]),
        "load_s": load_s, "run_s": run_s, "cpu_s": cpu_s, "pairs_per_s": pairs / run_s,
        "timings_s": dict(evaluator.timings), "cpu_timings_s": dict(evaluator.cpu_timings),
        "peak_rss_mib_before_models": rss_before, "peak_rss_mib": peak_rss_mib(),
        "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
        "machine": f"{platform.processor() or platform.machine()}",
        "summary": report["summary"], "unavailable": report["unavailable"],
    }
    (args.work / "bench_evaluate.json").write_text(json.dumps(result, indent=1))
    print(f"| pairs | faces | torch threads | wall s | pairs/s (wall) | CPU s / pair | model loading "
          f"| peak RSS |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n"
          f"| {pairs} | {faces} | {args.threads} | {run_s:.1f} | **{pairs / run_s:.2f}** | "
          f"{cpu_s / max(pairs, 1):.3f} | {load_s:.1f} s | "
          f"{result['peak_rss_mib']:.0f} MiB ({rss_before:.0f} MiB before the models) |\n")
    print("| metric group | wall ms / pair | CPU ms / pair |\n| --- | --- | --- |")
    for name, s in sorted(evaluator.timings.items(), key=lambda kv: -kv[1]):
        cpu = evaluator.cpu_timings[name]
        print(f"| {name} | {1000 * s / max(pairs, 1):.1f} | {1000 * cpu / max(pairs, 1):.1f} |")
    print("\n| metric | mean | std | n |\n| --- | --- | --- | --- |")
    for name, s in report["summary"].items():
        std = "-" if s["std"] is None else f"{s['std']:.4g}"
        print(f"| {name} | {s['mean']:.4g} | {std} | {s['n']} |")
    for name, reason in report["unavailable"].items():
        print(f"\nunavailable: {name}: {reason}")


if __name__ == "__main__":
    main()
