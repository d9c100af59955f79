"""Detection on the anonymized image and pairing of faces by box overlap.

A face of the original counts as ``detected`` when MTCNN (probability threshold a parameter,
default 0.9) finds a box in the anonymized image whose intersection over union with the
original face's box is at least ``min_iou`` (default 0.5). The same matching pairs the faces of
two images when no sidecar says which is which, and gives each original face's place in the
anonymized image as a re-identifier finds it there (:func:`found_again`): the matched box, with
dlib's landmarks found in the anonymized image.
"""

from __future__ import annotations

import numpy as np

from ..faces import Face, box_iou, landmarks_68

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


def found_again(image: np.ndarray, faces: list[Face], boxes: np.ndarray,
                min_iou: float = MIN_IOU) -> tuple[list[Face], list[int | None]]:
    """Each of ``faces`` (of another version of the (H, W, 3) ``image``: the original of an
    anonymized one) where a re-identifier finds it in ``image``: its box there, of the detector's
    (B, 4) ``boxes`` (:func:`match_boxes`; its own box where none matches), with dlib's 68
    landmarks found in ``image`` in that box, standing upright at the face's turn; its crop
    transform is kept. The judges' crops follow the box (FaceNet) and the landmarks (dlib's
    aligned chip), so a face's similarity there can differ from that at its original place (on
    LFW, up to 0.03 for dlib and 0.13 for FaceNet-CASIA). Also returns the index in ``boxes`` of
    each face's match, or None."""
    match = match_boxes(np.reshape([f.box for f in faces], (-1, 4)), boxes, min_iou)
    found = []
    for face, j in zip(faces, match):
        box = face.box if j is None else np.asarray(boxes[j], float)
        found.append(Face(box, face.score, landmarks_68(image, box, face.crop.turn), face.crop))
    return found, match
