"""Fit the linear head that tells glasses from the FaceNet-CASIA embedding, on labelled LFW faces.

    python scripts/build_glasses_head.py --data ../shared/data --labels LABELS.json

The ``donor`` backend never gives a face without glasses a donor with them (the most visible
wrong attribute). Its edge measure (``donors.face_attributes``) was fitted on sharp synthetic
faces; on LFW's photos it barely ranks glasses above bare faces, so bare faces it scored 0.3 or
more got glasses drawn on. This head, a logistic regression on the CASIA embedding that
verification computes anyway, replaces the measure for the face being matched.

``LABELS.json`` maps LFW file names under ``images_deepfunneled/`` (training split,
``peopleDevTrain.txt`` only) to 1 (glasses or sunglasses) or 0, set by looking at each face;
the labels are not shipped, being derived from the photos. Each file's most confident MTCNN face
is embedded. The figures recorded are a 5-fold cross-validation grouped by person (no person in
both parts), repeated 5 times: the head's ROC AUC against the edge measure's, and at the rule's
threshold (``donor.NO_GLASSES``) the share of glasses wearers still allowed glasses and of bare
faces still given them. Writes ``models/glasses_casia.npz`` and its manifest entry.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from build_demographics_head import logistic

from fiftyone_faceanon import faces as F
from fiftyone_faceanon.anonymizers.donor import GLASSES_HEAD, NO_GLASSES, logistic_head
from fiftyone_faceanon.donors import face_attributes
from fiftyone_faceanon.images import load_image
from fiftyone_faceanon.metrics.identity import load_judges
from fiftyone_faceanon.weights import models_dir, record

RIDGE = 0.03


def auc(score: np.ndarray, label: np.ndarray) -> float:
    """ROC AUC: the chance that a positive scores above a negative (ties count half)."""
    pos, neg = score[label == 1], score[label == 0]
    return float(np.mean((pos[:, None] > neg[None]) + 0.5 * (pos[:, None] == neg[None])))


def grouped_cv(x: np.ndarray, y: np.ndarray, group: np.ndarray, repeats: int = 5
               ) -> np.ndarray:
    """(repeats, N) held-out probabilities: 5 folds of whole groups, ``repeats`` draws."""
    people = np.unique(group)
    out = np.zeros((repeats, len(y)))
    for r in range(repeats):
        fold_of = dict(zip(people, np.random.default_rng(r).integers(0, 5, len(people))))
        fold = np.array([fold_of[g] for g in group])
        for k in range(5):
            out[r, fold == k] = logistic_head(x[fold == k],
                                             logistic(x[fold != k], y[fold != k], RIDGE))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--labels", type=Path, required=True)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    labels = json.loads(args.labels.read_text())
    train = {line.split("\t")[0] for line in
             (args.data / "lfw/peopleDevTrain.txt").read_text().splitlines()[1:]}
    judge = load_judges(["facenet_casia"])[0]["facenet_casia"]
    emb, y, measure, group = [], [], [], []
    for name, label in sorted(labels.items()):
        person = name.split("/")[0]
        if person not in train:
            raise SystemExit(f"{name}: not in the training split (peopleDevTrain.txt)")
        image = load_image(args.data / "lfw/images_deepfunneled" / name).rgb
        faces = F.find_faces_batch([image])[0]
        if not faces:
            raise SystemExit(f"{name}: no face found")
        face = max(faces, key=lambda f: f.score)
        crop = F.crop_transform(face.landmarks, F.crop_size_for(face.landmarks))
        measure.append(face_attributes(F.crop_face(image, crop),
                                       crop.to_crop(face.landmarks))["glasses"])
        emb.append(judge.embed(image, [face])[0])
        y.append(float(label))
        group.append(person)
    x, y, measure, group = (np.array(emb, np.float64), np.array(y), np.array(measure),
                            np.array(group))
    held_out = grouped_cv(x, y, group)
    wearers, bare = y == 1, y == 0
    metrics = {
        "auc_head": round(float(np.mean([auc(p, y) for p in held_out])), 3),
        "auc_edge_measure": round(auc(measure, y), 3),
        "glasses_allowed_head": round(float((held_out[:, wearers] >= NO_GLASSES).mean()), 3),
        "bare_given_glasses_head": round(float((held_out[:, bare] >= NO_GLASSES).mean()), 3),
        "glasses_allowed_edge_measure": round(float((measure[wearers] >= NO_GLASSES).mean()), 3),
        "bare_given_glasses_edge_measure": round(float((measure[bare] >= NO_GLASSES).mean()), 3),
        "eval": "5-fold cross-validation grouped by person, 5 draws; the rule's threshold "
                f"{NO_GLASSES}",
    }
    w = logistic(x, y, RIDGE)
    np.savez(models_dir() / GLASSES_HEAD, glasses=w.astype(np.float32))
    entry = record(
        GLASSES_HEAD,
        kind="linear head on the FaceNet-CASIA embedding: probability of glasses (logistic)",
        command="python scripts/build_glasses_head.py --data ../shared/data --labels LABELS.json",
        source="built by scripts/build_glasses_head.py",
        training_data=f"LFW peopleDevTrain (training split): {len(y)} faces of "
                      f"{len(np.unique(group))} people, {int(y.sum())} with glasses, labelled "
                      "by hand by looking at each face (labels not shipped)",
        licence="derived from LFW (research; no licence given); 513 numbers",
        metrics=metrics,
    )
    print(entry["metrics"])


if __name__ == "__main__":
    main()
