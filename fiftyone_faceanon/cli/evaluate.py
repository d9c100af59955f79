"""``faceanon evaluate ORIG ANON``: the metrics suite over two folders paired by relative path."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from tqdm import tqdm

from ..images import atomic_write
from . import engine_options, main


def format_table(summary: dict) -> str:
    """``metric  mean  std  n`` lines of a report's summary."""
    lines = [f"{'metric':26s} {'mean':>12s} {'std':>12s} {'n':>6s}"]
    fmt = lambda v: "-" if v is None else f"{v:12.5g}"  # noqa: E731
    for name, s in summary.items():
        lines.append(f"{name:26s} {fmt(s['mean']):>12s} {fmt(s['std']):>12s} {s['n']:6d}")
    return "\n".join(lines)


@main.command()
@click.argument("orig", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("anon", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the JSON report here.")
@click.option("--groups", metavar="REGEX",
              help="Summarise per group too: the regex's first group in each relative path "
                   r"(e.g. UTKFace's race code: '^\d+_\d+_(\d)_').")
@click.option("--threshold", default=0.9, show_default=True,
              help="MTCNN probability for detection on both images.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--workers", default=0, show_default=True,
              help="Processes (Ray workers with --engine ray); 0: one per CPU core when there "
                   "are enough pairs.")
@engine_options
def evaluate(orig, anon, out, groups, threshold, device, workers, engine):
    """Score the anonymized images in ANON against the originals in ORIG (same relative paths).

    Faces come from each anonymized image's private record (ANON.private/REL.json) when present, else from
    detection. Prints a summary table; exit code 1 when any file was unpaired or unreadable.
    """
    from ..metrics import Evaluator, evaluate_dirs
    from ..metrics.evaluate import image_files

    total = len(set(image_files(orig)) | set(image_files(anon)))
    evaluator = Evaluator(device=device, threshold=threshold)
    bar = tqdm(total=total, desc="evaluate", unit="pair", file=sys.stderr, dynamic_ncols=True)

    def on_pair(rel, error):
        if error:
            tqdm.write(f"error: {error}", file=sys.stderr)
        bar.update(1)

    report = evaluate_dirs(orig, anon, groups, evaluator, on_pair=on_pair, workers=workers,
                           engine=engine)
    bar.close()
    if out:
        atomic_write(out, (json.dumps(report, indent=1) + "\n").encode())
    click.echo(format_table(report["summary"]))
    for label, summary in report.get("groups", {}).items():
        click.echo(f"\ngroup {label}\n{format_table(summary)}")
    for name, reason in report["unavailable"].items():
        click.echo(f"unavailable: {name}: {reason}")
    faces = sum(len(p["faces"]) for p in report["pairs"])
    click.echo(f"{len(report['pairs'])} pairs, {faces} faces, {len(report['errors'])} errors"
               + (f" -> {out}" if out else ""), err=True)
    sys.exit(1 if report["errors"] else 0)
