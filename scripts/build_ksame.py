"""Build the ``ksame`` average face from the training split and record it in the manifest.

    python scripts/build_ksame.py --data ../shared/data --k 200

Takes k faces from the training split only (LFW ``peopleDevTrain.txt``, one image per person,
and UTKFace, the same number per race code), finds each face's 68 landmarks, warps every face
piecewise-affinely onto the mean landmark shape in a canonical 128 px frame, and averages them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from fiftyone_faceanon import faces as F
from fiftyone_faceanon.anonymizers.ksame import MEAN_FACE, control_points, piecewise_affine_warp
from fiftyone_faceanon.geometry import procrustes_mean
from fiftyone_faceanon.images import load_image
from fiftyone_faceanon.weights import models_dir, record
from scipy.spatial import Delaunay


def training_files(data: Path, k: int) -> list[Path]:
    """k/2 LFW DevTrain people (first image each) and k/2 UTKFace faces, k/10 per race code."""
    people = [
        line.split()[0]
        for line in (data / "lfw/peopleDevTrain.txt").read_text().splitlines()[1:]
    ]
    lfw = [data / f"lfw/images_deepfunneled/{p}/{p}_0001.jpg" for p in people[: k // 2]]
    utk = sorted((data / "utkface").glob("*.jpg"))
    by_race = [[f for f in utk if f.name.split("_")[2] == str(r)] for r in range(5)]
    per = (k - len(lfw)) // 5
    return lfw + [f for group in by_race for f in group[:per]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--k", type=int, default=200)
    ap.add_argument("--size", type=int, default=128)
    args = ap.parse_args()
    if args.k < 50:
        raise SystemExit("k must be at least 50")

    crops, shapes, used = [], [], []
    for path in training_files(args.data, args.k):
        image = load_image(path).rgb
        found = F.find_faces(image, crop_size=args.size)
        if not found:
            continue
        face = max(found, key=lambda f: f.score)
        crops.append(F.crop_face(image, face.crop))
        shapes.append(face.crop.to_crop(face.landmarks))
        used.append(path)
    shapes = np.asarray(shapes)
    mean = procrustes_mean(shapes)
    canon = F.crop_transform(mean, args.size).to_crop(mean)
    dst = control_points(canon, args.size)
    tris = Delaunay(dst).simplices
    acc = np.zeros((args.size, args.size, 3))
    for crop, shape in zip(crops, shapes):
        acc += piecewise_affine_warp(crop, control_points(shape, args.size), dst, tris, args.size)
    image = np.clip(np.rint(acc / len(crops)), 0, 255).astype(np.uint8)
    n_lfw = sum("lfw" in p.parts for p in used)
    out = models_dir() / MEAN_FACE
    np.savez_compressed(out, image=image, landmarks=canon, k=len(used))
    entry = record(
        MEAN_FACE,
        kind="ksame average face",
        source="built by scripts/build_ksame.py",
        command=f"python scripts/build_ksame.py --k {args.k} --size {args.size}",
        training_data=(
            f"{len(used)} faces of the training split: {n_lfw} LFW peopleDevTrain people "
            f"(first image each), {len(used) - n_lfw} UTKFace crop_part1 faces balanced over "
            "the 5 race codes"
        ),
        licence="derived from LFW (research use) and UTKFace (non-commercial research)",
        k=len(used),
        resolution=args.size,
    )
    print(f"{out}: k={entry['k']} sha256={entry['sha256']}")


if __name__ == "__main__":
    main()
