"""Faces: detection, 68 dlib landmarks, square crops and their exact inverse.

Stage 1 of the pipeline. Every function takes and returns RGB ``uint8`` arrays of shape
``(H, W, 3)`` and float coordinates in pixels, ``x`` first. A :class:`Face` carries what the
later stages need: the detector's box and score, the 68 landmarks in image coordinates and the
:class:`CropTransform` that maps the image onto the face's square crop.

The crop is an axis-aligned similarity (scale + translation), so the inverse used by
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


@dataclass(frozen=True)
class CropTransform:
    """Image -> crop mapping ``[u, v] = s * [x, y] + [tx, ty]`` onto a ``size`` x ``size`` crop."""

    scale: float
    tx: float
    ty: float
    size: int

    @property
    def matrix(self) -> np.ndarray:
        """The (2, 3) affine matrix for ``cv2.warpAffine`` (image -> crop)."""
        return np.array([[self.scale, 0.0, self.tx], [0.0, self.scale, self.ty]])

    def to_crop(self, points: np.ndarray) -> np.ndarray:
        """(N, 2) image coordinates -> (N, 2) crop coordinates."""
        return np.asarray(points, np.float64) * self.scale + (self.tx, self.ty)

    def to_image(self, points: np.ndarray) -> np.ndarray:
        """(N, 2) crop coordinates -> (N, 2) image coordinates."""
        return (np.asarray(points, np.float64) - (self.tx, self.ty)) / self.scale

    def image_box(self) -> tuple[float, float, float, float]:
        """The crop's extent in image coordinates, ``(x0, y0, x1, y1)``."""
        x0, y0 = self.to_image(np.array([[0.0, 0.0]]))[0]
        x1, y1 = self.to_image(np.array([[self.size, self.size]]))[0]
        return float(x0), float(y0), float(x1), float(y1)

    def as_dict(self) -> dict:
        return {"scale": self.scale, "tx": self.tx, "ty": self.ty, "size": self.size}


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


@lru_cache(maxsize=4)
def _mtcnn(device: str, min_face_size: int):
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
    min_face_size: int = 20,
    device: str = "auto",
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Face boxes for each image: a list of ``(boxes (F, 4) x0y0x1y1, scores (F,))``.

    MTCNN runs batched over images of equal size, on the GPU when ``device`` resolves to one.
    dlib's HOG detector (one upsampling) has no calibrated score; its detection confidence is
    reported and ``threshold`` is not applied to it.
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
    mtcnn = _mtcnn(resolve_device(device), min_face_size)
    by_size: dict[tuple[int, ...], list[int]] = {}
    for i, img in enumerate(images):
        by_size.setdefault(img.shape, []).append(i)
    for indices in by_size.values():
        batch = np.stack([images[i] for i in indices])
        boxes, probs = mtcnn.detect(batch)
        for i, b, p in zip(indices, boxes, probs):
            if b is None:
                continue
            b = np.asarray(b, float).reshape(-1, 4)
            p = np.asarray(p, float).reshape(-1)
            keep = p >= threshold
            results[i] = (b[keep], p[keep])
    return results


def landmarks_68(image: np.ndarray, box: np.ndarray) -> np.ndarray:
    """dlib's 68 landmarks, shape (68, 2), inside ``box`` (x0, y0, x1, y1) of an RGB image.

    dlib's predictor was trained on its HOG detector's boxes, which are square, tighter and lower
    than MTCNN's; the box is mapped to that convention first (``_to_dlib_box``).
    """
    import dlib

    x0, y0, x1, y1 = _to_dlib_box(box)
    rect = dlib.rectangle(int(round(x0)), int(round(y0)), int(round(x1)), int(round(y1)))
    shape = _shape_predictor()(image, rect)
    return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)


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


def crop_transform(landmarks: np.ndarray, size: int, context: float = 2.0) -> CropTransform:
    """Square crop centred on the landmarks' bounding box, ``context`` times its longer side.

    With the default ``context=2.0`` the face (forehead included) sits well inside the crop and
    the feathered paste-back mask never reaches the crop border.
    """
    lo, hi = landmarks.min(0), landmarks.max(0)
    centre = 0.5 * (lo + hi)
    side = max(float((hi - lo).max()) * context, 8.0)
    scale = size / side
    tx, ty = size / 2 - scale * centre
    return CropTransform(scale=float(scale), tx=float(tx), ty=float(ty), size=int(size))


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
) -> list[Face]:
    """Every face in an RGB ``(H, W, 3)`` uint8 image, with landmarks and crop transform."""
    return find_faces_batch([image], crop_size, detector, threshold, min_face_size, device, context)[0]


