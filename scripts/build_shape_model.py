"""Learn the identity directions of the 68-point shape on LFW DevTrain and record the model.

    python scripts/build_shape_model.py --data ../shared/data

Finds each DevTrain image's face nearest the centre (MTCNN) and its 68 dlib landmarks, fits
:func:`fiftyone_faceanon.geometry.fit_shape_model` with the person labels, writes
``models/shape_identity.npz`` and records it with its held-out check on ``fixtures/dlib_johns``
(people the model never saw): the within/between-person spread of identity and residual
components.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from tqdm import tqdm

from fiftyone_faceanon import faces as F
from fiftyone_faceanon.geometry import SHAPE_MODEL, fit_shape_model, save_shape_model, spread
from fiftyone_faceanon.images import load_image
from fiftyone_faceanon.weights import models_dir, record


def central_face_landmarks(path: Path) -> np.ndarray | None:
    """(68, 2) landmarks of the detected face nearest the image centre, or None."""
    image = load_image(path).rgb
    found = F.find_faces(image)
    if not found:
        return None
    centre = np.array(image.shape[1::-1]) / 2
    return min(found, key=lambda f: np.linalg.norm(f.landmarks.mean(0) - centre)).landmarks


def landmarks_of(files: list[tuple[str, Path]], cache: Path) -> tuple[np.ndarray, np.ndarray]:
    """(N, 68, 2) shapes and (N,) person labels of the files with a face; cached in ``cache``."""
    if cache.is_file():
        with np.load(cache) as d:
            return d["shapes"], d["people"]
    shapes, people = [], []
    for person, path in tqdm(files, desc="landmarks"):
        lms = central_face_landmarks(path)
        if lms is not None:
            shapes.append(lms)
            people.append(person)
    shapes, people = np.array(shapes), np.array(people)
    np.savez(cache, shapes=shapes, people=people)
    return shapes, people


def devtrain_files(data: Path) -> list[tuple[str, Path]]:
    lines = (data / "lfw/peopleDevTrain.txt").read_text().splitlines()[1:]
    out = []
    for line in lines:
        name, n = line.split()
        out += [(name, data / f"lfw/images_deepfunneled/{name}/{name}_{i:04d}.jpg")
                for i in range(1, int(n) + 1)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--cache", type=Path, default=Path("/tmp/devtrain_landmarks.npz"))
    ap.add_argument("--min-ratio", type=float, default=1.0)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    shapes, people = landmarks_of(devtrain_files(args.data), args.cache)
    model = fit_shape_model(shapes, people, args.min_ratio)
    save_shape_model(model, models_dir() / SHAPE_MODEL)

    johns = sorted((args.data / "fixtures/dlib_johns").glob("*/*.jpg"))
    held = [(p.parent.name, central_face_landmarks(p)) for p in johns]
    held = [(n, s) for n, s in held if s is not None]
    names = np.array([n for n, _ in held])
    ident = np.stack([model.identity(s) for _, s in held])
    resid = np.stack([model.align(s)[0] for _, s in held]) - ident
    check = {
        "identity": dict(zip(("within", "between"), spread(ident, names))),
        "residual": dict(zip(("within", "between"), spread(resid, names))),
    }
    n_multi = int((np.unique(people, return_counts=True)[1] >= 2).sum())
    entry = record(
        SHAPE_MODEL,
        kind="identity subspace of the 68-point shape (Fisher directions, oblique projector)",
        command="python scripts/build_shape_model.py --data ../shared/data",
        source="built by scripts/build_shape_model.py",
        training_data=(f"LFW peopleDevTrain.txt (training split): {len(shapes)} faces of "
                       f"{len(np.unique(people))} people, {n_multi} with two or more photos; "
                       "MTCNN face nearest the centre, dlib 68 landmarks"),
        licence="derived from LFW landmarks (research use); aggregate statistics only",
        directions=int(len(model.ratios)),
        ratios=[round(float(r), 3) for r in model.ratios],
        held_out_check={"data": f"fixtures/dlib_johns ({len(held)} faces of "
                        f"{len(set(names))} people)",
                        **{k: {kk: round(vv, 3) for kk, vv in v.items()}
                           for k, v in check.items()}},
    )
    print({k: entry[k] for k in ("directions", "ratios", "held_out_check", "sha256", "size")})


if __name__ == "__main__":
    main()
