"""What judging tries in bfloat16 saves (``Verifier.score``), counted within one run.

    python benchmarks/bench_bf16.py [--n 200] [--video]

Anonymizes the first N LFW ``peopleDevTest.txt`` images in chunks of 8, as a CLI worker does
(``Pipeline.anonymize_many``), or with ``--video`` the Hamilton clip on one thread, with
FaceNet-CASIA's ``embed_crops`` wrapped to count the faces it embeds in float32 and in bfloat16
and the seconds each takes, and to measure how far bfloat16 moves each embedding (L2 distance of
the unit vectors, by embedding the same crops once more in the other precision, outside the
counted seconds). Counting within one run, instead of timing a run before and after, holds still
on a VM whose speed changes between runs. Prints a Markdown row for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench_anonymize import lfw_test_images
from bench_video import CLIP
from fiftyone_faceanon.images import load_image
from fiftyone_faceanon.metrics.identity import FaceNetJudge
from fiftyone_faceanon.pipeline import Pipeline, Settings
from fiftyone_faceanon.video import VideoSettings, anonymize_video


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--video", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)

    counts = {False: [0, 0.0], True: [0, 0.0]}  # fast: [faces, seconds]
    drift: list[np.ndarray] = []
    extra = [0.0]  # seconds spent measuring the drift, taken out of the run's
    embed = FaceNetJudge.embed_crops

    def counted(judge, crops, fast=False):
        t0 = time.perf_counter()
        rows = embed(judge, crops, fast)
        counts[fast][0] += len(crops)
        t1 = time.perf_counter()
        counts[fast][1] += t1 - t0
        drift.append(np.linalg.norm(rows - embed(judge, crops, not fast), axis=1))
        extra[0] += time.perf_counter() - t1
        return rows

    FaceNetJudge.embed_crops = counted
    pipeline = Pipeline(Settings(device="cpu"))
    if not pipeline.panel.judges["facenet_casia"].fast:
        raise SystemExit("this CPU has no native bfloat16: verification runs in float32 only")
    t0 = time.perf_counter()
    if args.video:
        with tempfile.TemporaryDirectory() as tmp:
            anonymize_video(pipeline, CLIP, Path(tmp) / CLIP.name, CLIP.name, VideoSettings())
        what = f"{CLIP.name}, one thread"
    else:
        paths = lfw_test_images(args.n)
        for k in range(0, len(paths), 8):
            chunk = paths[k:k + 8]
            pipeline.anonymize_many([load_image(p).rgb for p in chunk], [p.name for p in chunk])
        what = f"{len(paths)} LFW images, chunks of 8"
    wall = time.perf_counter() - t0 - extra[0]
    (full, full_s), (fast, fast_s) = counts[False], counts[True]
    moved = np.concatenate(drift)
    saved = fast * (full_s / max(full, 1) - fast_s / max(fast, 1))
    print("| run | float32 faces, s (ms each) | bfloat16 faces, s (ms each) | CPU saved | "
          "bfloat16 drift, mean / max |\n| --- | --- | --- | --- | --- |")
    print(f"| {what} ({wall:.1f} s) | {full}, {full_s:.1f} ({1000 * full_s / max(full, 1):.0f}) "
          f"| {fast}, {fast_s:.1f} ({1000 * fast_s / max(fast, 1):.0f}) | {saved:.1f} s, "
          f"{100 * saved / (wall + saved):.0f}% | {moved.mean():.3f} / {moved.max():.3f} |")


if __name__ == "__main__":
    main()
