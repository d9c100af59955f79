"""Wall time of ``faceanon gate`` (the pre-commit hook's command) on staged LFW images against a
1,000-face gallery, with a cold and a warm embedding cache.

    python benchmarks/bench_gate.py --n 100 --gallery-size 1000 [--workdir DIR]

The gallery is built once with ``faceanon gallery add`` from LFW ``peopleDevTrain.txt`` images
(kept in WORKDIR, by default in the temp folder: a gallery is refused inside a git work tree;
mode 0600; reused by later runs). The N
gated images are the first of ``peopleDevTest.txt`` (other people), staged with ``git add`` in a
temporary git repository; the command is run exactly as the hook runs it, as a subprocess in that
repository, once with an empty embedding cache (cold: detection and both judges run) and once
again (warm: everything from the cache). The one-time conversion of the FaceNet-CASIA weights is
done before timing. Targets: cold <= 20 s, warm <= 2 s. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent.parent / "shared/data"
FACEANON = Path(sys.executable).parent / "faceanon"


def lfw_images(people_file: str) -> list[Path]:
    lines = (DATA / "lfw" / people_file).read_text().splitlines()[1:]
    paths = []
    for line in lines:
        name, count = line.split()
        for i in range(1, int(count) + 1):
            paths.append(DATA / f"lfw/images_deepfunneled/{name}/{name}_{i:04d}.jpg")
    return paths


def run(cmd: list, cwd: Path, env: dict) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    result = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True,
                            text=True)
    return time.perf_counter() - t0, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--gallery-size", type=int, default=1000)
    ap.add_argument("--workdir", type=Path,
                    default=Path(tempfile.gettempdir()) / "faceanon_bench_gate")
    args = ap.parse_args()

    work = args.workdir.absolute()
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "XDG_CACHE_HOME": str(work / "cache")}
    gallery = work / f"gallery_{args.gallery_size}.npz"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if not gallery.exists():
            src = tmp / "gallery_src"
            src.mkdir()
            for p in lfw_images("peopleDevTrain.txt")[: args.gallery_size]:
                (src / p.name).symlink_to(p)
            seconds, result = run([FACEANON, "gallery", "add", src, "--gallery", gallery], tmp, env)
            if result.returncode not in (0, 1):
                sys.exit(result.stderr)
            print(f"gallery built in {seconds:.0f} s: {result.stderr.strip().splitlines()[-1]}")
        repo = tmp / "dataset"
        repo.mkdir()
        subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
        names = []
        for p in lfw_images("peopleDevTest.txt")[: args.n]:
            shutil.copy(p, repo / p.name)
            names.append(p.name)
        subprocess.run(["git", "add", *names], cwd=repo, check=True)
        staged = subprocess.run(["git", "diff", "--cached", "--name-only"], cwd=repo, check=True,
                                capture_output=True, text=True).stdout.split()
        cmd = [FACEANON, "gate", "--gallery", gallery, "--quiet", *staged]
        shutil.rmtree(work / "cache" / "fiftyone_faceanon" / "gate", ignore_errors=True)
        cold, result = run(cmd, repo, env)
        if result.returncode not in (0, 1):
            sys.exit(result.stderr)
        summary_cold = result.stderr.strip().splitlines()[-1]
        warm, result = run(cmd, repo, env)
        summary_warm = result.stderr.strip().splitlines()[-1]
        assert summary_warm == summary_cold, (summary_cold, summary_warm)
    print(f"exit code {result.returncode}; {summary_warm}")
    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} cores\n")
    print("| run | images | gallery images | wall s | target |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| cold cache | {len(staged)} | {args.gallery_size} | {cold:.1f} | <= 20 s |")
    print(f"| warm cache | {len(staged)} | {args.gallery_size} | {warm:.1f} | <= 2 s |")


if __name__ == "__main__":
    main()
