"""Dataset summaries in the paper's tables' form (mean +- std over faces, with n), per group.

Per-face metrics are summarised over every face that has a finite value; 0/1 metrics
(``detected``, ``reid_rate_*``, ``reid_far_*``, ``emotion_match``, ``group_match``) therefore
give rates as their mean.
"""

from __future__ import annotations

import math
import re
from typing import Iterable

import numpy as np

#: Per-face metrics, and whether a larger value is worse (for a sample's worst face).
PER_FACE: dict[str, bool] = {
    "detected": False,
    "reid_facenet_casia": True,
    "reid_dlib": True,
    "reid_facenet_vggface2": True,
    "reid_rate_facenet_casia": True,
    "reid_rate_dlib": True,
    "reid_rate_facenet_vggface2": True,
    "reid_far_facenet_casia": True,
    "reid_far_dlib": True,
    "reid_far_facenet_vggface2": True,
    "reid_found_facenet_casia": True,
    "reid_found_dlib": True,
    "reid_found_facenet_vggface2": True,
    "reid_far_found_facenet_casia": True,
    "reid_far_found_dlib": True,
    "reid_far_found_facenet_vggface2": True,
    "landmark_nme_68": True,
    "landmark_nme_51": True,
    "emotion_match": False,
    "emotion_l1": True,
    "group_match": False,
    "si_mse": True,
    "si_l2": True,
    "delta_l": True,
    "delta_c": True,
    "delta_e2000": True,
    "mse_l": True,
    "mse_ab": True,
    "sharpness": False,
}
#: Metrics of a whole set of faces.
PER_DATASET = ("fid_facenet", "kid_facenet", "fid_inception")


def _finite(values: Iterable) -> np.ndarray:
    arr = np.array([v for v in values if isinstance(v, (int, float)) and math.isfinite(v)], float)
    return arr


def describe(values: Iterable[float]) -> dict:
    """``{"mean", "std", "median", "n"}`` of the finite values (population std; None when n
    is 0)."""
    arr = _finite(values)
    if not len(arr):
        return {"mean": None, "std": None, "median": None, "n": 0}
    return {"mean": float(arr.mean()), "std": float(arr.std()), "median": float(np.median(arr)),
            "n": int(len(arr))}


def summarize(face_records: list[dict]) -> dict[str, dict]:
    """``{metric: {"mean", "std", "n"}}`` over per-face records, for every per-face metric
    present in at least one record."""
    return {
        name: describe(r.get(name) for r in face_records)
        for name in PER_FACE
        if any(name in r for r in face_records)
    }


def group_label(rel: str, pattern: str | re.Pattern) -> str | None:
    """The group of a file: the first capture group of ``pattern`` searched in its relative path
    (the whole match when the pattern has no group), or None when it does not match."""
    m = re.search(pattern, rel)
    if m is None:
        return None
    return m.group(1) if m.groups() else m.group(0)


def frame_summary(face_records: list[dict]) -> dict[str, dict]:
    """A video's per-frame metrics over its evaluated faces (records with their ``frame``):
    ``{metric: {"mean", "worst", "worst_frame", "n"}}``, the worst value the largest where
    larger is worse, the smallest otherwise, for every per-face metric with a finite value."""
    out = {}
    for name, larger_is_worse in PER_FACE.items():
        rows = [(r[name], r["frame"]) for r in face_records
                if isinstance(r.get(name), (int, float)) and math.isfinite(r[name])]
        if not rows:
            continue
        values = np.array([v for v, _ in rows], float)
        w = int(values.argmax() if larger_is_worse else values.argmin())
        out[name] = {"mean": float(values.mean()), "worst": float(values[w]),
                     "worst_frame": int(rows[w][1]), "n": len(rows)}
    return out


def worst_face(face_records: list[dict]) -> dict[str, float]:
    """A sample's worst value per metric over its faces: the largest where larger is worse, the
    smallest otherwise (for the FiftyOne sample fields)."""
    out = {}
    for name, larger_is_worse in PER_FACE.items():
        arr = _finite(r.get(name) for r in face_records)
        if len(arr):
            out[name] = float(arr.max() if larger_is_worse else arr.min())
    return out
