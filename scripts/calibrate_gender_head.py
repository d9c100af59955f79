"""Fit the temperature of the gender head (``donor.GENDER_TEMPERATURE``) on UTKFace.

    python scripts/calibrate_gender_head.py --data ../shared/data

The gender head (``scripts/build_demographics_head.py``) is fitted with a strong L2 penalty, so
that it carries over to the synthetic donors; its probabilities come out too close to 0.5
(of held-out faces it puts between 0.6 and 0.8, about 80% are women). The ``donor`` backend
compares the face's probability with each donor's, so an underconfident head weighs gender too
little against the other terms: Grace Hopper, P(female) 0.64, got an old man's face on the
video contact sheet. Temperature scaling, ``P = sigmoid(T * logit)``, keeps every decision of
the head and fixes its confidence.

``T`` is fitted by maximum likelihood on 1,000 UTKFace chips of the head's training part
(``random.Random(1)``), in colour, and checked on the UTKFace 500 of docs/benchmarks.md, which
the head never saw: the log loss at ``T`` against 1, and the share of women per probability
bin. About two minutes on one CPU core. Prints the figures; ``T`` goes into
``donor.GENDER_TEMPERATURE`` by hand, rounded to one decimal.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import logit as log_odds

from fiftyone_faceanon.anonymizers.donor import DEMOGRAPHIC_JUDGES, demographics
from fiftyone_faceanon.donors import (embed_largest_faces, utkface_500, utkface_chips,
                                      utkface_labels)
from fiftyone_faceanon.metrics.identity import load_judges

#: Chips of the head's training part the temperature is fitted on.
FIT = 1000
BINS = (0.0, 0.2, 0.4, 0.5, 0.6, 0.8, 1.0)


def log_loss(logit: np.ndarray, female: np.ndarray, t: float) -> float:
    """Mean negative log-likelihood of 0/1 labels under ``sigmoid(t * logit)``."""
    z = t * logit
    return float(np.mean(np.logaddexp(0, -z) * female + np.logaddexp(0, z) * (1 - female)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    files = utkface_chips(args.data / "utkface")
    held = utkface_500(files)
    names = {p.name for p in held}
    fit = random.Random(1).sample([p for p in files if p.name not in names], FIT)
    judges, _ = load_judges(list(DEMOGRAPHIC_JUDGES), device="cpu")
    data = {}
    for part, chips in (("fit", fit), ("UTKFace 500", held)):
        embeddings, kept = embed_largest_faces(chips, judges, "cpu")
        labels = np.array([utkface_labels(p.name) for p in kept], np.float64)
        data[part] = (log_odds(demographics(embeddings, temperature=1.0)[:, 0]), labels)
    logit, labels = data["fit"]
    t = minimize_scalar(lambda t: log_loss(logit, labels[:, 1], t), bounds=(0.2, 10),
                        method="bounded").x
    print(f"T = {t:.2f}, fitted on {len(logit)} chips")
    for part, (logit, labels) in data.items():
        adult = labels[:, 0] >= 18
        for who, rows in (("all", np.ones(len(logit), bool)), ("adults", adult)):
            loss = [log_loss(logit[rows], labels[rows, 1], x) for x in (1.0, t)]
            print(f"{part}, {who} ({rows.sum()}): log loss {loss[0]:.3f} at T = 1, "
                  f"{loss[1]:.3f} at T = {t:.2f}")
        p = 1 / (1 + np.exp(-logit))
        for lo, hi in zip(BINS, BINS[1:]):
            rows = (p >= lo) & ((p < hi) if hi < 1 else (p <= hi))
            if rows.any():
                print(f"  P(female) at T = 1 in [{lo}, {hi}): {rows.sum()} faces, "
                      f"{labels[rows, 1].mean():.0%} women")


if __name__ == "__main__":
    main()
