"""Detection on the anonymized image and pairing of faces by box overlap.

A face of the original counts as ``detected`` when MTCNN (probability threshold a parameter,
default 0.9) finds a box in the anonymized image whose intersection over union with the
original face's box is at least ``min_iou`` (default 0.5). The same matching pairs the faces of
two images when no sidecar says which is which.
"""

from __future__ import annotations

import numpy as np

from ..faces import box_iou

MIN_IOU = 0.5


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
