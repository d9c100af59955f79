"""Training shards: reading them, and the conditioning the networks see. numpy + OpenCV only.

A shard ``shard-NNNNN.npz`` holds ``N`` faces cropped at ``S`` px by :mod:`.data`:

- ``encoded`` (B,) uint8: the N WebP-encoded (S, S, 3) context crops, concatenated;
- ``offsets`` (N + 1,) int64: crop ``i`` is ``encoded[offsets[i]:offsets[i + 1]]``;
- ``landmarks`` (N, 68, 2) float32, crop pixels; ``boxes`` (N, 4) float32, detector box in crop
  pixels; ``sources`` (N,) str, the photo's path relative to the data folder.

``index.json`` beside the shards records the size, the split, the counts and the dropped faces.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from ..faces import face_region

#: Landmark index of each point's mirror image (iBUG 68 scheme), for horizontal flips.
MIRROR_68 = np.array(
    list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30] + [35, 34, 33, 32, 31]
    + [45, 44, 43, 42, 47, 46] + [39, 38, 37, 36, 41, 40] + [54, 53, 52, 51, 50, 49, 48]
    + [59, 58, 57, 56, 55] + [64, 63, 62, 61, 60] + [67, 66, 65]
)

#: The polylines of the landmark image, one channel each: (first, last, closed).
LANDMARK_GROUPS = (
    (0, 16, False),  # jaw
    (17, 21, False),  # right brow
    (22, 26, False),  # left brow
    (27, 30, False),  # nose bridge
    (30, 35, True),  # nose bottom (with the tip)
    (36, 41, True),  # right eye
    (42, 47, True),  # left eye
    (48, 59, True),  # outer lips
    (60, 67, True),  # inner lips
)
LANDMARK_CHANNELS = len(LANDMARK_GROUPS)


def landmark_image(landmarks: np.ndarray, size: int) -> np.ndarray:
    """Rasterise (68, 2) crop-pixel landmarks into a (9, S, S) uint8 image: one anti-aliased
    polyline per facial part (``LANDMARK_GROUPS``), about S/64 px wide."""
    out = np.zeros((LANDMARK_CHANNELS, size, size), np.uint8)
    pts = np.round(np.asarray(landmarks, np.float64) * 16).astype(np.int32)
    thick = max(1, round(size / 64))
    for c, (a, b, closed) in enumerate(LANDMARK_GROUPS):
        cv2.polylines(out[c], [pts[a:b + 1]], closed, 255, thick, cv2.LINE_AA, shift=4)
    return out


def flip_landmarks(landmarks: np.ndarray, size: int) -> np.ndarray:
    """(68, 2) crop-pixel landmarks of the horizontally mirrored crop: ``x' = S - 1 - x``, points
    renumbered by ``MIRROR_68`` so a right eye stays a right eye."""
    out = np.asarray(landmarks, np.float32)[MIRROR_68].copy()
    out[:, 0] = size - 1 - out[:, 0]
    return out


def shard_paths(folder: Path) -> list[Path]:
    """The shards of a prepared folder, in order."""
    paths = sorted(Path(folder).glob("shard-*.npz"))
    if not paths:
        raise FileNotFoundError(f"{folder}: no shard-*.npz (run faceanon prepare-data)")
    return paths


def read_index(folder: Path) -> dict:
    """The ``index.json`` written beside the shards."""
    return json.loads((Path(folder) / "index.json").read_text())


def load_faces(folder: Path, size: int | None = None,
               limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Decode every face of a prepared folder: crops (N, S, S, 3) uint8 RGB and landmarks
    (N, 68, 2) float32 in crop pixels, resized to ``size`` when given (landmarks scaled by
    ``size / S_shard``)."""
    images, lms = [], []
    for path in shard_paths(folder):
        with np.load(path) as z:
            encoded, offsets, marks = z["encoded"], z["offsets"], z["landmarks"]
        for i in range(len(marks)):
            bgr = cv2.imdecode(encoded[offsets[i]:offsets[i + 1]], cv2.IMREAD_COLOR)
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            lm = marks[i].astype(np.float32)
            if size is not None and size != rgb.shape[0]:
                lm = (lm + 0.5) * (size / rgb.shape[0]) - 0.5
                rgb = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
            images.append(rgb)
            lms.append(lm)
            if limit is not None and len(images) >= limit:
                return np.stack(images), np.stack(lms)
    return np.stack(images), np.stack(lms)


def conditioning(crops: np.ndarray, landmarks: np.ndarray,
                 flips: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Network inputs for a batch: crops (N, S, S, 3) uint8 and landmarks (N, 68, 2) ->
    images (N, 3, S, S) float32 in [-1, 1], masks (N, 1, S, S) float32 (1 = face to paint, the
    project's ``face_region``), landmark images (N, 9, S, S) float32 in [0, 1]. ``flips`` (N,)
    bool mirrors the chosen faces first."""
    n, size = len(crops), crops.shape[1]
    images = np.empty((n, 3, size, size), np.float32)
    masks = np.empty((n, 1, size, size), np.float32)
    marks = np.empty((n, LANDMARK_CHANNELS, size, size), np.float32)
    for i in range(n):
        crop, lm = crops[i], landmarks[i]
        if flips is not None and flips[i]:
            crop, lm = crop[:, ::-1], flip_landmarks(lm, size)
        images[i] = crop.transpose(2, 0, 1) / 127.5 - 1.0
        masks[i, 0] = face_region(lm, size)
        marks[i] = landmark_image(lm, size) / 255.0
    return images, masks, marks
