"""Fit the linear heads that estimate gender and age from the judges' embeddings, on UTKFace.

    python scripts/build_demographics_head.py --data ../shared/data

The ``donor`` backend matches a donor's estimated gender and age to the face it replaces (a
bearded man on a woman, an adult on a child, are what random donors do). Both come from the
FaceNet-CASIA and dlib embeddings that verification computes anyway, side by side
(``donor.demographic_features``): a logistic regression for gender and a ridge regression for
log(1 + age), fitted on every UTKFace chip (labels from the file names) but the UTKFace 500 of
docs/benchmarks.md (100 per race code), on which they are checked: the benchmark's faces are
matched to donors by heads that never saw them. Each chip is also embedded in grey (the mean of
its channels), and the heads learn from both: trained on colour alone they aged grey photos by
a median 4 years (UTKFace's black-and-white chips are mostly of old people). Writes
``models/demographics.npz`` and its manifest entry (about 25 minutes on one CPU core).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from tqdm import tqdm

from fiftyone_faceanon.anonymizers.donor import (DEMOGRAPHIC_JUDGES, DEMOGRAPHICS,
                                                 demographic_features)
from fiftyone_faceanon.donors import (embed_largest_faces, utkface_500, utkface_chips,
                                      utkface_labels)
from fiftyone_faceanon.metrics.identity import load_judges
from fiftyone_faceanon.weights import models_dir, record

#: Adults, for the accuracy that matters most to donors (UTKFace's crop_part1 is 40% children,
#: whose gender neither people nor these heads tell well).
ADULT = 18
#: The gender head's L2 penalty: with 0.01 it is right on 91% of 69 donors labelled by eye
#: (docs/donors.md) and on 10 it is right on 96%, at the same accuracy on UTKFace (95-96% of
#: adults): less weight on the FaceNet-CASIA directions that do not carry over to synthetic
#: faces (a head on FaceNet-CASIA alone is right on 67-72% of those donors).
GENDER_RIDGE = 10.0


def logistic(x: np.ndarray, y: np.ndarray, ridge: float = 1e-2, steps: int = 30) -> np.ndarray:
    """Newton's method for L2-regularised logistic regression; (N, D), (N,) 0/1 -> (D + 1,)."""
    xb = np.hstack([x, np.ones((len(x), 1))])
    w = np.zeros(xb.shape[1])
    for _ in range(steps):
        p = 1 / (1 + np.exp(-xb @ w))
        grad = xb.T @ (p - y) + ridge * w
        hess = (xb * (p * (1 - p))[:, None]).T @ xb + ridge * np.eye(len(w))
        w -= np.linalg.solve(hess, grad)
    return w


def ridge_fit(x: np.ndarray, y: np.ndarray, ridge: float = 1.0) -> np.ndarray:
    """Closed-form ridge regression; (N, D), (N,) -> (D + 1,)."""
    xb = np.hstack([x, np.ones((len(x), 1))])
    return np.linalg.solve(xb.T @ xb + ridge * np.eye(xb.shape[1]), xb.T @ y)


def utkface_features(folder: Path) -> tuple[dict[str, np.ndarray], ...]:
    """Per look (``colour``, ``grey``): the (N, 640) demographic features of the UTKFace chips
    in ``folder`` in which MTCNN finds a face, their (N, 3) labels ``(age, gender, race)`` and
    (N,) bool whether each is one of the UTKFace 500."""
    files = utkface_chips(folder)
    judges, _ = load_judges(list(DEMOGRAPHIC_JUDGES), device="cpu")
    held = {p.name for p in utkface_500(files)}
    x, labels, test = {}, {}, {}
    with tqdm(total=2 * len(files), unit="chip") as bar:
        for look in ("colour", "grey"):
            embeddings, kept = embed_largest_faces(files, judges, "cpu", bar.update,
                                                   grey=look == "grey")
            x[look] = demographic_features(embeddings)
            labels[look] = np.array([utkface_labels(p.name) for p in kept], np.float64)
            test[look] = np.array([p.name in held for p in kept])
    return x, labels, test


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    x, labels, test = utkface_features(args.data / "utkface")
    train_x = np.vstack([x[look][~test[look]] for look in x])
    train_y = np.vstack([labels[look][~test[look]] for look in x])
    w_gender = logistic(train_x, train_y[:, 1], GENDER_RIDGE)
    w_age = ridge_fit(train_x, np.log1p(train_y[:, 0]))
    metrics = {}
    for look in x:
        xb = np.hstack([x[look][test[look]], np.ones((test[look].sum(), 1))])
        age, gender = labels[look][test[look], 0], labels[look][test[look], 1]
        right = (xb @ w_gender > 0) == gender
        metrics[look] = {"gender_accuracy": round(float(right.mean()), 4),
                         "gender_accuracy_adults": round(float(right[age >= ADULT].mean()), 4),
                         "age_median_abs_error": round(float(np.median(np.abs(
                             np.expm1(xb @ w_age) - age))), 2)}
    adults = int((labels["colour"][test["colour"], 0] >= ADULT).sum())
    np.savez(models_dir() / DEMOGRAPHICS, gender=w_gender.astype(np.float32),
             log_age=w_age.astype(np.float32))
    entry = record(
        DEMOGRAPHICS,
        kind="linear heads on the FaceNet-CASIA and dlib embeddings side by side (640 numbers): "
             "gender (logistic, 1 = female as in UTKFace) and log(1 + age) (ridge)",
        command="python scripts/build_demographics_head.py --data ../shared/data",
        source="built by scripts/build_demographics_head.py",
        training_data=f"UTKFace crop_part1: {int((~test['colour']).sum())} chips (all in which "
                      "MTCNN finds a face but the UTKFace 500 of docs/benchmarks.md), each in "
                      "colour and in grey; labels from the file names",
        licence="derived from UTKFace (non-commercial research); 1,282 numbers",
        metrics={**metrics, "eval_set": f"the UTKFace 500 of docs/benchmarks.md "
                                        f"({int(test['colour'].sum())} with a face, {adults} "
                                        f"of them aged {ADULT} or more), in colour and in grey"},
    )
    print(entry["metrics"])


if __name__ == "__main__":
    main()
