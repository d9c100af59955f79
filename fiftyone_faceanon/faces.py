"""Faces: detection, 68 dlib landmarks, square crops and their exact inverse.

Stage 1 of the pipeline. Every function takes and returns RGB ``uint8`` arrays of shape
``(H, W, 3)`` and float coordinates in pixels, ``x`` first. A :class:`Face` carries what the
later stages need: the detector's box and score, the 68 landmarks in image coordinates and the
:class:`CropTransform` that maps the image onto the face's square crop.

The crop is a similarity made of a scale, a translation and a whole number of quarter turns
(the turn that stands the face upright: :func:`detect_faces`), so the inverse used by
:func:`paste_faces` is exact up to interpolation, and every pixel outside the pasted regions is
returned bit for bit.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

DETECTORS = ("mtcnn", "dlib")

#: Landmark index groups of the iBUG 68-point scheme.
JAW = slice(0, 17)
BROWS = slice(17, 27)
NOSE = slice(27, 36)
RIGHT_EYE = slice(36, 42)  # the subject's right eye: left in the picture
LEFT_EYE = slice(42, 48)
MOUTH = slice(48, 68)


_QUARTER_TURNS = [np.linalg.matrix_power(np.array([[0.0, 1.0], [-1.0, 0.0]]), k)
                  for k in range(4)]
for _turn in _QUARTER_TURNS:
    _turn.setflags(write=False)


def quarter_turn(k: int) -> np.ndarray:
    """(2, 2) rotation of the plane that ``np.rot90(image, k)`` applies to an image's ``(x, y)``
    pixel coordinates (y down, so a counter-clockwise turn on screen), up to a translation
    (read-only: computed once, as crops map points at every step)."""
    return _QUARTER_TURNS[k % 4]


def turn_points(points: np.ndarray, shape: tuple[int, ...], k: int) -> np.ndarray:
    """(N, 2) pixel coordinates of an image of ``shape`` (H, W, ...) -> their coordinates in
    ``np.rot90(image, k)``; ``turn_points(q, turned.shape, -k)`` maps them back."""
    h, w = shape[:2]
    pts = np.asarray(points, np.float64)
    for _ in range(k % 4):
        pts = np.stack([pts[:, 1], (w - 1) - pts[:, 0]], 1)
        h, w = w, h
    return pts


def turn_box(box: np.ndarray, shape: tuple[int, ...], k: int) -> np.ndarray:
    """An ``(x0, y0, x1, y1)`` box of an image of ``shape`` -> the same box in
    ``np.rot90(image, k)``."""
    corners = turn_points(np.reshape(box, (2, 2)), shape, k)
    return np.r_[corners.min(0), corners.max(0)]


def upright(image: np.ndarray, turn: int) -> np.ndarray:
    """The image turned by ``turn`` quarter turns (``np.rot90``), contiguous; itself for none."""
    return np.ascontiguousarray(np.rot90(image, turn)) if turn % 4 else image


@dataclass(frozen=True)
class CropTransform:
    """Image -> crop mapping ``[u, v] = s * R_k [x, y] + [tx, ty]`` onto a ``size`` x ``size``
    crop, ``R_k`` the ``turn`` quarter turns (:func:`quarter_turn`) that stand the face upright."""

    scale: float
    tx: float
    ty: float
    size: int
    turn: int = 0

    @property
    def matrix(self) -> np.ndarray:
        """The (2, 3) affine matrix for ``cv2.warpAffine`` (image -> crop)."""
        return np.c_[self.scale * quarter_turn(self.turn), [self.tx, self.ty]]

    @property
    def inverse(self) -> np.ndarray:
        """The (2, 3) affine matrix of the exact inverse (crop -> image)."""
        back = quarter_turn(-self.turn)
        return np.c_[back / self.scale, -(back @ [self.tx, self.ty]) / self.scale]

    def to_crop(self, points: np.ndarray) -> np.ndarray:
        """(N, 2) image coordinates -> (N, 2) crop coordinates."""
        rotated = np.asarray(points, np.float64) @ quarter_turn(self.turn).T
        return rotated * self.scale + (self.tx, self.ty)

    def to_image(self, points: np.ndarray) -> np.ndarray:
        """(N, 2) crop coordinates -> (N, 2) image coordinates."""
        unscaled = (np.asarray(points, np.float64) - (self.tx, self.ty)) / self.scale
        return unscaled @ quarter_turn(self.turn)

    def image_box(self) -> tuple[float, float, float, float]:
        """The crop's extent in image coordinates, ``(x0, y0, x1, y1)``."""
        corners = self.to_image(np.array([[0.0, 0.0], [self.size, self.size]]))
        (x0, y0), (x1, y1) = corners.min(0), corners.max(0)
        return float(x0), float(y0), float(x1), float(y1)

    def as_dict(self) -> dict:
        return {"scale": self.scale, "tx": self.tx, "ty": self.ty, "size": self.size,
                "turn": self.turn}


