"""Make ``docs/benchmark_contact_sheet_wide.png``: what a wide try draws from donors whose photo
shows hair or a hat over the forehead, as the donor is stored and as a wide region now draws it.

    python scripts/wide_contact_sheet.py [--out docs/benchmark_contact_sheet_wide.png]

A face the judges still match after two tries is replaced over a wider region
(``pipeline.wide_region`` from ``pipeline.WIDEN_FROM``): more forehead, the outline grown, past
the donor's own face region. Each row is one face given one donor with a hat, a fringe or hair
at its temples, at geometry 0. The faces are the bundled demo astronaut and Grace Hopper and two
synthetic faces of the shipped donor bank (people who do not exist; no real photo's pixels
are drawn here but the demo's public-domain ones). Columns: the face's crop; the donor as the
bank stores it; the wide region drawn from that (before stop 61); drawn from the donor's face
filled from its skin beyond its own region (``Donor.donor_face(beyond=True)``, stop 61); and
that after the paper's relighting, pyramid and colour transfer, pasted as the pipeline pastes
it (through the feathered region, keeping the original where ``faces.occluder_mask`` finds
hair, a hat or a frame across the face; hands are not looked for here). Each of those donors
was seen with hair or a hat over its forehead, and since stop 62 a wide try never gets one
(the bank's ``fringe_seen``): the last two columns are the donor the face's first wide try
gets now (``Donor.choose`` at try ``pipeline.WIDEN_FROM``, seed 0, on the face as the
pipeline reads it, without the judges' exclusions) and that try as pasted. The backend's
columns are its output before post-processing (``Donor.anonymize``), set into the crop through
its feathered region.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from fiftyone_faceanon import faces as F
from fiftyone_faceanon.anonymizers.donor import Donor
from fiftyone_faceanon.demo import demo_images
from fiftyone_faceanon.photometric import postprocess
from fiftyone_faceanon.pipeline import WIDEN_FROM, Pipeline, Settings, face_rng, wide_region

ROOT = Path(__file__).resolve().parent.parent

#: (face, donor id) per row: a hat brim, a side fringe, long hair at the temples, a short fringe.
#: A face is a demo photo's name or a donor id (that donor's stored crop).
ROWS = (
    ("grace_hopper.jpg",
     "synthetic_faces/sfhq_t2i/textual_search_2_Ethnicity_x_Age_2_top_10_matches.jpg#r4c3"),
    ("astronaut.png", "synthetic_faces/sfhq/SFHQ_variability_ethnicity.jpg#r0c2"),
    ("synthetic_faces/sfhq/SFHQ_variability_expression.jpg#r2c8",
     "synthetic_faces/sfhq/SFHQ_variability_age_X_ethnicity_1.jpg#r2c7"),
    ("synthetic_faces/sfhq/SFHQ_variability_age_X_ethnicity_2.jpg#r5c6",
     "synthetic_faces/sfhq_t2i/textual_search_2_Ethnicity_x_Age_3_top_10_matches.jpg#r4c9"),
)
TILE = 192
#: The columns' titles, written above them.
TITLES = ("face", "donor as stored", "wide, before", "wide, stop 61", "stop 61, pasted",
          "donor it gets now", "now, as pasted")


def photo(backend: Donor, name: str) -> np.ndarray:
    """An (H, W, 3) uint8 RGB input: a demo photo, or a donor's stored crop on a grey ground
    half its side wide (so the face's crop does not reach past the photo)."""
    demo = demo_images()
    if name in demo:
        return demo[name]
    crop = backend.bank.image(backend.bank.position[name])
    pad = crop.shape[0] // 2
    return cv2.copyMakeBorder(crop, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(128,) * 3)


def row(pipeline: Pipeline, name: str, donor_id: str) -> np.ndarray:
    """The seven tiles of one face and donor, side by side, (TILE, 7 * TILE, 3) uint8."""
    backend = pipeline.backend
    image = photo(backend, name)
    face = max(F.find_faces(image, device="cpu"),
               key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
    at = F.crop_transform(face.landmarks, F.crop_size_for(face.landmarks))
    crop, lms = F.crop_face(image, at), at.to_crop(face.landmarks)
    size = crop.shape[0]
    region = wide_region(lms, size)
    donor = backend.bank.position[donor_id]
    soft, sel = F.feathered_mask(region)[..., None], region > 0
    drawn = backend.brightness_matched(crop, backend.warped(lms, donor, size), sel)  # as before
    before = np.rint(drawn * soft + crop * (1 - soft)).astype(np.uint8)
    mask = soft * (1 - F.soften(F.occluder_mask(crop, lms)))[..., None]

    def pasted(given: int) -> tuple[np.ndarray, np.ndarray]:
        """The backend's output with donor ``given``, and that relit and pasted."""
        out = backend.anonymize(crop[None], lms[None], region[None], [None], [given])[0]
        relit = postprocess(out, crop, region, scale=at.scale)
        return out, np.rint(relit * mask + crop * (1 - mask)).astype(np.uint8)

    now, final = pasted(donor)
    identity = {j: e[0] for j, e in pipeline.panel.embed_many([(image, [face])]).items()}
    chosen = backend.choose(backend.read(crop, lms, identity), face_rng(0, name, 0), WIDEN_FROM,
                            None, wide=True)
    tiles = [crop, backend.bank.image(donor), before, now, final,
             backend.bank.image(chosen), pasted(chosen)[1]]
    return np.hstack([cv2.resize(t, (TILE, TILE), interpolation=cv2.INTER_AREA) for t in tiles])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmark_contact_sheet_wide.png")
    args = ap.parse_args()
    pipeline = Pipeline(Settings(device="cpu"))
    pipeline.backend.verified = False  # the donor's own mouth, as drawn without verification
    header = np.full((24, TILE * len(TITLES), 3), 255, np.uint8)
    for i, title in enumerate(TITLES):
        cv2.putText(header, title, (i * TILE + 6, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0),
                    1, cv2.LINE_AA)
    sheet = np.vstack([header] + [row(pipeline, name, donor) for name, donor in ROWS])
    Image.fromarray(sheet).save(args.out, optimize=True)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
