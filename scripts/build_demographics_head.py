"""Fit the linear heads that estimate gender and age from a FaceNet-CASIA embedding, on UTKFace.

    python scripts/build_demographics_head.py --data ../shared/data

The ``donor`` backend matches a donor's estimated gender and age to the face it replaces (a
bearded man on a woman, an adult on a child, are what random donors do). Both come from the
CASIA embedding that verification computes anyway: a logistic regression for gender and a ridge
regression for log-age, fitted on 2,000 UTKFace chips (training split; labels from the file
names), checked on 500 others, written to ``models/demographics_casia.npz`` and recorded.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from fiftyone_faceanon.anonymizers.donor import DEMOGRAPHICS
from fiftyone_faceanon.donors import utkface_reference
from fiftyone_faceanon.metrics.identity import load_judges
from fiftyone_faceanon.weights import models_dir, record


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    judges, _ = load_judges(["facenet_casia"])
    emb, labels = utkface_reference(args.data / "utkface", judges["facenet_casia"], n=2500,
                                    seed=1)
    age, gender = labels[:, 0].astype(float), labels[:, 1].astype(float)
    train, test = slice(0, 2000), slice(2000, None)
    w_gender = logistic(emb[train], gender[train])
    w_age = ridge_fit(emb[train], np.log1p(age[train]))
    xb = np.hstack([emb[test], np.ones((len(emb[test]), 1))])
    accuracy = float(((xb @ w_gender > 0) == gender[test]).mean())
    age_error = float(np.median(np.abs(np.expm1(xb @ w_age) - age[test])))
    np.savez(models_dir() / DEMOGRAPHICS, gender=w_gender.astype(np.float32),
             log_age=w_age.astype(np.float32))
    entry = record(
        DEMOGRAPHICS,
        kind="linear heads on the FaceNet-CASIA embedding: gender (logistic, 1 = female as in "
             "UTKFace) and log(1 + age) (ridge)",
        command="python scripts/build_demographics_head.py --data ../shared/data",
        source="built by scripts/build_demographics_head.py",
        training_data=f"UTKFace crop_part1 (training split): {len(emb[train])} chips drawn "
                      "with seed 1, labels from the file names",
        licence="derived from UTKFace (non-commercial research); 1,026 numbers",
        metrics={"gender_accuracy": round(accuracy, 4), "age_median_abs_error": round(age_error, 2),
                 "eval_set": f"{len(emb[test])} other UTKFace chips of the same draw"},
    )
    print(entry["metrics"])


if __name__ == "__main__":
    main()