@dataclass
class Face:
    """One face: detector box ``(x0, y0, x1, y1)``, score, (68, 2) landmarks, crop transform."""

    box: np.ndarray
    score: float
    landmarks: np.ndarray
    crop: CropTransform
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "box": [round(float(v), 2) for v in self.box],
            "score": round(float(self.score), 5),
            "landmarks": np.round(self.landmarks, 2).tolist(),
            "crop": self.crop.as_dict(),
        }


def face_model_path(name: str) -> Path:
    """Path of a file shipped by ``face-recognition-models`` (without importing it: its
    ``__init__`` needs ``pkg_resources``)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("face-recognition-models is not installed; run ./setup.sh")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / name
    if not path.is_file():
        raise RuntimeError(f"{path}: missing from face-recognition-models")
    return path


def resolve_device(device: str = "auto") -> str:
    """``"auto"`` -> ``"cuda"`` when a GPU is visible, else ``"cpu"``."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@lru_cache(maxsize=8)
def _mtcnn(device: str, min_face_size: float):
    """facenet-pytorch's MTCNN with its three networks channels-last (NHWC): on the CPU, oneDNN
    runs P-Net's max-pooling and convolutions on NHWC tensors some 40% faster per LFW image
    (40.9 against 25.1 ms on one thread) and 25% per 640x360 video frame; boxes move by less
    than 1e-4 px (docs/benchmarks.md)."""
    import torch
    from facenet_pytorch import MTCNN

    mtcnn = MTCNN(keep_all=True, min_face_size=min_face_size, device=device)
    for net in (mtcnn.pnet, mtcnn.rnet, mtcnn.onet):
        net.to(memory_format=torch.channels_last)
    return mtcnn


#: MTCNN's image pyramid: each scale is this factor of the one before (facenet-pytorch's default).
PYRAMID_FACTOR = 0.709
#: MTCNN's P-Net looks at windows of this many pixels: its pyramid starts at ``PNET_WINDOW /
#: min_face_size`` of the image and stops before the shorter side is under ``PNET_WINDOW``.
PNET_WINDOW = 12


def pyramid_min_size(face_px: float, min_face_size: float = 20) -> float:
    """The largest ``min_face_size / PYRAMID_FACTOR ** k`` (whole k >= 0) at most half of
    ``face_px``: MTCNN given it runs the pyramid it runs with ``min_face_size`` less its first k
    scales, those that look for faces under half that size, and so finds a face of ``face_px``
    in the same box for less (on 96 LFW DevTest photos, bit for bit for every k up to 3, 5.6 ms
    per photo at k = 3 against 12.4 ms)."""
    k = int(np.floor(np.log(max(face_px / 2 / min_face_size, 1.0)) / -np.log(PYRAMID_FACTOR)))
    return min_face_size / PYRAMID_FACTOR ** k


@lru_cache(maxsize=1)
def _dlib_detector():
    import dlib

    return dlib.get_frontal_face_detector()


@lru_cache(maxsize=1)
def _shape_predictor():
    import dlib

    return dlib.shape_predictor(str(face_model_path("shape_predictor_68_face_landmarks.dat")))


