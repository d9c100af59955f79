"""Irises: MediaPipe's iris network finds each eye's iris, which dlib's six eye points do not.

dlib's points outline the lids; where the iris lies between them moves with the gaze, and how
much of the eye polygon is lid, lash, white and iris changes with the eye opening, so
statistics over the polygon cannot tell a blue eye from a brown one (docs/benchmarks.md,
"Light eyes on faces with dark ones"). MediaPipe Iris (``iris_landmark.tflite``, Apache-2.0,
shipped in ``models/`` from the ``mediapipe`` wheel by ``scripts/fetch_mediapipe_models.py``,
run with LiteRT) regresses the iris's centre and four points on its edge from a small square
about the eye.
"""

from __future__ import annotations

import cv2
import numpy as np

from .faces import LEFT_EYE, RIGHT_EYE, polygon_mask
from .litert import run

IRIS_MODEL = "iris_landmark.tflite"
#: The network's input side, and its square about an eye: the distance between the eye's
#: corners times :data:`ROI` (a factor recalled from MediaPipe's iris graph, not checked
#: against its code), centred between them. Each eye is fed with its outer corner on the
#: square's left, as the subject's right eye appears in a photo; the left eye is mirrored
#: (``tests/test_iris.py``: a mirrored face gives mirrored circles).
SIDE, ROI = 64, 2.3
#: dlib's (outer, inner) eye corners: the subject's right eye (picture left), then the left.
CORNERS = ((36, 39), (45, 42))


def iris_circles(crop: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """(2, 3) float64 ``(x, y, r)`` in crop px of the subject's right and left irises of the
    face in an (S, S, 3) uint8 RGB crop with its (68, 2) dlib landmarks: the centre the network
    gives and the mean distance of its four edge points from it. Each eye's square
    (:data:`ROI`, replicated at the crop's edge) is resized to :data:`SIDE` px in [0, 1]: two
    passes of the network per face."""
    pts = np.asarray(landmarks, np.float64)
    circles = np.zeros((2, 3))
    for k, (outer, inner) in enumerate(CORNERS):
        a, b = pts[outer], pts[inner]
        centre = (a + b) / 2
        scale = SIDE / max(ROI * float(np.linalg.norm(b - a)), 1e-6)
        flip = -1.0 if a[0] > b[0] else 1.0  # the outer corner onto the square's left
        matrix = np.array([[flip * scale, 0, SIDE / 2 - flip * scale * centre[0]],
                           [0, scale, SIDE / 2 - scale * centre[1]]])
        x = cv2.warpAffine(crop, matrix, (SIDE, SIDE), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)
        iris = run(IRIS_MODEL, x.astype(np.float32) / 255.0)[1].reshape(5, 3)[:, :2]
        back = (iris - (SIDE / 2, SIDE / 2)) / (flip * scale, scale) + centre
        circles[k] = (*back[0], np.linalg.norm(back[1:] - back[0], axis=1).mean())
    return circles


#: The part of each iris disc :func:`light_eyes` reads: from the pupil (inside ``RING[0]`` of
#: the radius) to just inside the edge (``RING[1]``), where the lids leave it visible.
RING = (0.35, 0.9)


def light_eyes(crop: np.ndarray, landmarks: np.ndarray,
               circles: np.ndarray | None = None) -> float:
    """How light and blue the irises of the face in an (S, S, 3) uint8 RGB crop with its (68, 2)
    dlib landmarks are: ``median(L*) - 2 median(b*)`` (CIELAB, L* in [0, 100], b* > 0 yellow)
    over the pixels of both irises' :data:`RING` inside the eye polygons (36-41, 42-47), at
    ``circles`` (:func:`iris_circles`, found when None); NaN where under 4 pixels are visible.
    On the bank's donors, looked at by eye: dark brown and black eyes read about -10 to 25,
    blue and grey ones 40 to 100, hazel and green ones and brown ones with a blue cast in
    between (docs/donors.md, "Eye colour")."""
    circles = iris_circles(crop, landmarks) if circles is None else circles
    size = crop.shape[0]
    pixels = []
    for (cx, cy, r), eye in zip(circles, (RIGHT_EYE, LEFT_EYE)):
        x0, y0 = (max(int(np.floor(c - r)), 0) for c in (cx, cy))
        x1, y1 = (min(int(np.ceil(c + r)) + 1, size) for c in (cx, cy))
        if x1 <= x0 or y1 <= y0:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1]
        d = np.hypot(xx - cx, yy - cy)
        lids = polygon_mask(landmarks[eye] - (x0, y0), max(x1 - x0, y1 - y0))[:y1 - y0, :x1 - x0]
        pixels.append(crop[y0:y1, x0:x1][(d >= RING[0] * r) & (d <= RING[1] * r) & lids])
    ring = np.concatenate(pixels) if pixels else np.zeros((0, 3), crop.dtype)
    if len(ring) < 4:
        return float("nan")
    lab = cv2.cvtColor(ring[None].astype(np.float32) / 255, cv2.COLOR_RGB2Lab)[0]
    lightness, _, blue_yellow = np.median(lab, 0)
    return float(lightness - 2 * blue_yellow)
