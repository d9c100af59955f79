"""Speed of one dp68 training step (``gan.train.Trainer.step``) in each memory layout.

    python benchmarks/bench_gan_train.py --shards .data/dp68_128 [--preset base] [--steps 30]

Needs only torch, numpy and OpenCV, like the training loop, so it runs on a stock PyTorch GPU
machine (``scripts/train_dp68_gpu.sh`` runs it before training and trains in the faster
layout). For each layout a fresh trainer of the preset runs ``--warmup`` steps (cuDNN picks its
kernels), then ``--steps`` timed ones on batches drawn beforehand, so the time is the device's
alone (the training loop prepares batches in other threads while a step runs; R1 runs in one
step of every ``r1_every``, so ``--steps`` is best a multiple of it). Prints a Markdown table for
docs/benchmarks.md, then ``best: <layout>``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from fiftyone_faceanon.gan.shards import load_faces
from fiftyone_faceanon.gan.train import PRESETS, Trainer, draw_batch, hardware

LAYOUTS = {"contiguous": False, "channels_last": True}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_layout(preset: str, channels_last: bool, crops, landmarks, device: torch.device,
                warmup: int, steps: int) -> float:
    """Seconds per step of a fresh ``preset`` trainer in one layout."""
    cfg = PRESETS[preset]
    trainer = Trainer(cfg, device, channels_last=channels_last)
    batches = [draw_batch(cfg, 0, t, crops, landmarks) for t in range(warmup + steps)]
    for batch in batches[:warmup]:
        trainer.step(batch)
    sync(device)
    t0 = time.perf_counter()
    for batch in batches[warmup:]:
        trainer.step(batch)
    sync(device)
    return (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", type=Path, required=True)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="base")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--faces", type=int, default=2000, help="Faces to load from the shards.")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = PRESETS[args.preset]
    crops, landmarks = load_faces(args.shards, cfg.net.resolution, args.faces)
    rows = {name: time_layout(args.preset, last, crops, landmarks, device, args.warmup,
                              args.steps)
            for name, last in LAYOUTS.items()}
    print(f"\n{hardware(device, 1)}, torch {torch.__version__}, preset {args.preset} "
          f"({cfg.net.resolution} px, batch {cfg.batch}), {args.steps} steps after "
          f"{args.warmup}\n")
    print("| layout | ms per step | steps/s | faces/s |")
    print("| --- | --- | --- | --- |")
    for name, seconds in rows.items():
        print(f"| {name} | {1000 * seconds:.1f} | {1 / seconds:.2f} | {cfg.batch / seconds:.0f} |")
    print(f"\nbest: {min(rows, key=rows.get)}")


if __name__ == "__main__":
    main()
