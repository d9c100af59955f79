"""Build the shipped donor bank from the SFHQ contact sheets and record it in the manifest.

    python scripts/build_donor_bank.py --data ../shared/data

Cuts every cell of the SFHQ and SFHQ-T2I contact sheets under ``DATA/synthetic_faces``
(``donors.sheet_cells``), keeps the faces that pass the donor filters (``donors.build_bank``),
estimates age, gender and race per donor by k-NN on 2,000 labelled UTKFace faces (only these
estimates are stored), reads each donor's expression with fer (``donors.expressions``), writes
``models/donors_sfhq.npz`` and its manifest entry, and a contact sheet of every donor
(``docs/donor_bank.png``). ``--review DIR`` also writes contact sheets of the kept
and of the rejected candidates per reason, to look at. The candidates of :data:`REVIEWED` pass
every filter but were rejected by looking at the bank (docs/donors.md); :data:`GENDERS_SEEN`
lists the gender a person saw on donors whose gender the head was unsure of or read wrong, and
:data:`FACIAL_HAIR_SEEN` the donors on which a person saw facial hair and :data:`FRINGE_SEEN`
those with hair or headwear over the forehead.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from fiftyone_faceanon.donors import (
    BANK_FILE, REJECTIONS, DonorSource, build_bank, contact_sheet, estimate_labels, face_thumb,
    knn_labels, read_genders, read_reviewed, save_bank, see_facial_hair, see_fringe, see_genders,
    sheet_cells, utkface_reference,
)
from fiftyone_faceanon.images import atomic_write, load_image
from fiftyone_faceanon.metrics.identity import load_judges
from fiftyone_faceanon.weights import models_dir, record

#: The contact sheets' repositories, at the commits the sheets were taken from (SOURCES.md).
SOURCES = {
    "sfhq": "SelfishGene/SFHQ-dataset @4c898bc (images/)",
    "sfhq_t2i": "SelfishGene/SFHQ-T2I-dataset @a806447 (figures/)",
}
#: The donors of :data:`REVIEWED` with a headband, cap, hat brim or head wrap on the forehead.
HEADWEAR = (
    "sfhq/SFHQ_variability_hair_color.jpg#r0c7",
    "sfhq_t2i/textual_search_1_age_female_top_8_matches.jpg#r0c3",
    "sfhq_t2i/textual_search_1_ethnicity_top_8_matches.jpg#r1c0",
    "sfhq_t2i/textual_search_1_ethnicity_top_8_matches.jpg#r6c0",
    "sfhq_t2i/textual_search_1_ethnicity_top_8_matches.jpg#r6c4",
    "sfhq_t2i/textual_search_2_Ethnicity_top_10_matches.jpg#r1c0",
    "sfhq_t2i/textual_search_2_Ethnicity_top_10_matches.jpg#r1c7",
    "sfhq_t2i/textual_search_2_Ethnicity_top_10_matches.jpg#r1c8",
    "sfhq_t2i/textual_search_2_Ethnicity_top_10_matches.jpg#r2c2",
    "sfhq_t2i/textual_search_2_Ethnicity_top_10_matches.jpg#r2c5",
    "sfhq_t2i/textual_search_2_Ethnicity_top_10_matches.jpg#r3c4",
    "sfhq_t2i/textual_search_2_Ethnicity_top_10_matches.jpg#r4c3",
    "sfhq_t2i/textual_search_2_Ethnicity_top_10_matches.jpg#r4c5",
    "sfhq_t2i/textual_search_2_Ethnicity_top_10_matches.jpg#r4c7",
    "sfhq_t2i/textual_search_2_Ethnicity_top_10_matches.jpg#r4c8",
    "sfhq_t2i/textual_search_2_Ethnicity_top_10_matches.jpg#r4c9",
    "sfhq_t2i/textual_search_2_Ethnicity_top_10_matches.jpg#r5c0",
    "sfhq_t2i/textual_search_2_Ethnicity_x_Age_1_top_10_matches.jpg#r1c0",
    "sfhq_t2i/textual_search_2_Ethnicity_x_Age_1_top_10_matches.jpg#r1c8",
    "sfhq_t2i/textual_search_2_Ethnicity_x_Age_1_top_10_matches.jpg#r2c2",
    "sfhq_t2i/textual_search_2_Ethnicity_x_Age_1_top_10_matches.jpg#r2c5",
    "sfhq_t2i/textual_search_2_Ethnicity_x_Age_1_top_10_matches.jpg#r3c7",
    "sfhq_t2i/textual_search_2_Ethnicity_x_Age_1_top_10_matches.jpg#r4c6",
    "sfhq_t2i/textual_search_2_Ethnicity_x_Age_1_top_10_matches.jpg#r5c1f0",
    "sfhq_t2i/textual_search_2_Ethnicity_x_Age_1_top_10_matches.jpg#r5c2",
    "sfhq_t2i/textual_search_2_Ethnicity_x_Age_1_top_10_matches.jpg#r5c8",
    "sfhq_t2i/textual_search_2_Ethnicity_x_Age_2_top_10_matches.jpg#r1c8",
    "sfhq_t2i/textual_search_2_Ethnicity_x_Age_2_top_10_matches.jpg#r2c9",
    "sfhq_t2i/textual_search_2_Ethnicity_x_Age_2_top_10_matches.jpg#r4c5",
    "sfhq_t2i/textual_search_2_Ethnicity_x_Age_2_top_10_matches.jpg#r5c0",
    "sfhq_t2i/textual_search_2_Ethnicity_x_Age_2_top_10_matches.jpg#r5c1",
    "sfhq_t2i/textual_search_2_Ethnicity_x_Age_2_top_10_matches.jpg#r5c3",
    "sfhq_t2i/textual_search_2_Ethnicity_x_Age_2_top_10_matches.jpg#r5c7",
    "sfhq_t2i/textual_search_2_Ethnicity_x_Age_3_top_10_matches.jpg#r1c1",
    "sfhq_t2i/textual_search_2_Ethnicity_x_Age_3_top_10_matches.jpg#r1c2",
    "sfhq_t2i/textual_search_2_Ethnicity_x_Age_3_top_10_matches.jpg#r1c7",
    "sfhq_t2i/textual_search_2_Ethnicity_x_Age_3_top_10_matches.jpg#r4c4",
    "sfhq_t2i/textual_search_2_Ethnicity_x_Age_3_top_10_matches.jpg#r5c4",
    "sfhq_t2i/textual_search_2_Ethnicity_top_10_matches.jpg#r1c9",
    "sfhq_t2i/textual_search_2_Ethnicity_top_10_matches.jpg#r4c1",
    "sfhq_t2i/textual_search_2_Ethnicity_top_10_matches.jpg#r5c7",
    "sfhq_t2i/textual_search_2_Ethnicity_x_Age_1_top_10_matches.jpg#r5c4",
    "sfhq_t2i/textual_search_2_Ethnicity_x_Age_2_top_10_matches.jpg#r4c2",
    "sfhq_t2i/textual_search_2_Ethnicity_x_Age_2_top_10_matches.jpg#r4c7",
)
#: Candidates that pass the filters and were taken out by looking at every donor of the bank
#: (2026-12-03), and at the copies of them that the de-duplication then let in: a donor with
#: the tongue out was given to closed mouths (8 of the 565 faces of the LFW benchmark with
#: verification), dlib's landmarks taking the tongue for a lower lip. Looking at every donor
#: again for glasses (2026-12-05) found 8 whose frames neither glasses measure finds ("missed
#: glasses": thin, clear or sparkly frames): as donors without glasses, they drew their frames
#: on bare faces (8 of the 565 faces of the LFW benchmark with verification). Looking at the
#: foreheads (2026-12-05, later) found 38 with a headband, cap, hat brim or head wrap inside the
#: region a later try replaces (``pipeline.WIDE_FOREHEAD``), and 6 copies of them that the
#: de-duplication then let in: a verified LFW face was given a feathered headdress's band
#: across his forehead. Looking between the brows (2026-12-05, later) found a red tilak and a
#: black dot on the forehead, which the tilak's donor drew on Grace Hopper in the video sheet.
REVIEWED = {"synthetic_faces/" + cell: why for cell, why in {
    "sfhq_t2i/textual_search_1_expression_top_8_matches.jpg#r7c4f0": "tongue out",
    "sfhq_t2i/textual_search_1_expression_top_8_matches.jpg#r7c5": "tongue out",
    "sfhq_t2i/textual_search_1_expression_top_8_matches.jpg#r7c6": "tongue out",
    "sfhq_t2i/textual_search_2_Expression_top_10_matches.jpg#r5c0": "tongue out",
    "sfhq_t2i/textual_search_2_Expression_top_10_matches.jpg#r5c5": "tongue out",
    "sfhq_t2i/textual_search_2_Expression_top_10_matches.jpg#r5c7": "tongue out",
    "sfhq_t2i/textual_search_2_Expression_x_Sex_top_10_matches.jpg#r5c0": "tongue out",
    "sfhq_t2i/textual_search_2_Expression_x_Sex_top_10_matches.jpg#r5c1": "tongue out",
    "sfhq_t2i/textual_search_2_Expression_x_Sex_top_10_matches.jpg#r5c2": "tongue out",
    "sfhq_t2i/textual_search_2_Expression_x_Sex_top_10_matches.jpg#r5c4": "tongue out",
    "sfhq_t2i/textual_search_2_Expression_x_Sex_top_10_matches.jpg#r5c6": "tongue out",
    "sfhq_t2i/textual_search_2_Expression_x_Sex_top_10_matches.jpg#r5c8": "tongue out",
    "sfhq_t2i/textual_search_2_Expression_top_10_matches.jpg#r3c9": "a hand on the cheek and jaw",
    "sfhq_t2i/textual_search_2_Ethnicity_x_Age_1_top_10_matches.jpg#r3c8": "a hand over the chin",
    "sfhq_t2i/textual_search_2_Glasses_Style_top_10_matches.jpg#r4c8": "sunglasses hide the eyes",
    "sfhq_t2i/textual_search_2_Glasses_Style_top_10_matches.jpg#r2c4f0": "a black-and-white photo",
    "sfhq_t2i/textual_search_2_Expression_x_Sex_top_10_matches.jpg#r1c4": "missed glasses",
    "sfhq/SFHQ_variability_ethnicity.jpg#r1c1": "missed glasses",
    "sfhq/SFHQ_variability_ethnicity.jpg#r2c6": "missed glasses",
    "sfhq_t2i/textual_search_2_Glasses_Style_top_10_matches.jpg#r2c2": "missed glasses",
    "sfhq_t2i/textual_search_2_Age_x_Ethnicity_x_Sex_1_top_10_matches.jpg#r3c4": "missed glasses",
    "sfhq_t2i/textual_search_2_Glasses_Style_top_10_matches.jpg#r3c8": "missed glasses",
    "sfhq/SFHQ_variability_ethnicity.jpg#r5c9": "missed glasses",
    "sfhq/SFHQ_variability_age_X_ethnicity_2.jpg#r5c7": "missed glasses",
    **dict.fromkeys(HEADWEAR, "headwear on the forehead"),
    "sfhq/SFHQ_variability_ethnicity.jpg#r4c5": "a tilak between the brows",
    "sfhq_t2i/textual_search_2_Ethnicity_x_Age_3_top_10_matches.jpg#r2c1": "a dot on the forehead",
}.items()}
#: The gender a person saw on donors (``ID M`` or ``ID F`` per line; docs/donors.md, "Gender
#: seen by eye"), recorded in the bank's ``gender_seen``.
GENDERS_SEEN = Path(__file__).with_name("donor_genders_seen.txt")
#: The donors on which a person saw facial hair (one id per line; docs/donors.md), recorded in
#: the bank's ``facial_hair_seen``.
FACIAL_HAIR_SEEN = Path(__file__).with_name("donor_facial_hair_seen.txt")
#: The donors on which a person saw hair, a hat or a headscarf inside the face region above the
#: eyes (one id per line; docs/donors.md), recorded in the bank's ``fringe_seen``.
FRINGE_SEEN = Path(__file__).with_name("donor_fringe_seen.txt")
LICENCE = ("repositories MIT; the author states that the images, being synthetic, carry no "
           "privacy or licence restrictions; every donor is a face of a person who does not "
           "exist (no real person's face is in the bank)")


def sheet_items(data: Path, on_sheet=None):
    """One :class:`DonorSource` per cell of every sheet under ``data/synthetic_faces``."""
    for folder in SOURCES:
        for path in sorted((data / "synthetic_faces" / folder).glob("*.jpg")):
            sheet = load_image(path).rgb
            cells = sheet_cells(sheet)
            if on_sheet:
                on_sheet(path, len(cells))
            for row, col, (x0, y0, x1, y1) in cells:
                yield DonorSource(str(path.relative_to(data)),
                                  np.ascontiguousarray(sheet[y0:y1, x0:x1]), (row, col), (x0, y0))


def write_png(path: Path, image: np.ndarray, palette: bool = False) -> None:
    """``image`` as PNG; ``palette``: 256 median-cut colours, dithered (a third of the size)."""
    im = Image.fromarray(image)
    if palette:
        im = im.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG)
    buf = io.BytesIO()
    im.save(buf, "PNG", optimize=True)
    atomic_write(path, buf.getvalue())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--utkface", type=int, default=2000, help="Labelled UTKFace faces for k-NN.")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--review", type=Path, help="Write review contact sheets here.")
    ap.add_argument("--docs-sheet", type=Path, default=Path("docs/donor_bank.png"))
    args = ap.parse_args()
    start = time.time()

    review: dict[str, list] = {reason: [] for reason in (*REJECTIONS, "kept")}

    def on_sheet(path: Path, cells: int) -> None:
        print(f"{path.name}: {cells} cells ({time.time() - start:.0f} s)", file=sys.stderr)

    seen: dict[str, str | None] = {}

    def on_candidate(cid: str, reason: str | None, crop: np.ndarray) -> None:
        seen[cid] = reason
        if args.review:
            review[reason or "kept"].append((cid, face_thumb(crop, 128)))

    bank, counts = build_bank(sheet_items(args.data, on_sheet), device=args.device,
                              on_candidate=on_candidate, reviewed=REVIEWED)
    unreviewed = {cid: seen.get(cid) for cid in REVIEWED if seen.get(cid) != "reviewed"}
    if unreviewed:  # a reviewed id no candidate has, or one a filter already rejects
        sys.exit(f"REVIEWED ids that no candidate passing the filters has: {unreviewed}")
    judges, _ = load_judges(["facenet_casia"], device=args.device)
    reference, labels = utkface_reference(args.data / "utkface", judges["facenet_casia"],
                                          n=args.utkface, device=args.device)
    age, gender, race = knn_labels(reference, reference, labels, exclude_self=True)
    loo = {"race_accuracy": round(float(np.mean(race == labels[:, 2])), 3),
           "gender_accuracy": round(float(np.mean(gender == labels[:, 1])), 3),
           "age_mae_years": round(float(np.mean(np.abs(age - labels[:, 0]))), 2)}
    estimate_labels(bank, reference, labels)
    bank.meta["labels_leave_one_out_on_reference"] = loo
    for listed, read, see in ((GENDERS_SEEN, read_genders, see_genders),
                              (FACIAL_HAIR_SEEN, read_reviewed, see_facial_hair),
                              (FRINGE_SEEN, read_reviewed, see_fringe)):
        unseen = see(bank, read(listed.read_text().splitlines()))
        if unseen:
            sys.exit(f"{listed.name}: ids the bank does not hold: {unseen}")

    out = models_dir() / BANK_FILE
    save_bank(bank, out)
    sources = sorted({s.split("/")[1] for s in bank.source})
    entry = record(
        BANK_FILE,
        kind="donor bank (synthetic faces)",
        count=len(bank),
        crop_size=bank.size,
        context=bank.meta["context"],
        jpeg_quality=bank.meta["jpeg_quality"],
        source=[SOURCES[s] for s in sources],
        licence=LICENCE,
        training_data=(f"none (nothing trained); age, gender and race estimated by k-NN on "
                       f"{len(reference)} labelled UTKFace faces, of which only the estimates "
                       "are stored"),
        filters=bank.meta["filters"],
        candidates=int(sum(counts.values()) + len(bank)),
        rejections=counts,
        reviewed=REVIEWED,
        gender_seen=f"{bank.meta['gender_seen']} donors, listed in scripts/{GENDERS_SEEN.name}",
        facial_hair_seen=(f"{bank.meta['facial_hair_seen']} donors, listed in "
                          f"scripts/{FACIAL_HAIR_SEEN.name}"),
        fringe_seen=f"{bank.meta['fringe_seen']} donors, listed in scripts/{FRINGE_SEEN.name}",
        coverage=bank.coverage(),
        labels=bank.meta["labels"] + f"; leave-one-out on the reference: {loo}",
        attributes="fiftyone_faceanon.donors.face_attributes of each stored crop",
        expression=(f"fer's expression probabilities of each stored crop "
                    f"(fiftyone_faceanon.donors.expressions), ({len(bank)}, 7) float32"),
        embeddings=sorted(bank.embeddings),
        command=f"python scripts/build_donor_bank.py --utkface {args.utkface}",
    )
    print(f"{out}: {entry['count']} donors, {entry['size'] / 2**20:.1f} MiB, sha256 "
          f"{entry['sha256']}, {time.time() - start:.0f} s", file=sys.stderr)
    print(f"rejections: {counts}", file=sys.stderr)
    print(f"coverage: {entry['coverage']}", file=sys.stderr)

    thumbs = [face_thumb(bank.image(i), 48) for i in range(len(bank))]
    write_png(args.docs_sheet, contact_sheet(thumbs, cols=32), palette=True)
    if args.review:
        for reason, items in review.items():
            if items:
                write_png(args.review / f"{reason}.png",
                          contact_sheet([t for _, t in items], 12,
                                        [cid.split("/")[-1][-22:] for cid, _ in items]))


if __name__ == "__main__":
    main()
