"""``ksame``: the average of k >= 50 training faces, warped onto each face's 68 landmarks.

The average face lives in a canonical frame (``models/ksame_mean_face_128.npz``: ``image``
(S, S, 3) uint8, ``landmarks`` (68, 2), ``k``), built by ``scripts/build_ksame.py`` from the
training split. For each face it is warped piecewise-affinely (one affine map per triangle of a
Delaunay triangulation over the 68 points, 10 forehead points and 8 border points) onto the
face's landmarks; the pipeline then relights, colour-matches and blends it.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy.spatial import Delaunay

from ..faces import forehead_points
from ..weights import model_path
from .base import Anonymizer, register

MEAN_FACE = "ksame_mean_face_128.npz"


def border_points(size: int) -> np.ndarray:
    """The 4 corners and 4 edge midpoints of a size x size frame, shape (8, 2)."""
    e = size - 1.0
    h = e / 2
    return np.array([[0, 0], [h, 0], [e, 0], [e, h], [e, e], [h, e], [0, e], [0, h]], np.float64)


def control_points(landmarks: np.ndarray, size: int) -> np.ndarray:
    """(86, 2): the 68 landmarks, 10 forehead points and 8 border points of the frame."""
    return np.concatenate([landmarks, forehead_points(landmarks), border_points(size)])


def piecewise_affine_warp(
    src: np.ndarray,
    src_points: np.ndarray,
    dst_points: np.ndarray,
    triangles: np.ndarray,
    size: int,
) -> np.ndarray:
    """Warp ``src`` (h, w, C) so that ``src_points`` (P, 2) land on ``dst_points`` (P, 2).

    ``triangles`` (T, 3) index the points. Every output pixel of the (size, size) result takes
    its triangle's affine map (:func:`warp_triangles`). Pixels in no triangle take the nearest
    triangle's map via the frame's border points.
    """
    return warp_triangles(src, src_points, dst_points, triangles,
                          triangle_ids(dst_points, triangles, size))


def triangle_ids(points: np.ndarray, triangles: np.ndarray, size: int) -> np.ndarray:
    """(size, size) int32: the index into ``triangles`` (T, 3) of the triangle of (P, 2)
    ``points`` that covers each pixel, -1 where none; triangles are filled in their order, so
    a later one covers an earlier one where they overlap."""
    ids = np.full((size, size), -1, np.int32)
    for t, tri in enumerate(triangles):
        cv2.fillConvexPoly(ids, np.round(points[tri] * 16).astype(np.int32), int(t), shift=4)
    return ids


def warp_triangles(
    src: np.ndarray,
    src_points: np.ndarray,
    dst_points: np.ndarray,
    triangles: np.ndarray,
    ids: np.ndarray,
) -> np.ndarray:
    """``src`` (h, w, C) warped triangle by triangle: each pixel of the (S, S, C) result takes
    the affine map ``x_src = M_t [x_dst, y_dst, 1]^T`` of its triangle ``t = ids[y, x]``
    (:func:`triangle_ids`; ``M_t`` solved from the triangle's three vertex pairs) and samples
    ``src`` bilinearly there (``cv2.remap``). Pixels of id -1 take triangle 0's map."""
    size = ids.shape[0]
    # One (2, 3) affine map dst -> src per triangle.
    dst_h = np.concatenate([dst_points[triangles], np.ones((len(triangles), 3, 1))], axis=2)
    # pinv: a degenerate (collinear) destination triangle gets a least-squares map.
    maps = (np.linalg.pinv(dst_h) @ src_points[triangles]).transpose(0, 2, 1)  # (T, 2, 3)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    m = maps[np.maximum(ids, 0)]  # (size, size, 2, 3)
    map_x = m[..., 0, 0] * xs + m[..., 0, 1] * ys + m[..., 0, 2]
    map_y = m[..., 1, 0] * xs + m[..., 1, 1] * ys + m[..., 1, 2]
    return cv2.remap(src, map_x.astype(np.float32), map_y.astype(np.float32), cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


@register("ksame", "Average of k>=50 training faces, warped onto the 68 landmarks, relit")
class KSame(Anonymizer):
    photometric = True

    def __init__(self, crop_size: int = 128):
        data = np.load(model_path(MEAN_FACE))
        self.mean_face = data["image"]
        self.k = int(data["k"])
        self.crop_size = crop_size
        frame = self.mean_face.shape[0]
        self.src_points = control_points(data["landmarks"].astype(np.float64), frame)
        self.triangles = Delaunay(self.src_points).simplices

    def anonymize(self, crops, landmarks, regions, rngs, donors=None):
        size = self.crop_size
        # control_points puts the crop's border points last: the canonical frame's border maps
        # onto the crop's border.
        return np.stack([
            piecewise_affine_warp(
                self.mean_face, self.src_points, control_points(lms, size), self.triangles, size
            )
            for lms in landmarks
        ])
