"""``faceanon donors build DIR -o BANK``, ``faceanon donors info [BANK]`` and ``faceanon donors
sheet [BANK] -o PNG``: a donor bank from the user's own consented or synthetic photos, what a bank
holds, and every donor of it to look at."""

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
@click.option("--reject", type=click.File("r"),
              help="Donor ids to leave out, one per line with an optional reason after it "
                   "(`ID  REASON`; lines starting with # are skipped): what you saw on "
                   "`faceanon donors sheet` and no filter catches.")
@click.option("--gender", type=click.File("r"),
              help="The gender you saw on donors, `ID M` or `ID F` per line (lines starting with "
                   "# are skipped): the donor backend then counts them sure of it, whatever its "
                   "gender head reads.")
@click.option("--facial-hair", type=click.File("r"),
              help="Donor ids on which you saw a moustache, beard, goatee or stubble, one per "
                   "line (lines starting with # are skipped): the donor backend then never gives "
                   "them to a face without a beard.")
@click.option("--fringe", type=click.File("r"),
              help="Donor ids on which you saw hair, a hat or a headscarf over the forehead "
                   "(inside the face's outline, above the eyes), one per line (lines starting "
                   "with # are skipped): the donor backend then does not draw them over a wide "
                   "region, which would set that hair onto the face's forehead.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
def build(folder, out, utkface, quality, reject, gender, facial_hair, fringe, device):
    """Build a donor bank from every image under FOLDER: each face that passes the donor filters
    (frontal, eyes visible, colour, not occluded, sharp) becomes a donor.

    Use photos of people who consented to being donors, or synthetic faces. Unreadable files
    get one `error: <path>: <reason>` line and the run goes on; exit code 1 when any failed or
    no face passed.
    """
    from ..donors import (DonorSource, build_bank, estimate_labels, read_genders, read_reviewed,
                          save_bank, see_facial_hair, see_fringe, see_genders,
                          utkface_reference)
    from ..images import IMAGE_EXTENSIONS, ImageError, load_image

    try:
        genders = read_genders(gender or ())
    except ValueError as e:
        click.echo(f"error: {gender.name}: {e}", err=True)
        sys.exit(2)
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

    bank, counts = build_bank(items(), quality=quality, device=device,
                              reviewed=read_reviewed(reject or ()))
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
    for label, see, ids in (("gender seen", see_genders, genders or None),
                            ("facial hair seen", see_facial_hair,
                             facial_hair and read_reviewed(facial_hair)),
                            ("fringe seen", see_fringe, fringe and read_reviewed(fringe))):
        if ids is not None:  # what a person saw, recorded in the bank field named as the label
            unseen = see(bank, ids)
            click.echo(f"{label}: {bank.meta[label.replace(' ', '_')]} donors"
                       + (f"; not in the bank: {', '.join(unseen)}" if unseen else ""))
    save_bank(bank, out)
    click.echo(f"-> {out}")
    sys.exit(1 if errors else 0)


def _load(bank: Path | None):
    """The bank at ``bank`` (default: the shipped one), or exit 1 with its one-line error."""
    from ..donors import DonorBankError, load_bank
    from ..weights import WeightsError

    try:
        return load_bank(bank)
    except (DonorBankError, WeightsError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)


@donors.command()
@click.argument("bank", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--ids", is_flag=True, help="Also list every donor: `INDEX ID`.")
def info(bank, ids):
    """Count, crop size and coverage of BANK (default: the shipped models/donors_sfhq.npz)."""
    loaded = _load(bank)
    click.echo(f"{bank or 'models/donors_sfhq.npz'}: {len(loaded)} donors, "
               f"{loaded.size} px crops, {len(set(loaded.source))} source images, "
               f"judges: {', '.join(sorted(loaded.embeddings)) or 'none'}")
    if "labels" in loaded.meta:
        click.echo(f"labels: {loaded.meta['labels']}")
    for table, counts in loaded.coverage().items():
        click.echo(f"{table:7s} " + "  ".join(f"{k}: {v}" for k, v in counts.items()))
    if ids:
        for i, donor in enumerate(loaded.ids):
            click.echo(f"{i} {donor}")


@donors.command()
@click.argument("bank", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The PNG to write.")
@click.option("--size", default=96, show_default=True, help="Thumbnail side, px.")
@click.option("--cols", default=16, show_default=True, help="Thumbnails per row.")
def sheet(bank, out, size, cols):
    """A contact sheet of every donor of BANK (default: the shipped one), each captioned with its
    index (`faceanon donors info BANK --ids` gives the id): look at it before you use a bank,
    and leave out what you do not want with `faceanon donors build ... --reject FILE`."""
    import cv2

    from ..donors import contact_sheet, face_thumb
    from ..images import atomic_write

    loaded = _load(bank)
    image = contact_sheet([face_thumb(loaded.image(i), size) for i in range(len(loaded))], cols,
                          [str(i) for i in range(len(loaded))])
    ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    atomic_write(out, data.tobytes())
    click.echo(f"{len(loaded)} donors -> {out}")
