"""Throughput of ``faceanon anonymize`` on LFW images, per stage and end to end, and peak memory.

    python benchmarks/bench_anonymize.py --n 500 [--backend donor] [--no-verify] [--workers 0]
        [--upright-only] [--no-unlink]

Uses the first N images of LFW ``peopleDevTest.txt`` (250x250, one face each) from
``../shared/data``, linked into a temporary folder, and runs the same code as the CLI
(``batch.anonymize_files``) with every post-processing step on. Prints a Markdown table for
docs/benchmarks.md. Model loading is timed separately from the per-image work. An image
anonymized again to unlink it (``batch.unlink_run``) counts the time of both passes per stage.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from fiftyone_faceanon.batch import anonymize_files
from fiftyone_faceanon.benchmark import STAGES
from fiftyone_faceanon.pipeline import Pipeline, Settings
from memory import TreeMemory

DATA = Path(__file__).resolve().parent.parent.parent / "shared/data"


def lfw_test_images(n: int) -> list[Path]:
    lines = (DATA / "lfw/peopleDevTest.txt").read_text().splitlines()[1:]
    paths = []
    for line in lines:
        name, count = line.split()
        for i in range(1, int(count) + 1):
            paths.append(DATA / f"lfw/images_deepfunneled/{name}/{name}_{i:04d}.jpg")
    return paths[:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--backend", default="donor")
    ap.add_argument("--verify", action=argparse.BooleanOptionalAction, default=True,
                    help="score every face with the judges (the CLI's default)")
    ap.add_argument("--workers", type=int, default=0,
                    help="processes (0: faceanon anonymize's default, one per core)")
    ap.add_argument("--any-roll", action=argparse.BooleanOptionalAction, default=True,
                    help="find faces at any roll (the CLI's default; --upright-only: no)")
    ap.add_argument("--upright-only", dest="any_roll", action="store_false")
    ap.add_argument("--unlink", action=argparse.BooleanOptionalAction, default=True,
                    help="anonymize again the faces linked to another photo of their person "
                         "(the CLI's default)")
    args = ap.parse_args()

    settings = Settings(backend=args.backend, device="cpu", verify=args.verify,
                        any_roll=args.any_roll, unlink=args.unlink)
    t0 = time.perf_counter()
    Pipeline(settings).anonymize(np.zeros((64, 64, 3), np.uint8))  # loads the models
    load_s = time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        src.mkdir()
        for p in lfw_test_images(args.n):
            (src / p.name).symlink_to(p)
        per_image: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))

        def on_outcome(outcome) -> None:  # twice for an image anonymized again to unlink it
            for k, v in outcome.timings.items():
                per_image[outcome.rel][k] += v

        faces = errors = unverified = 0
        t0 = time.perf_counter()
        with TreeMemory() as memory:
            outcomes = anonymize_files([src], Path(tmp) / "out", settings, workers=args.workers,
                                       on_outcome=on_outcome)
        wall = time.perf_counter() - t0
        stages: dict[str, list[float]] = defaultdict(list)
        for o in outcomes:
            faces += o.faces
            errors += o.status == "error"
            unverified += o.status == "unverified"
            for k, v in per_image[o.rel].items():
                stages[k].append(v)

    n = len(outcomes)
    peak_mib = memory.peak_mib
    print(f"machine: {platform.processor() or platform.machine()}, "
          f"{__import__('os').cpu_count()} cores, {platform.python_version()}")
    print(f"images: {n} ({faces} faces, {errors} errors, {unverified} unverified), "
          f"backend {args.backend}, "
          f"verify {args.verify}, any roll {args.any_roll}, unlink {args.unlink}, "
          f"workers {args.workers}, "
          f"model loading {load_s:.1f} s\n")
    print("| stage | ms / image | images/s |\n| --- | --- | --- |")
    for k in STAGES:
        if any(stages[k]):  # a stage that did not run (judge, for ksame without verification)
            ms = 1000 * float(np.mean(stages[k]))
            print(f"| {k} | {ms:.1f} | {1000 / ms:.0f} |")
    print(f"| **end to end** (wall) | {1000 * wall / n:.1f} | **{n / wall:.1f}** |")
    print(f"\npeak memory (resident, this process and its workers together): {peak_mib:.0f} MiB")


if __name__ == "__main__":
    main()
