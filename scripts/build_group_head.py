"""Fit the linear head that estimates UTKFace's race code from the judges' embeddings.

    python scripts/build_group_head.py --data ../shared/data

The metrics suite's ``group_match`` reads it on the original and the anonymized face, and with
``--same-group`` the ``donor`` backend gives no face a donor it is sure is of a group the face
is unlikely to be of: skin tone alone does not tell East Asian from white faces, and white men
came out with East Asian donors' features (docs/benchmarks.md, "A donor of the face's apparent
group"). A softmax regression on the FaceNet-CASIA and dlib embeddings side by side
(``donor.demographic_features``, what the gender and age heads read) over UTKFace's five codes
(``donors.RACES``: White, Black, Asian, Indian, Others), each code weighted by the inverse of
its count so that the head is not drawn to the largest. Fitted on every UTKFace chip but the
UTKFace 500 of docs/benchmarks.md, each in colour and in grey (as
``build_demographics_head.py``), and checked on the UTKFace 500, which the backend's benchmark
then anonymizes with a head that never saw it. Writes ``models/groups.npz`` and its manifest
entry (about 8 minutes on two CPU cores; ``--features`` keeps the chips' features for a refit,
which gives the same weights; embedded again on one thread instead of two, the weights moved by
at most 8e-4 and the accuracies not at all).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from build_demographics_head import utkface_features
from scipy.optimize import minimize

from fiftyone_faceanon.anonymizers.donor import GROUP_HEAD, softmax_head
from fiftyone_faceanon.donors import RACES
from fiftyone_faceanon.weights import models_dir, record

#: The L2 penalty on the weights (not the biases), as ``build_demographics_head.GENDER_RIDGE``:
#: strong, so that the head leans on what carries over to synthetic faces.
RIDGE = 10.0


def softmax_fit(x: np.ndarray, y: np.ndarray, classes: int, ridge: float = RIDGE
                ) -> np.ndarray:
    """L2-regularised multinomial logistic regression, each class weighted by N / (C n_c):
    (N, D) features, (N,) int labels -> (C, D + 1) weights, the last column the biases
    (L-BFGS)."""
    xb = np.hstack([x, np.ones((len(x), 1))])
    onehot = np.eye(classes)[y]
    weight = (len(y) / (classes * np.bincount(y, minlength=classes)))[y]

    def loss(flat: np.ndarray) -> tuple[float, np.ndarray]:
        w = flat.reshape(classes, -1)
        logits = xb @ w.T
        logits -= logits.max(1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
        nll = -(weight * (onehot * logp).sum(1)).sum()
        grad = ((np.exp(logp) - onehot) * weight[:, None]).T @ xb
        grad[:, :-1] += ridge * w[:, :-1]
        return nll + 0.5 * ridge * (w[:, :-1] ** 2).sum(), grad.ravel()

    w0 = np.zeros(classes * xb.shape[1])
    return minimize(loss, w0, jac=True, method="L-BFGS-B", options={"maxiter": 500}).x.reshape(
        classes, -1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--features", type=Path,
                    help="an .npz to keep the chips' features in (outside the repository: they "
                         "come from real photos), read instead of embedding them again")
    args = ap.parse_args()
    if args.features and args.features.exists():
        with np.load(args.features) as saved:
            x, codes, test = ({look: saved[f"{key}_{look}"] for look in ("colour", "grey")}
                              for key in ("x", "codes", "test"))
    else:
        x, labels, test = utkface_features(args.data / "utkface")
        codes = {look: labels[look][:, 2].astype(np.int64) for look in labels}
        if args.features:
            np.savez(args.features, **{f"{key}_{look}": part[look]
                                       for key, part in (("x", x), ("codes", codes),
                                                         ("test", test)) for look in x})
    w = softmax_fit(np.vstack([x[look][~test[look]] for look in x]),
                    np.concatenate([codes[look][~test[look]] for look in x]), len(RACES))
    metrics = {}
    for look in x:
        truth = codes[look][test[look]]
        read = softmax_head(x[look][test[look]], w).argmax(1)
        metrics[look] = {"accuracy": round(float((read == truth).mean()), 4),
                         **{f"recall_{name}": round(float((read[truth == c] == c).mean()), 4)
                            for c, name in enumerate(RACES)}}
    np.savez(models_dir() / GROUP_HEAD, group=w.astype(np.float32))
    entry = record(
        GROUP_HEAD,
        kind="linear softmax head on the FaceNet-CASIA and dlib embeddings side by side (640 "
             "numbers): UTKFace's race code, 0-4 (White, Black, Asian, Indian, Others)",
        command="python scripts/build_group_head.py --data ../shared/data",
        source="built by scripts/build_group_head.py",
        training_data=f"UTKFace crop_part1: {int((~test['colour']).sum())} chips (all in which "
                      "MTCNN finds a face but the UTKFace 500 of docs/benchmarks.md), each in "
                      "colour and in grey, each code weighted by the inverse of its count; "
                      "labels from the file names",
        licence=f"derived from UTKFace (non-commercial research); {w.size:,} numbers",
        metrics={**metrics, "eval_set": f"the UTKFace 500 of docs/benchmarks.md "
                                        f"({int(test['colour'].sum())} with a face), in colour "
                                        "and in grey"},
    )
    print(entry["metrics"])


if __name__ == "__main__":
    main()
