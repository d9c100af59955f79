"""Turned faces: MediaPipe's 468-point face mesh, where dlib's 68 landmarks go wrong.

dlib's 68-point predictor keeps close to a frontal template. On a head turned beyond about 40°
it puts the nose and the eyes on the cheek (on scikit-image's cameraman, turned about 57°, its
nose tip is 35 px short of his), so a donor warped onto those points shows its nose on the
cheek beside the original's. MediaPipe Face Mesh (``face_landmark.tflite``, Apache-2.0, shipped in
``models/`` from the ``mediapipe`` wheel by ``scripts/fetch_mediapipe_models.py``, run with
LiteRT) regresses the face's surface in 3-D and finds the nose tip, eyes and mouth where they
are at any yaw up to profile (``docs/donors.md``, "Turned faces").

A :class:`Mesh` holds the 468 points in crop pixels, ``(x, y, z)``: z is depth at the scale of
x, smaller nearer the camera. Its triangles come from the face itself turned back to frontal
(:func:`frontal_triangles`), so one topology serves the face and every donor. A face is
rendered through its mesh (:func:`turned`) when its yaw is beyond :data:`TURNED`, where no
donor of the bank matches it in pose and dlib's points no longer follow it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np
from scipy.spatial import Delaunay

from .geometry import fit_similarity
from .litert import run

MESH_MODEL = "face_landmark.tflite"
#: The network's input side, and its square around the face: the detector box's longer side
#: times :data:`ROI` (as MediaPipe crops it from its own detector's box).
SIDE, ROI = 192, 1.5
#: Degrees of yaw beyond which a face is rendered through its mesh. The bank's donors reach
#: 30° (``donors.Filters.max_yaw``); between 30° and 40° dlib's points still follow the face and
#: the two renderings looked alike on LFW's turned faces, beyond 40° dlib's drew the donor's
#: features beside the face's own (docs/donors.md, "Turned faces").
TURNED = 40.0
#: Degrees of yaw within which the first pass says a face is not turned: the second pass,
#: about the first's points, read up to 6° apart from it on the faces looked at (the
#: insightface group, LFW's turned faces).
FIRST_PASS = 30.0
#: The outer eye corners in MediaPipe's numbering (the subject's right, then left).
EYE_CORNERS = (33, 263)


@dataclass(frozen=True)
class Mesh:
    """A face's mesh: ``points`` (468, 3) float64 crop px ``(x, y, z)``, z smaller nearer;
    ``triangles`` (T, 3) int, each of positive signed area on screen (:func:`_signed_areas`)
    where it faces the camera; ``facing``: the yaw (degrees, :func:`yaw`) the donor drawn onto
    it is turned towards, mirrored where it is turned the other way (0: every donor as it is;
    the backend's choice, ``Anonymizer.facing``)."""

    points: np.ndarray
    triangles: np.ndarray
    facing: float = 0.0

    def drawn(self) -> np.ndarray:
        """(F, 3) the triangles facing the camera (:func:`drawn`)."""
        return drawn(self.points, self.triangles)

    def surface(self, size: int) -> np.ndarray:
        """(S, S) bool: the face's visible surface (:func:`surface`)."""
        return surface(self.points, self.triangles, size)

    def toward(self, other: np.ndarray, strength: float) -> "Mesh":
        """The mesh with its shape moved ``strength`` (0 to 1) of the way to the shape of
        ``other``, (468, 3) mesh points of another face (the donor's), posed as this one: each
        point ``p + strength (q - p)``, ``q`` the other face's point after the least-squares
        3-D similarity that takes the other face onto this one (``geometry.fit_similarity``),
        so pose, place and size stay this face's and what moves is the shape: the profile of
        the nose, lips and chin that dlib's 68 points do not follow on a turned head (the
        identity-neutral geometry of a turned face). Strength 0 returns the mesh itself."""
        if strength <= 0:
            return self
        posed = fit_similarity(other, self.points).apply(other)
        return replace(self, points=self.points + strength * (posed - self.points))


def drawn(points: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """(F, 3) the ``triangles`` (T, 3) that face the camera at (468, 3) ``points`` (their
    screen winding is their frontal one; the others face away, beyond the silhouette of a
    turned head), far to near by their mean z, so that drawn in this order the nearer surface
    covers what it hides (the far cheek behind the nose)."""
    tris = triangles[_signed_areas(points[:, :2], triangles) > 0]
    return tris[np.argsort(-points[tris, 2].mean(1), kind="stable")]


def surface(points: np.ndarray, triangles: np.ndarray, size: int) -> np.ndarray:
    """(S, S) bool: the face's visible surface at (468, 3) ``points``, the pixels of the
    triangles that face the camera (``anonymizers.ksame.triangle_ids``)."""
    from .anonymizers.ksame import triangle_ids

    return triangle_ids(points[:, :2], drawn(points, triangles), size) >= 0


def render(src: np.ndarray, src_points: np.ndarray, mesh: Mesh, size: int
           ) -> tuple[np.ndarray, np.ndarray]:
    """``src`` (h, w, C) drawn onto a face through its mesh: each triangle facing the camera
    (:meth:`Mesh.drawn`, far to near, so the nose covers the far cheek) warped affinely from
    ``src_points`` ((468, 2) the same mesh points in ``src``'s pixels, e.g. the donor's) onto
    ``mesh.points`` (``anonymizers.ksame.warp_triangles``). Returns the (S, S, C) drawing and
    the (S, S) bool of the pixels drawn."""
    from .anonymizers.ksame import triangle_ids, warp_triangles

    tris = mesh.drawn()
    ids = triangle_ids(mesh.points[:, :2], tris, size)
    return warp_triangles(src, src_points, mesh.points[:, :2], tris, ids), ids >= 0


def face_mesh(crop: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The (468, 3) mesh points of the face in ``box`` ((4,) x0 y0 x1 y1, crop px) of an
    (S, S, 3) uint8 RGB crop, in crop px ``(x, y, z)``. The network runs twice, as MediaPipe
    tracks a face: about the box (:func:`_mesh_about`), then about the box of the points it
    found, the square it was trained on."""
    return _mesh_again(crop, _mesh_about(crop, box))


def _mesh_again(crop: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(468, 3) mesh points found again about the box of (468, 3) ``points`` of a pass."""
    return _mesh_about(crop, np.r_[points[:, :2].min(0), points[:, :2].max(0)])


def _mesh_about(crop: np.ndarray, box: np.ndarray) -> np.ndarray:
    """(468, 3) mesh points, crop px: the network sees the square of side :data:`ROI` times
    the ``box``'s longer side about its centre, resized to :data:`SIDE` px (replicated at the
    crop's edge), in [0, 1]; its outputs are in that square's pixels, z at the scale of x, and
    are mapped back by the same similarity."""
    box = np.asarray(box, np.float64)
    centre = (box[:2] + box[2:]) / 2
    scale = SIDE / (ROI * float(np.max(box[2:] - box[:2])))
    matrix = np.array([[scale, 0, SIDE / 2 - scale * centre[0]],
                       [0, scale, SIDE / 2 - scale * centre[1]]])
    x = cv2.warpAffine(crop, matrix, (SIDE, SIDE), flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REPLICATE)
    points = run(MESH_MODEL, x.astype(np.float32) / 255.0)[0].reshape(-1, 3).astype(np.float64)
    return np.c_[(points[:, :2] - SIDE / 2) / scale + centre, points[:, 2] / scale]


def yaw(points: np.ndarray) -> float:
    """Degrees the head is turned about the vertical, from (468, 3) mesh points: the angle of
    the line between the outer eye corners (:data:`EYE_CORNERS`) out of the picture plane,
    ``atan2(dz, dx)``; 0 frontal, positive when the subject's left eye is the farther."""
    dx, _, dz = points[EYE_CORNERS[1]] - points[EYE_CORNERS[0]]
    return float(np.degrees(np.arctan2(dz, dx)))


def frontal_triangles(points: np.ndarray) -> np.ndarray:
    """(T, 3) triangles over (468, 3) mesh points: the Delaunay triangulation of the points
    turned back to frontal about the vertical through their centroid (by :func:`yaw`), each
    ordered to a positive signed area (:func:`_signed_areas`) in that view."""
    a = np.radians(yaw(points))
    centred = points - points.mean(0)
    frontal = np.c_[centred[:, 0] * np.cos(a) + centred[:, 2] * np.sin(a), centred[:, 1]]
    tris = Delaunay(frontal).simplices
    flip = _signed_areas(frontal, tris) < 0
    tris[flip] = tris[flip][:, ::-1]
    return tris


def turned(crop: np.ndarray, box: np.ndarray) -> Mesh | None:
    """The :class:`Mesh` of the face in ``box`` (crop px) of an (S, S, 3) crop if its yaw
    (:func:`face_mesh`'s second pass) is beyond :data:`TURNED`, else None (the 68 landmarks
    serve it). A face whose first pass reads within :data:`FIRST_PASS` costs that pass only."""
    first = _mesh_about(crop, box)
    if abs(yaw(first)) <= FIRST_PASS:
        return None
    points = _mesh_again(crop, first)
    if abs(yaw(points)) <= TURNED:
        return None
    return Mesh(points, frontal_triangles(points))


def _signed_areas(xy: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """(T,) twice the signed area of each triangle of (P, 2) points (x right, y down): the
    cross product ``(b - a) x (c - a)``; its sign is the triangle's winding."""
    a, b, c = (xy[triangles[:, k]] for k in range(3))
    return (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
