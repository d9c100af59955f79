"""``faceanon benchmark DATA``: every backend anonymizes DATA and is scored (paper Tables II-VI)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from . import main


def split_specs(text: str) -> list[str]:
    """``"donor:verify=1,geometry=0;ksame"``, ``"donor,ksame"`` or ``"donor:verify=1,seed=1"``
    -> the list of specs: ``;`` separates specs when present, else ``,`` does, except before a
    ``key=value`` option, which belongs to the spec before it (a spec's own options use ``,``:
    ``"donor:verify=1,seed=1"`` is one spec, not ``donor:verify=1`` and a backend ``seed=1``)."""
    if ";" in text:
        parts = text.split(";")
    else:
        parts = []
        for piece in text.split(","):
            if parts and "=" in piece and ":" not in piece:
                parts[-1] += "," + piece
            else:
                parts.append(piece)
    return [p.strip() for p in parts if p.strip()]


@main.command()
@click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--backends", default="donor,donor:verify=1,dp68,ksame,blur,pixelate,mask,noise",
              show_default=True,
              help="Semicolon- or comma-separated specs BACKEND[:key=value,...] (keys: geometry, "
                   "verify, tries, on_fail, occluders, seed, levels, detail, unlink, same_group; "
                   "verify is off unless set); unknown or unavailable backends are listed as "
                   "skipped.")
@click.option("--ablation", metavar="BACKEND",
              help="Table VI for this backend: photometric steps switched on in turn.")
@click.option("--limit", type=click.IntRange(1), help="Only the first N images (sorted paths).")
@click.option("--groups", metavar="REGEX",
              help=r"Tables per group: the regex's first group in each relative path "
                   r"(UTKFace race: '^\d+_\d_(\d)_').")
@click.option("--identities", metavar="REGEX",
              help=r"Linkability table: the regex's first group names each file's person "
                   r"(LFW: '^([^/]+)/').")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder: OUT/<backend>/, tables (Markdown, CSV, JSON), PNGs.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--workers", default=0, show_default=True,
              help="Processes for anonymizing and evaluating; 0: one per CPU core when there "
                   "are enough images.")
def benchmark(data, backends, ablation, limit, groups, identities, out, device, workers):
    """Anonymize DATA with each backend into OUT/<backend>/ (resumable), evaluate each with the
    metrics suite and write OUT/tables.md, OUT/table_*.csv, OUT/results.json, OUT/radar.png and
    OUT/contact_sheet.png. Exit code 1 when any file failed."""
    from ..benchmark import run_benchmark

    names = split_specs(backends)
    results = run_benchmark(data, out, names, ablation, limit, groups, device, progress=True,
                            workers=workers, identities=identities)
    for name, reason in results["skipped"].items():
        click.echo(f"skipped {name}: {reason}", err=True)
    for label, errors in results["errors"].items():
        for message in errors:
            click.echo(f"error ({label}): {message}", err=True)
    click.echo((out / "tables.md").read_text())
    click.echo(f"-> {out}", err=True)
    sys.exit(1 if results["errors"] else 0)