def detect_boxes(
    images: list[np.ndarray],
    detector: str = "mtcnn",
    threshold: float = 0.9,
    min_face_size: float = 20,
    device: str = "auto",
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Face boxes for each image: a list of ``(boxes (F, 4) x0y0x1y1, scores (F,))``.

    MTCNN runs batched over images of equal size, on the GPU when ``device`` resolves to one;
    an image whose shorter side is under ``min_face_size`` has no face of that size, and no
    boxes (MTCNN's pyramid would have no scale to look at). dlib's HOG detector (one
    upsampling) has no calibrated score; its detection confidence is reported and
    ``threshold`` is not applied to it.
    """
    if detector not in DETECTORS:
        raise ValueError(f"unknown detector {detector!r}; choose one of {DETECTORS}")
    results: list[tuple[np.ndarray, np.ndarray]] = [(np.zeros((0, 4)), np.zeros(0))] * len(images)
    if detector == "dlib":
        det = _dlib_detector()
        for i, img in enumerate(images):
            rects, scores, _ = det.run(img, 1, 0.0)
            boxes = np.array([[r.left(), r.top(), r.right(), r.bottom()] for r in rects], float)
            results[i] = (boxes.reshape(-1, 4), np.asarray(scores, float))
        return results
    import torch

    mtcnn = _mtcnn(resolve_device(device), min_face_size)
    by_size: dict[tuple[int, ...], list[int]] = {}
    for i, img in enumerate(images):
        by_size.setdefault(img.shape, []).append(i)
    for (h, w, *_), indices in by_size.items():
        # no scale to look at: MTCNN's own test, in its floating point (h < min_face_size
        # differs from it when they are equal, e.g. at 47 px)
        if min(h, w) * (PNET_WINDOW / min_face_size) < PNET_WINDOW:
            continue
        # MTCNN turns the (N, H, W, 3) batch into (N, 3, H, W) with a permute; given a view of
        # planar memory, that permute is contiguous, and its pyramid's area resampling runs
        # on contiguous planes, 40% faster, to the same bits (docs/benchmarks.md)
        batch = torch.from_numpy(np.stack([images[i] for i in indices]))
        boxes, probs = mtcnn.detect(batch.permute(0, 3, 1, 2).contiguous().permute(0, 2, 3, 1))
        for i, b, p in zip(indices, boxes, probs):
            if b is None:
                continue
            b = np.asarray(b, float).reshape(-1, 4)
            p = np.asarray(p, float).reshape(-1)
            keep = p >= threshold
            results[i] = (b[keep], p[keep])
    return results


#: Detections of different quarter turns are one face when their intersection covers at least
#: this share of the smaller box (a "face" MTCNN finds upside down on a face's nose is part of
#: that face).
SAME_FACE_OVERLAP = 0.5
#: MTCNN's score at which a face found turned is kept whatever dlib's HOG detector says there.
TURNED_SCORE = 0.99
#: :func:`upright_score` looks at the box grown by this share of its size on each side, resized
#: so the box is this many pixels wide (dlib's HOG window is 80 px).
ORIENT_MARGIN, ORIENT_FACE_PX = 0.5, 100


def detect_faces(
    images: list[np.ndarray],
    detector: str = "mtcnn",
    threshold: float = 0.9,
    min_face_size: int = 20,
    device: str = "auto",
    any_roll: bool = False,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Face boxes for each image, with ``any_roll`` at any roll too (people lying down, photos
    stored sideways or upside down): per image ``(boxes (F, 4) x0y0x1y1, scores (F,), turns (F,)
    int)``, ``turns[i]`` the quarter turns of ``np.rot90`` that stand face ``i`` upright (0
    for every face without ``any_roll``: :func:`detect_boxes`).

    MTCNN and dlib's HOG detector find faces within about 45 degrees of upright, so with
    ``any_roll`` :func:`detect_boxes` runs on the images as they are (alone, as without turns)
    and turned by one, two and three quarter turns, and the boxes are mapped back. Detections
    of different turns that overlap are one face (:func:`_same_face`). A face found upright
    only is kept as :func:`detect_boxes` gives it. Otherwise MTCNN is no judge of which way is
    up (it scores some upright faces higher upside down), so dlib's HOG detector is
    (:func:`upright_score`): the face keeps the turn, among those it was found in, that HOG
    scores highest. A turn other than upright must also convince one of the two detectors:
    HOG finds the face there (score 0 or more, its own threshold) or MTCNN scores it
    :data:`TURNED_SCORE` or more; a texture MTCNN takes for a face on its side (an ear, a hand,
    hair: 9 on the first 500 LFW DevTest photos, at MTCNN 0.90-0.96 and HOG -0.27 or less,
    against HOG 0.34 or more for every one of 200 faces upright) convinces neither. Faces come
    in the order of their turn, then of :func:`detect_boxes`, so an image whose faces are all
    upright gets what :func:`detect_boxes` gives it.
    """
    found = [[(b, p, np.zeros(len(p), int))]
             for b, p in detect_boxes(images, detector, threshold, min_face_size, device)]
    if not any_roll:
        return [per_turn[0] for per_turn in found]
    views = [upright(image, k) for k in (1, 2, 3) for image in images]
    detections = detect_boxes(views, detector, threshold, min_face_size, device)
    for v, (boxes, scores) in enumerate(detections):
        k, i = 1 + v // len(images), v % len(images)
        back = [turn_box(b, views[v].shape, -k) for b in boxes]
        found[i].append((np.reshape(back, (-1, 4)), scores, np.full(len(scores), k, int)))
    results = []
    for image, per_turn in zip(images, found):
        boxes, scores, turns = (np.concatenate(parts) for parts in zip(*per_turn))
        keep = []
        for face in _same_face(boxes, scores, turns):
            candidates = {int(turns[i]): i for i in reversed(face)}  # each turn's best
            if set(candidates) == {0}:
                keep.append(candidates[0])
                continue
            hog = {k: upright_score(image, boxes[face[0]], k) for k in candidates}
            upright_enough = [k for k, i in candidates.items()
                              if k == 0 or hog[k] >= 0 or scores[i] >= TURNED_SCORE]
            if upright_enough:
                keep.append(candidates[max(upright_enough, key=lambda k: (hog[k], -k))])
        keep.sort()
        results.append((boxes[keep].reshape(-1, 4), scores[keep], turns[keep]))
    return results


def upright_score(image: np.ndarray, box: np.ndarray, turn: int) -> float:
    """dlib's HOG face score (its best detection, at any threshold; -inf for none) of ``box``'s
    surroundings (:data:`ORIENT_MARGIN`) in an (H, W, 3) image turned by ``turn`` quarter turns,
    resized so the box is :data:`ORIENT_FACE_PX` wide: higher the nearer upright the face
    stands. On the first 200 LFW DevTest photos it is highest upright for every face, by 0.87
    or more."""
    x0, y0, x1, y1 = (float(v) for v in box)
    grow = ORIENT_MARGIN * max(x1 - x0, y1 - y0)
    h, w = image.shape[:2]
    window = image[int(max(0, y0 - grow)):int(min(h, y1 + grow)),
                   int(max(0, x0 - grow)):int(min(w, x1 + grow))]
    scale = ORIENT_FACE_PX / max(x1 - x0, y1 - y0, 1.0)
    window = cv2.resize(upright(window, turn), None, fx=scale, fy=scale,
                        interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    _, scores, _ = _dlib_detector().run(window, 0, -2.0)
    return float(max(scores)) if len(scores) else -np.inf


def _same_face(boxes: np.ndarray, scores: np.ndarray, turns: np.ndarray) -> list[list[int]]:
    """Detections grouped into faces, greedily from the highest scored: each takes the
    detections left of other turns that overlap it by :data:`SAME_FACE_OVERLAP` or more (those
    of one turn were already told apart by the detector); each group highest first."""
    groups: list[list[int]] = []
    left = [int(i) for i in np.argsort(-scores, kind="stable")]
    while left:
        head = left[0]
        group = [i for i in left if i == head or (
            turns[i] != turns[head] and _overlap(boxes[head], boxes[i]) >= SAME_FACE_OVERLAP)]
        groups.append(group)
        left = [i for i in left if i not in group]
    return groups


def box_side(box: np.ndarray) -> float:
    """The shorter side, in pixels, of an (x0, y0, x1, y1) box."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return min(x1 - x0, y1 - y0)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 4) and (M, 4) x0 y0 x1 y1 boxes (a single box may be given as (4,)) -> (N, M)
    intersection over union (torchvision's ``box_iou``, in float64)."""
    import torch
    from torchvision.ops import box_iou as iou

    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    return iou(torch.from_numpy(a), torch.from_numpy(b)).numpy()


def in_view(box: np.ndarray, shape: tuple[int, ...]) -> float:
    """The share of an ``(x0, y0, x1, y1)`` box's area inside an image of ``shape`` (H, W, ...)
    (0 for an empty box)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    h, w = shape[:2]
    area = max(x1 - x0, 0.0) * max(y1 - y0, 0.0)
    inside = max(0.0, min(x1, w) - max(x0, 0.0)) * max(0.0, min(y1, h) - max(y0, 0.0))
    return inside / area if area > 0 else 0.0


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection of two ``(x0, y0, x1, y1)`` boxes over the smaller one's area."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return float(w * h / smaller) if smaller > 0 else 0.0


def landmarks_68(image: np.ndarray, box: np.ndarray, turn: int = 0) -> np.ndarray:
    """dlib's 68 landmarks, shape (68, 2), inside ``box`` (x0, y0, x1, y1) of an RGB image; the
    face stands upright in the image turned by ``turn`` quarter turns (``np.rot90``), where they
    are found, and they are returned in the image's own coordinates.

    dlib's predictor was trained on its HOG detector's boxes, which are square, tighter and lower
    than MTCNN's; the box is mapped to that convention first (``_to_dlib_box``).
    """
    import dlib

    turned = upright(image, turn)
    x0, y0, x1, y1 = _to_dlib_box(turn_box(box, image.shape, turn))
    rect = dlib.rectangle(int(round(x0)), int(round(y0)), int(round(x1)), int(round(y1)))
    shape = _shape_predictor()(turned, rect)
    points = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
    return turn_points(points, turned.shape, -turn)


def _to_dlib_box(box: np.ndarray) -> tuple[float, float, float, float]:
    """Map a detector box onto a square box of dlib's HOG convention (same centre, shifted down,
    side ``DLIB_BOX_SCALE`` times the mean side), measured on the dlib fixtures' hand-placed
    landmarks."""
    x0, y0, x1, y1 = (float(v) for v in box)
    side = DLIB_BOX_SCALE * 0.5 * ((x1 - x0) + (y1 - y0))
    cx = 0.5 * (x0 + x1)
    cy = 0.5 * (y0 + y1) + DLIB_BOX_SHIFT * (y1 - y0)
    return cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2


#: Measured on the 35 hand-annotated faces of ``fixtures/ffhq10`` and dlib's
#: ``testing_with_face_landmarks.xml`` with MTCNN boxes: inter-ocular NME 0.0202 with the raw box,
#: 0.0185 with this mapping.
DLIB_BOX_SCALE = 1.05
DLIB_BOX_SHIFT = 0.04


def crop_transform(landmarks: np.ndarray, size: int, context: float = 2.0,
                   turn: int = 0) -> CropTransform:
    """Square crop centred on the landmarks' bounding box, ``context`` times its longer side,
    turned by ``turn`` quarter turns (:class:`CropTransform`).

    With the default ``context=2.0`` the face (forehead included) sits well inside the crop and
    the feathered paste-back mask never reaches the crop border.
    """
    lo, hi = landmarks.min(0), landmarks.max(0)
    centre = 0.5 * (lo + hi)
    side = max(float((hi - lo).max()) * context, 8.0)
    scale = size / side
    tx, ty = size / 2 - scale * quarter_turn(turn) @ centre
    return CropTransform(scale=float(scale), tx=float(tx), ty=float(ty), size=int(size),
                         turn=int(turn) % 4)


#: Crop side limits for backends that render each face at its own resolution (pixels).
MIN_CROP, MAX_CROP = 128, 512


def crop_size_for(landmarks: np.ndarray, context: float = 2.0) -> int:
    """The face's own crop side: ``context`` times its (68, 2) landmarks' longer extent, rounded
    to a multiple of 32 and clipped to [``MIN_CROP``, ``MAX_CROP``]."""
    side = float((landmarks.max(0) - landmarks.min(0)).max()) * context
    return int(np.clip(32 * round(side / 32), MIN_CROP, MAX_CROP))


def find_faces(
    image: np.ndarray,
    crop_size: int = 128,
    detector: str = "mtcnn",
    threshold: float = 0.9,
    min_face_size: int = 20,
    device: str = "auto",
    context: float = 2.0,
    any_roll: bool = False,
) -> list[Face]:
    """Every face in an RGB ``(H, W, 3)`` uint8 image, with landmarks and crop transform;
    ``any_roll``: upside down and sideways too (:func:`detect_faces`)."""
    return find_faces_batch([image], crop_size, detector, threshold, min_face_size, device,
                            context, any_roll)[0]


def find_faces_batch(
    images: list[np.ndarray],
    crop_size: int = 128,
    detector: str = "mtcnn",
    threshold: float = 0.9,
    min_face_size: int = 20,
    device: str = "auto",
    context: float = 2.0,
    any_roll: bool = False,
) -> list[list[Face]]:
    """:func:`find_faces` over a list of images, detection batched."""
    found = detect_faces(images, detector, threshold, min_face_size, device, any_roll)
    return [[face_from_box(image, box, score, crop_size, context, turn)
             for box, score, turn in zip(*faces)] for image, faces in zip(images, found)]


def face_from_box(
    image: np.ndarray, box: np.ndarray, score: float, crop_size: int | None = 128,
    context: float = 2.0, turn: int = 0,
) -> Face:
    """A :class:`Face` from a detector box and the quarter turns that stand it upright: its 68
    landmarks and crop transform, ``crop_size`` pixels square or, with None, the face's own
    resolution (:func:`crop_size_for`)."""
    lms = landmarks_68(image, box, turn)
    size = crop_size or crop_size_for(lms, context)
    return Face(np.asarray(box, float), float(score), lms,
                crop_transform(lms, size, context, turn))


def crop_face(image: np.ndarray, crop: CropTransform) -> np.ndarray:
    """The (S, S, 3) crop of an (H, W, 3) image; outside the image is filled by reflection."""
    return cv2.warpAffine(
        image, crop.matrix, (crop.size, crop.size), flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REFLECT_101,
    )


def forehead_points(landmarks: np.ndarray, height: float = 0.3) -> np.ndarray:
    """Ten points above the brows: each brow point moved up by ``height`` times the
    chin-to-brow vector. Shape (10, 2)."""
    brows = landmarks[BROWS]
    up = brows.mean(0) - landmarks[8]
    return brows + height * up


def face_region(landmarks: np.ndarray, size: int, forehead: float = 0.3) -> np.ndarray:
    """Binary (S, S) float32 mask of the face: convex hull of the 68 points and the forehead
    points at ``forehead`` (:func:`forehead_points`)."""
    pts = np.concatenate([landmarks, forehead_points(landmarks, forehead)])
    hull = cv2.convexHull(np.round(pts * 16).astype(np.int32))
    mask = np.zeros((size, size), np.uint8)
    cv2.fillConvexPoly(mask, hull, 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(np.float32)


def feathered_mask(region: np.ndarray, feather: float = 0.04) -> np.ndarray:
    """Soft version of a binary (S, S) mask of 0 and 1: eroded, then Gaussian-blurred with sigma
    ``feather * S``, so it is 1 inside the face, falls to 0 at about the region's edge and is
    exactly 0 well before the crop border. (S, S) float32. The erosion runs on an 8-bit copy, the
    same 0 and 1, which OpenCV erodes three times as fast as float32 (5 against 15 ms at 512
    px)."""
    size = region.shape[0]
    sigma = max(feather * size, 0.5)
    r = int(np.ceil(sigma))
    eroded = cv2.erode(region.astype(np.uint8),
                       cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1,) * 2))
    soft = cv2.GaussianBlur(eroded.astype(np.float32), (0, 0), sigma)
    soft[soft < 1e-3] = 0.0
    return soft


def paste_faces(
    image: np.ndarray, faces: list[Face], crops: list[np.ndarray], masks: list[np.ndarray]
) -> np.ndarray:
    """Paste each (S, S, 3) crop back into the (H, W, 3) image through its (S, S) soft mask.

    ``out = image * (1 - m) + crop * m`` with ``m`` the mask warped by the exact inverse of the
    face's crop transform. Pixels where every warped mask is 0 are copied from ``image`` bit for
    bit. Smaller faces are pasted first: where two overlap, the larger one, normally nearer the
    camera, stays in front (a singer's head over an audience face behind it).
    """
    out = image.copy()
    h, w = image.shape[:2]
    area = [(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]) for f in faces]
    for i in np.argsort(area, kind="stable"):
        face, crop, mask = faces[i], crops[i], masks[i]
        x0, y0, x1, y1 = face.crop.image_box()
        x0, y0 = max(int(np.floor(x0)), 0), max(int(np.floor(y0)), 0)
        x1, y1 = min(int(np.ceil(x1)) + 1, w), min(int(np.ceil(y1)) + 1, h)
        if x1 <= x0 or y1 <= y0:
            continue
        # crop -> ROI: inverse of the crop transform, shifted to the ROI's origin.
        inv = face.crop.inverse - [[0, 0, x0], [0, 0, y0]]
        size = (x1 - x0, y1 - y0)
        m = cv2.warpAffine(mask, inv, size, flags=cv2.INTER_LINEAR, borderValue=0.0)
        c = cv2.warpAffine(crop, inv, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        roi = out[y0:y1, x0:x1]
        m3 = m[..., None]
        blended = roi.astype(np.float32) * (1 - m3) + c.astype(np.float32) * m3
        blended = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
        out[y0:y1, x0:x1] = np.where(m3 > 0, blended, roi)
    return out


#: Occluder detection (:func:`occluder_mask`): chroma distance, in robust standard deviations
#: of the face's own skin, above which a pixel is not skin; smallest component kept, as a share
#: of the face region; share of the face's height, from the top, in which components may lie.
OCCLUDER_SIGMAS = 4.0
#: ... or darker than this share of the skin's median luma while off the skin's chroma by half
#: as many deviations (black hair, frames, microphones lose their chroma in shadow-like ways).
OCCLUDER_DARK = 0.5
OCCLUDER_MIN_AREA = 0.01
OCCLUDER_UPPER = 0.62


def polygon_mask(points: np.ndarray, size: int, dilate: int = 0) -> np.ndarray:
    """(S, S) bool: the convex hull of (N, 2) crop-px ``points``, filled to 1/16 px, grown by
    ``dilate`` px (an elliptic structuring element)."""
    mask = np.zeros((size, size), np.uint8)
    cv2.fillConvexPoly(mask, np.round(cv2.convexHull(points.astype(np.float32)) * 16).astype(
        np.int32), 1, lineType=cv2.LINE_8, shift=4)
    if dilate:
        mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * dilate + 1,) * 2))
    return mask.astype(bool)


def _cheek_skin(landmarks: np.ndarray, size: int) -> np.ndarray:
    """(S, S) bool: the face's own skin to measure it by, the polygon of the cheeks and nose
    (points 1, 3, 13, 15, 29, 31, 35) pulled 45% of the way to the nose's centre, away from
    hair, beard line and glasses; (68, 2) crop-px landmarks."""
    centre = landmarks[NOSE].mean(0)
    return polygon_mask(centre + 0.55 * (landmarks[[1, 3, 13, 15, 29, 31, 35]] - centre), size)


def not_skin(crop: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """(S, S) bool: the pixels of an (S, S, 3) uint8 face crop that are not the face's skin
    (:func:`occluder_mask`'s candidates, anywhere in the crop): (Cr, Cb) more than
    ``OCCLUDER_SIGMAS`` robust standard deviations (1.4826 MAD) from the median chroma of the
    face's own cheeks and nose, or darker than ``OCCLUDER_DARK`` times their median luma and
    half as far off in chroma; none where too little skin is seen to measure it. (68, 2)
    landmarks in crop pixels."""
    size = crop.shape[0]
    ycc = cv2.cvtColor(crop, cv2.COLOR_RGB2YCrCb).astype(np.float32)
    skin = _cheek_skin(landmarks, size)
    if skin.sum() < 16:
        return np.zeros((size, size), bool)
    chroma = ycc[..., 1:]
    med = np.median(chroma[skin], axis=0)
    spread = np.maximum(1.4826 * np.median(np.abs(chroma[skin] - med), axis=0), 2.0)
    dist = np.sqrt((((chroma - med) / spread) ** 2).sum(-1))
    dark = (ycc[..., 0] < OCCLUDER_DARK * np.median(ycc[..., 0][skin])) & (
        dist > OCCLUDER_SIGMAS / 2)
    return (dist > OCCLUDER_SIGMAS) | dark


def occluder_mask(crop: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Pixels of an (S, S, 3) uint8 face crop where something that is not skin crosses the face
    (hair, a glasses frame, a microphone, a dark or coloured object), as (S, S) bool.

    A pixel of the face region (:func:`face_region`) is a candidate when it is not the face's
    skin (:func:`not_skin`) and lies outside the eyes, brows and lips (dilated). Candidates are kept
    only in connected components that reach the region's edge (occluders come from outside the
    face), cover at least ``OCCLUDER_MIN_AREA`` of it, and whose centre lies in the upper
    ``OCCLUDER_UPPER`` of the face: below that, a beard cannot be told from an object by colour,
    so the lower face is always replaced. Skin-coloured occluders are not found here: hands are
    found by :func:`~fiftyone_faceanon.hands.hands_mask`, which the pipeline adds to this mask.
    (68, 2) landmarks in crop pixels.
    """
    size = crop.shape[0]
    region = face_region(landmarks, size) > 0
    iod = float(np.linalg.norm(landmarks[36] - landmarks[45]))
    features = np.zeros((size, size), bool)
    for part in (RIGHT_EYE, LEFT_EYE, slice(17, 22), slice(22, 27), MOUTH):
        features |= polygon_mask(landmarks[part], size, dilate=int(0.08 * iod) + 1)
    candidate = not_skin(crop, landmarks) & region & ~features
    candidate = cv2.morphologyEx(candidate.astype(np.uint8), cv2.MORPH_OPEN,
                                 np.ones((3, 3), np.uint8))
    candidate = (cv2.morphologyEx(candidate, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
                 .astype(bool) & region & ~features)
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(candidate.astype(np.uint8))
    edge = region & ~cv2.erode(region.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    top = forehead_points(landmarks)[:, 1].min()
    limit = top + OCCLUDER_UPPER * (landmarks[8, 1] - top)
    keep = np.zeros(count, bool)
    touching = np.unique(labels[edge & candidate])
    for label in touching[touching > 0]:
        keep[label] = (stats[label, cv2.CC_STAT_AREA] >= OCCLUDER_MIN_AREA * region.sum()
                       and centroids[label][1] <= limit)
    return keep[labels]


#: Glasses frames (:func:`frames_mask`): the width of a frame's line, the band around each eye
#: centre where frames sit and the eye inside it that is never kept (semi-axes), in eye
#: distances; how far over the cheeks' line strength a frame's is, in robust deviations.
FRAME_LINE = 0.12
FRAME_BAND = (0.62, 0.45)
FRAME_EYE = (0.3, 0.17)
FRAME_SIGMAS = 4.0


def frames_mask(crop: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """(S, S) bool: the frames of the glasses on the face of an (S, S, 3) uint8 crop with its
    (68, 2) crop-px landmarks, for a face known to wear them (the pipeline asks its glasses
    head). A frame is a thin line darker or brighter than what is beside it: the larger of the
    luma's black-hat and top-hat with an ellipse :data:`FRAME_LINE` eye distances wide, more
    than :data:`FRAME_SIGMAS` robust deviations (1.4826 MAD, plus 4 grey levels) over its median
    on the cheeks, in an ellipse :data:`FRAME_BAND` around each eye centre, outside the eye
    (:data:`FRAME_EYE`) and the brows, and closed over gaps of a few pixels. It finds thin metal
    frames, which :func:`occluder_mask` (chroma, darkness) does not."""
    size = crop.shape[0]
    iod = float(np.linalg.norm(landmarks[RIGHT_EYE].mean(0) - landmarks[LEFT_EYE].mean(0)))
    luma = cv2.cvtColor(crop, cv2.COLOR_RGB2YCrCb)[..., 0].astype(np.float32)
    side = max(3, int(round(FRAME_LINE * iod)) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side))
    line = np.maximum(cv2.morphologyEx(luma, cv2.MORPH_BLACKHAT, kernel),
                      cv2.morphologyEx(luma, cv2.MORPH_TOPHAT, kernel))
    band, eyes, brows = (np.zeros((size, size), np.uint8) for _ in range(3))
    for part in (RIGHT_EYE, LEFT_EYE):
        cx, cy = (int(v) for v in landmarks[part].mean(0))
        cv2.ellipse(band, (cx, cy), (int(FRAME_BAND[0] * iod), int(FRAME_BAND[1] * iod)), 0, 0,
                    360, 1, -1)
        cv2.ellipse(eyes, (cx, cy), (int(FRAME_EYE[0] * iod), int(FRAME_EYE[1] * iod)), 0, 0,
                    360, 1, -1)
    for part in (slice(17, 22), slice(22, 27)):
        cv2.polylines(brows, [np.round(landmarks[part]).astype(np.int32)], False, 1,
                      max(2, int(FRAME_LINE * iod)))
    zone = band.astype(bool) & ~eyes.astype(bool) & ~brows.astype(bool)
    cheeks = _cheek_skin(landmarks, size)
    if cheeks.sum() < 16:
        return np.zeros((size, size), bool)
    med = float(np.median(line[cheeks]))
    limit = med + FRAME_SIGMAS * 1.4826 * float(np.median(np.abs(line[cheeks] - med))) + 4.0
    found = ((line > limit) & zone).astype(np.uint8)
    closed = cv2.morphologyEx(found, cv2.MORPH_CLOSE,
                              cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)))
    return closed.astype(bool) & zone


def majority_mask(masks: list[np.ndarray], crops: list[CropTransform], at: CropTransform
                  ) -> np.ndarray:
    """(S, S) bool in the crop ``at``: the pixels that more than half of ``masks`` cover, each
    (S_i, S_i) bool in its own crop ``crops[i]`` and carried onto ``at``'s through the image
    (nearest neighbour; a mask covers nothing outside its crop). For one face's masks on
    consecutive frames this is a median in time: what one frame finds and both of its
    neighbours do not (or the reverse) no longer blinks."""
    votes = np.zeros((at.size, at.size), np.uint8)
    onto = np.vstack([at.matrix, [0.0, 0.0, 1.0]])
    for mask, crop in zip(masks, crops):
        moved = onto @ np.vstack([crop.inverse, [0.0, 0.0, 1.0]])
        votes += cv2.warpAffine(mask.astype(np.uint8), moved[:2], (at.size, at.size),
                                flags=cv2.INTER_NEAREST)
    return 2 * votes > len(masks)


def soften(mask: np.ndarray, width: int = 2) -> np.ndarray:
    """A bool (S, S) mask grown by ``width`` pixels with a soft edge: (S, S) float32 that is
    exactly 1 on ``mask`` and falls to 0 within about ``2 * width`` pixels of it."""
    grown = cv2.dilate(mask.astype(np.uint8), np.ones((2 * width + 1,) * 2, np.uint8))
    soft = cv2.GaussianBlur(grown.astype(np.float32), (0, 0), width)
    return np.maximum(soft, mask.astype(np.float32))
