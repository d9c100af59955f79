"""``faceanon donors build DIR -o BANK`` and ``faceanon donors info [BANK]``: a donor bank from
the user's own consented or synthetic photos, and what a bank holds."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from tqdm import tqdm

from . import main


@main.group()
def donors() -> None:
    """Donor banks for the `donor` backend (use one with --donors BANK)."""


@donors.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The bank file to write (.npz).")
@click.option("--utkface", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="UTKFace folder: estimate each donor's age, gender and race by k-NN on it.")
@click.option("--quality", default=90, show_default=True, help="JPEG quality of the crops.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
def build(folder, out, utkface, quality, device):
    """Build a donor bank from every image under FOLDER: each face that passes the donor filters
    (frontal, eyes visible, colour, not occluded, sharp) becomes a donor.

    Use photos of people who consented to being donors, or synthetic faces. Unreadable files
    get one `error: <path>: <reason>` line and the run goes on; exit code 1 when any failed or
    no face passed.
    """
    from ..donors import DonorSource, build_bank, estimate_labels, save_bank, utkface_reference
    from ..images import IMAGE_EXTENSIONS, ImageError, load_image

    files = sorted(p for p in folder.rglob("*")
                   if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    bar = tqdm(total=len(files), desc="donors", unit="image", file=sys.stderr, dynamic_ncols=True)
    errors = 0

    def items():
        nonlocal errors
        for path in files:
            try:
                image = load_image(path).rgb
            except ImageError as e:
                errors += 1
                tqdm.write(f"error: {e}", file=sys.stderr)
                continue
            finally:
                bar.update(1)
            yield DonorSource(str(path.relative_to(folder)), image)

    bank, counts = build_bank(items(), quality=quality, device=device)
    bar.close()
    rejected = ", ".join(f"{reason} {n}" for reason, n in counts.items() if n) or "none"
    click.echo(f"{len(bank)} donors from {len(files) - errors} images ({errors} unreadable); "
               f"rejected: {rejected}")
    if not len(bank):
        click.echo("error: no face passed the donor filters; nothing written", err=True)
        sys.exit(1)
    if utkface:
        from ..metrics.identity import load_judges

        judges, _ = load_judges(["facenet_casia"], device=device)
        estimate_labels(bank, *utkface_reference(utkface, judges["facenet_casia"], device=device))
    save_bank(bank, out)
    click.echo(f"-> {out}")
    sys.exit(1 if errors else 0)


@donors.command()
@click.argument("bank", required=False, type=click.Path(dir_okay=False, path_type=Path))
def info(bank):
    """Count, crop size and coverage of BANK (default: the shipped models/donors_sfhq.npz)."""
    from ..donors import DonorBankError, load_bank
    from ..weights import WeightsError

    try:
        loaded = load_bank(bank)
    except (DonorBankError, WeightsError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    click.echo(f"{bank or 'models/donors_sfhq.npz'}: {len(loaded)} donors, "
               f"{loaded.size} px crops, {len(set(loaded.source))} source images, "
               f"judges: {', '.join(sorted(loaded.embeddings)) or 'none'}")
    if "labels" in loaded.meta:
        click.echo(f"labels: {loaded.meta['labels']}")
    for table, counts in loaded.coverage().items():
        click.echo(f"{table:7s} " + "  ".join(f"{k}: {v}" for k, v in counts.items()))