def find_faces_batch(
    images: list[np.ndarray],
    crop_size: int = 128,
    detector: str = "mtcnn",
    threshold: float = 0.9,
    min_face_size: int = 20,
    device: str = "auto",
    context: float = 2.0,
) -> list[list[Face]]:
    """:func:`find_faces` over a list of images, detection batched."""
    return [
        [face_from_box(image, box, score, crop_size, context) for box, score in zip(*found)]
        for image, found in zip(
            images, detect_boxes(images, detector, threshold, min_face_size, device)
        )
    ]


def face_from_box(
    image: np.ndarray, box: np.ndarray, score: float, crop_size: int = 128, context: float = 2.0
) -> Face:
    """A :class:`Face` from a detector box: its 68 landmarks and crop transform."""
    lms = landmarks_68(image, box)
    return Face(np.asarray(box, float), float(score), lms, crop_transform(lms, crop_size, context))


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
    """Soft version of a binary (S, S) mask: eroded, then Gaussian-blurred with sigma
    ``feather * S``, so it is 1 inside the face, falls to 0 at about the region's edge and is
    exactly 0 well before the crop border."""
    size = region.shape[0]
    sigma = max(feather * size, 0.5)
    r = int(np.ceil(sigma))
    eroded = cv2.erode(region, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1,) * 2))
    soft = cv2.GaussianBlur(eroded, (0, 0), sigma)
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
        s = face.crop.scale
        inv = np.array([[1 / s, 0, -face.crop.tx / s - x0], [0, 1 / s, -face.crop.ty / s - y0]])
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


def _polygon_mask(points: np.ndarray, size: int, dilate: int = 0) -> np.ndarray:
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
    return _polygon_mask(centre + 0.55 * (landmarks[[1, 3, 13, 15, 29, 31, 35]] - centre), size)


def occluder_mask(crop: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Pixels of an (S, S, 3) uint8 face crop where something that is not skin crosses the face
    (hair, a glasses frame, a microphone, a dark or coloured object), as (S, S) bool.

    A pixel of the face region (:func:`face_region`) is a candidate when its (Cr, Cb) lies more
    than ``OCCLUDER_SIGMAS`` robust standard deviations (1.4826 MAD) from the median chroma of the
    face's own cheeks and nose, or when it is darker than ``OCCLUDER_DARK`` times their median
    luma and half as far off in chroma, outside the eyes, brows and lips (dilated). Candidates are kept
    only in connected components that reach the region's edge (occluders come from outside the
    face), cover at least ``OCCLUDER_MIN_AREA`` of it, and whose centre lies in the upper
    ``OCCLUDER_UPPER`` of the face: below that, a beard cannot be told from an object by colour,
    so the lower face is always replaced. Skin-coloured occluders are not found here: hands are
    found by :func:`~fiftyone_faceanon.hands.hands_mask`, which the pipeline adds to this mask.
    (68, 2) landmarks in crop pixels.
    """
    size = crop.shape[0]
    region = face_region(landmarks, size) > 0
    ycc = cv2.cvtColor(crop, cv2.COLOR_RGB2YCrCb).astype(np.float32)
    skin = _cheek_skin(landmarks, size)
    if skin.sum() < 16:
        return np.zeros((size, size), bool)
    chroma = ycc[..., 1:]
    med = np.median(chroma[skin], axis=0)
    spread = np.maximum(1.4826 * np.median(np.abs(chroma[skin] - med), axis=0), 2.0)
    dist = np.sqrt((((chroma - med) / spread) ** 2).sum(-1))
    iod = float(np.linalg.norm(landmarks[36] - landmarks[45]))
    features = np.zeros((size, size), bool)
    for part in (RIGHT_EYE, LEFT_EYE, slice(17, 22), slice(22, 27), MOUTH):
        features |= _polygon_mask(landmarks[part], size, dilate=int(0.08 * iod) + 1)
    dark = (ycc[..., 0] < OCCLUDER_DARK * np.median(ycc[..., 0][skin])) & (
        dist > OCCLUDER_SIGMAS / 2)
    candidate = ((dist > OCCLUDER_SIGMAS) | dark) & region & ~features
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


def soften(mask: np.ndarray, width: int = 2) -> np.ndarray:
    """A bool (S, S) mask grown by ``width`` pixels with a soft edge: (S, S) float32 that is
    exactly 1 on ``mask`` and falls to 0 within about ``2 * width`` pixels of it."""
    grown = cv2.dilate(mask.astype(np.uint8), np.ones((2 * width + 1,) * 2, np.uint8))
    soft = cv2.GaussianBlur(grown.astype(np.float32), (0, 0), width)
    return np.maximum(soft, mask.astype(np.float32))
