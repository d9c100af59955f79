"""Fit the linear head that estimates skin luma from the judges' embeddings, on UTKFace.

    python scripts/build_skin_head.py --data ../shared/data

The ``donor`` backend matches a donor's skin tone to the face it replaces. The skin luma it
measures (``donors.face_attributes``) moves with exposure as much as with skin tone: an
over-exposed light-skinned face measures like a pale child, an under-exposed one like a dark
skinned face, and a face then got a donor whose skin was much darker or lighter, brightened or
darkened to the photo's level (docs/donors.md). The judges' embeddings barely move with exposure
but do tell skin tone, so a ridge regression from them (FaceNet-CASIA and dlib side by side, as
the demographic heads read) to the measured luma keeps the part of it that the person carries.
Each chip is embedded at three exposures (linear-light gain 0.5, 1 and 2, ``images.expose``) with
its own measured luma as the target throughout, so the head learns to ignore exposure.

Trained on ``--chips`` UTKFace chips drawn with seed 0 from all but the UTKFace 500 of
docs/benchmarks.md, checked on the UTKFace 500: the share of the measured luma's variance it
explains, how far it moves when the exposure goes from 0.5 to 2 (against the measured luma),
and how well each tells UTKFace's White (code 0) from Black (code 1) faces (ROC AUC). Writes
``models/skin_luma.npz`` and its manifest entry (about 10 minutes on two CPU cores).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from build_demographics_head import ridge_fit
from build_glasses_head import auc
from tqdm import tqdm

from fiftyone_faceanon.anonymizers.donor import (DEMOGRAPHIC_JUDGES, SKIN_HEAD,
                                                 demographic_features, linear_head)
from fiftyone_faceanon.donors import (face_attributes, utkface_500, utkface_chips,
                                      utkface_labels)
from fiftyone_faceanon.faces import crop_face, find_faces
from fiftyone_faceanon.images import expose, load_image
from fiftyone_faceanon.metrics.identity import load_judges
from fiftyone_faceanon.weights import models_dir, record

#: Linear-light gains each chip is embedded at.
EXPOSURES = (0.5, 1.0, 2.0)
#: The ridge penalty: fitted on 3,000 chips at gain 1 alone, the test chips' head luma moves
#: 0.02 when their exposure quadruples with 10, 0.05 with 1, for 0.47 against 0.56 of the
#: measured luma's variance explained.
RIDGE = 10.0


def measure(files: list[Path], judges: dict) -> dict[str, np.ndarray]:
    """One row per file and gain of :data:`EXPOSURES` at which MTCNN finds a face: the file's
    index, the gain, the largest face's measured skin luma there and at gain 1 (the target;
    files without a face at gain 1 are left out) and its (640,) demographic features."""
    rows: dict[str, list] = {"file": [], "gain": [], "measured": [], "x": []}
    for n, path in enumerate(tqdm(files, unit="chip")):
        rgb = load_image(path).rgb
        for gain in EXPOSURES:
            image = expose(rgb, gain)
            found = find_faces(image, device="cpu")
            if not found:
                continue
            face = max(found, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
            rows["file"].append(n)
            rows["gain"].append(gain)
            rows["measured"].append(face_attributes(
                crop_face(image, face.crop), face.crop.to_crop(face.landmarks))["luma"])
            rows["x"].append(demographic_features(
                {j: judges[j].embed_many([(image, [face])])[0] for j in DEMOGRAPHIC_JUDGES})[0])
    out = {k: np.array(v) for k, v in rows.items()}
    target = {f: m for f, g, m in zip(out["file"], out["gain"], out["measured"]) if g == 1.0}
    keep = np.array([f in target for f in out["file"]])
    out = {k: v[keep] for k, v in out.items()}
    out["luma"] = np.array([target[f] for f in out["file"]])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--chips", type=int, default=4000)
    args = ap.parse_args()
    files = utkface_chips(args.data / "utkface")
    held = utkface_500(files)
    rest = sorted(set(files) - set(held))
    train = [rest[i] for i in np.sort(np.random.default_rng(0).choice(len(rest), args.chips,
                                                                      replace=False))]
    judges, _ = load_judges(list(DEMOGRAPHIC_JUDGES), device="cpu")
    fit, test = measure(train, judges), measure(held, judges)
    w = ridge_fit(fit["x"], fit["luma"], RIDGE)
    predicted = linear_head(test["x"], w)
    at = {g: test["gain"] == g for g in EXPOSURES}
    one = at[1.0]
    both = np.intersect1d(test["file"][at[EXPOSURES[0]]], test["file"][at[EXPOSURES[-1]]])

    def shift(values: np.ndarray) -> float:  # mean change from the lowest to the highest gain
        lo = {f: v for f, v in zip(test["file"][at[EXPOSURES[0]]], values[at[EXPOSURES[0]]])}
        hi = {f: v for f, v in zip(test["file"][at[EXPOSURES[-1]]], values[at[EXPOSURES[-1]]])}
        return round(float(np.mean([hi[f] - lo[f] for f in both])), 4)

    measured = test["measured"]
    race = np.array([utkface_labels(held[f].name)[2] for f in test["file"]])
    pair = one & np.isin(race, (0, 1))
    metrics = {
        "r2_measured_luma": round(float(1 - np.mean((predicted[one] - test["luma"][one]) ** 2)
                                        / np.var(test["luma"][one])), 3),
        "exposure_0.5_to_2_shift": {"head": shift(predicted), "measured": shift(measured)},
        "auc_white_vs_black": {"head": round(auc(-predicted[pair], race[pair] == 1), 3),
                               "measured": round(auc(-measured[pair], race[pair] == 1), 3)},
        "eval_set": f"the UTKFace 500 of docs/benchmarks.md ({int(one.sum())} with a face at "
                    f"gain 1, {len(both)} at gains {EXPOSURES[0]} and {EXPOSURES[-1]})",
    }
    np.savez(models_dir() / SKIN_HEAD, luma=w.astype(np.float32))
    entry = record(
        SKIN_HEAD,
        kind="linear head on the FaceNet-CASIA and dlib embeddings side by side (640 numbers): "
             "skin luma (ridge), read the same at any exposure",
        command="python scripts/build_skin_head.py --data ../shared/data",
        source="built by scripts/build_skin_head.py",
        training_data=f"UTKFace crop_part1: {len(set(fit['file']))} chips drawn with seed 0 "
                      "from all but the UTKFace 500 of docs/benchmarks.md, each at linear-light "
                      f"gains {', '.join(map(str, EXPOSURES))}; the target is the chip's skin "
                      "luma measured at gain 1 (donors.face_attributes)",
        licence="derived from UTKFace (non-commercial research); 641 numbers",
        metrics=metrics,
    )
    print(entry["metrics"])


if __name__ == "__main__":
    main()
