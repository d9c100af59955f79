"""Throughput of ``faceanon anonymize`` on a video, per stage and end to end, and how many
faces each detection interval leaves out.

    python benchmarks/bench_video.py [VIDEO] [--every 1 3 5 8] [--no-verify] [--coverage]

Default VIDEO: ``fixtures/face_recognition/examples/short_hamilton_clip.mp4`` from
``../shared/data`` (275 frames, 640x360). Runs the same code as the CLI
(``batch.anonymize_files``, one worker, the video rendered by as many threads as the machine has
cores), decode and encode included; frames/s is over the video's own time, the run's time adds
loading the models; ``CPU s`` is the CPU time of the process and its finished children over
the run (all threads), ``cores`` that over the run's wall time: how much of the machine the run
kept busy. ``--coverage`` also runs the detector on every frame of the original and counts the
faces it finds (probability 0.9 or more) that no replaced face of the output covers (box IoU
0.3): what ``--detect-every`` misses. Prints Markdown tables for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from fiftyone_faceanon import faces as F
from fiftyone_faceanon.batch import anonymize_files
from fiftyone_faceanon.images import records_dir
from fiftyone_faceanon.pipeline import Pipeline, Settings
from fiftyone_faceanon.metrics.temporal import unreplaced_faces
from fiftyone_faceanon.tracking import TrackSettings
from fiftyone_faceanon.video import VideoSettings
from fiftyone_faceanon.videoio import read_frames
from memory import TreeMemory

DATA = Path(__file__).resolve().parent.parent.parent / "shared/data"
CLIP = DATA / "fixtures/face_recognition/examples/short_hamilton_clip.mp4"
#: ``link``: reading each track's faces again for unlinking, after the video is written
STAGES = ("detect", "track", "plan", "render", "render_occluders", "render_backend",
          "render_postprocess", "render_encode", "link")


def cpu_seconds() -> float:
    """User and system CPU time so far of this process (all threads) and its finished
    children."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def uncovered(video: Path, record: dict) -> list[dict]:
    """``{"frame", "box"}`` of every face MTCNN finds in the original that no face of the
    record covers (:func:`~fiftyone_faceanon.metrics.temporal.unreplaced_faces`)."""
    detected = [F.detect_boxes([frame], "mtcnn", 0.9, 20, "cpu")[0][0]
                for frame in read_frames(video)]
    return unreplaced_faces(detected, [[f["box"] for f in faces]
                                       for faces in record["frames"]])["faces"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("video", nargs="?", type=Path, default=CLIP)
    ap.add_argument("--every", type=int, nargs="+", default=[5])
    ap.add_argument("--verify", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--coverage", action="store_true")
    args = ap.parse_args()

    settings = Settings(device="cpu", verify=args.verify)
    Pipeline(settings).anonymize(np.zeros((64, 64, 3), np.uint8))  # models into the page cache
    rows = []
    for every in args.every:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "out"
            video = VideoSettings(tracking=TrackSettings(detect_every=every))
            with TreeMemory() as memory:
                t0, c0 = time.perf_counter(), cpu_seconds()
                (outcome,) = anonymize_files([args.video], out, settings, workers=1,
                                             video=video)
                wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
            assert outcome.status in ("ok", "unverified"), outcome.message
            record = json.loads((records_dir(out) / f"{args.video.name}.json").read_text())
            frames = record["video"]["frames"]
            total = outcome.timings["total"]
            row = {"every": every, "frames": frames, "wall": wall, "total": total,
                   "fps": frames / total, "cpu": cpu, "cores": cpu / wall,
                   "tracks": len(record["tracks"]),
                   "fail_closed": sum(t["anonymized"]["status"].startswith("fail_closed")
                                      for t in record["tracks"]),
                   "peak": memory.peak_mib, **{k: outcome.timings.get(k, 0.0) for k in STAGES}}
            if args.coverage:
                row["missed"] = uncovered(args.video, record)
            rows.append(row)
            print(json.dumps(row), flush=True)

    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{args.video.name}, verification {'on' if args.verify else 'off'}\n")
    print("| detect every | frames/s | s video | s run | CPU s | cores | "
          + " | ".join(f"{k} s" for k in STAGES)
          + " | tracks | fail-closed | peak MiB |" + (" missed faces |" if args.coverage else ""))
    print("| --- " * (len(STAGES) + 9 + bool(args.coverage)) + "|")
    for r in rows:
        print(f"| {r['every']} | {r['fps']:.1f} | {r['total']:.1f} | {r['wall']:.1f} | "
              f"{r['cpu']:.1f} | {r['cores']:.2f} | "
              + " | ".join(f"{r[k]:.1f}" for k in STAGES)
              + f" | {r['tracks']} | {r['fail_closed']} | {r['peak']:.0f} |"
              + (f" {len(r['missed'])} |" if args.coverage else ""))


if __name__ == "__main__":
    main()
