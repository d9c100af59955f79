"""Pose and expression geometry: normalised L1 landmark error (paper Table I, "Geometry").

Both metrics compare the 68 dlib landmarks of the original face ``P`` and of the anonymized face
``Q`` (each (68, 2), image pixels, x first), normalised by the original's inter-ocular distance
between the outer eye corners, points 36 and 45:

    NME = 1 / |K| * sum_{k in K} ( |P_k,x - Q_k,x| + |P_k,y - Q_k,y| ) / ||P_36 - P_45||_2

``landmark_nme_68`` takes every point (pose); ``landmark_nme_51`` takes the 51 non-contour points
17-67 (brows, nose, eyes, mouth: expression geometry).
"""

from __future__ import annotations

import numpy as np

OUTER_EYE_CORNERS = (36, 45)
#: Landmark indices of each metric.
POSE_POINTS = slice(0, 68)
EXPRESSION_POINTS = slice(17, 68)


def inter_ocular(landmarks: np.ndarray) -> float:
    """Distance between the outer eye corners (points 36 and 45) of (68, 2) landmarks."""
    a, b = OUTER_EYE_CORNERS
    return float(np.linalg.norm(np.asarray(landmarks[a], float) - landmarks[b]))


def landmark_nme(orig: np.ndarray, anon: np.ndarray, points: slice = POSE_POINTS) -> float:
    """Mean per-point L1 distance between two (68, 2) landmark sets over ``points``, divided by
    the original's inter-ocular distance (formula in the module docstring)."""
    orig = np.asarray(orig, float)
    anon = np.asarray(anon, float)
    l1 = np.abs(orig[points] - anon[points]).sum(axis=1)
    return float(l1.mean() / max(inter_ocular(orig), 1e-6))


def landmark_nme_68(orig: np.ndarray, anon: np.ndarray) -> float:
    """Pose error: :func:`landmark_nme` over all 68 points."""
    return landmark_nme(orig, anon, POSE_POINTS)


def landmark_nme_51(orig: np.ndarray, anon: np.ndarray) -> float:
    """Expression-geometry error: :func:`landmark_nme` over the 51 points 17-67."""
    return landmark_nme(orig, anon, EXPRESSION_POINTS)
