"""Speed and memory of the full metrics suite (``faceanon evaluate``) on LFW.

The first ``--n`` images of LFW's evaluation split (``peopleDevTest.txt``, first image of each
person, then the second, ...) are linked into ``WORK/orig`` and anonymized once with the ``ksame``
backend into ``WORK/anon`` (resumed on a rerun; not timed). Then ``evaluate_dirs`` runs with
every available metric and the script prints pairs/s, seconds per metric group and peak memory
(resident set size) as a Markdown table for ``docs/benchmarks.md``.

``--workers`` is ``evaluate_dirs``'s (processes, each with one torch thread; ``faceanon evaluate``
picks one per core for a folder this size). CPU seconds are those of the metric groups in every
process; peak memory is the largest resident set of this process and its workers together,
sampled every 0.2 s.

    python benchmarks/bench_evaluate.py --n 500 --work /tmp/faceanon_bench_evaluate --workers 2
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

from memory import TreeMemory

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
    ap.add_argument("--workers", type=int, default=2, help="processes")
    args = ap.parse_args()

    from fiftyone_faceanon.metrics import Evaluator, evaluate_dirs

    orig, anon = prepare(args.work, args.n)
    rss_before = peak_rss_mib()
    t0 = time.perf_counter()
    evaluator = Evaluator(device="cpu")
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    with TreeMemory() as memory:
        report = evaluate_dirs(orig, anon, evaluator=evaluator, batch=args.batch,
                               workers=args.workers)
    run_s, cpu_s = time.perf_counter() - t0, sum(evaluator.cpu_timings.values())
    pairs = len(report["pairs"])
    faces = sum(len(p["faces"]) for p in report["pairs"])
    result = {
        "pairs": pairs, "faces": faces, "errors": len(report["errors"]),
        "load_s": load_s, "run_s": run_s, "cpu_s": cpu_s, "pairs_per_s": pairs / run_s,
        "timings_s": dict(evaluator.timings), "cpu_timings_s": dict(evaluator.cpu_timings),
        "peak_rss_mib_before_models": rss_before, "peak_rss_mib": memory.peak_mib,
        "workers": args.workers, "cpus": os.cpu_count(),
        "machine": f"{platform.processor() or platform.machine()}",
        "summary": report["summary"], "unavailable": report["unavailable"],
    }
    (args.work / "bench_evaluate.json").write_text(json.dumps(result, indent=1))
    print(f"| pairs | faces | workers | wall s | pairs/s (wall) | CPU s / pair | model loading "
          f"| peak RSS |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n"
          f"| {pairs} | {faces} | {args.workers} | {run_s:.1f} | **{pairs / run_s:.2f}** | "
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
