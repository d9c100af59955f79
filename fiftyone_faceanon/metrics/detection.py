"""Detection on the anonymized image and pairing of faces by box overlap.

A face of the original counts as ``detected`` when MTCNN (probability threshold a parameter,
default 0.9) finds a box in the anonymized image whose intersection over union with the
original face's box is at least ``min_iou`` (default 0.5). The same matching pairs the faces of
two images when no sidecar says which is which.
"""

from __future__ import annotations

import numpy as np

MIN_IOU = 0.5


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box in (A, 4) with every box in (B, 4) (x0, y0, x1, y1)
    -> (A, B)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)[:, None]
    b = np.asarray(b, np.float64).reshape(-1, 4)[None]
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    area = lambda r: (r[..., 2] - r[..., 0]) * (r[..., 3] - r[..., 1])  # noqa: E731
    union = area(a) + area(b) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def match_boxes(orig: np.ndarray, anon: np.ndarray, min_iou: float = MIN_IOU) -> list[int | None]:
    """For each original box (A, 4), the index of its anonymized box in (B, 4), or None.

    Greedy one-to-one matching by decreasing IoU; pairs below ``min_iou`` are not matched.
    """
    iou = box_iou(orig, anon)
    match: list[int | None] = [None] * iou.shape[0]
    taken: set[int] = set()
    for flat in np.argsort(-iou, axis=None):
        i, j = np.unravel_index(flat, iou.shape)
        if iou[i, j] < min_iou:
            break
        if match[i] is None and j not in taken:
            match[i] = int(j)
            taken.add(int(j))
    return match
