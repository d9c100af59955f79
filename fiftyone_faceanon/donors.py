"""Donor faces: attributes measured on a face crop, and banks of donor faces to match them.

The ``donor`` backend replaces each face with a donor chosen by a matching cost over
:func:`face_attributes`, which must therefore be measured the same way on a donor (when its bank
is built) and on the face it replaces (at run time, on the pipeline's crop): every attribute is
measured in one canonical frame (:func:`canonical_face`: eyes level and 64 px apart) from the crop
and its 68 landmarks, at a few milliseconds per face, whatever the crop size.

A :class:`DonorBank` holds aligned (384 px) donor crops as JPEG, their landmarks, attributes,
identity embeddings and provenance, in one ``.npz`` (:func:`save_bank`, :func:`load_bank`). The
shipped bank ``models/donors_sfhq.npz`` is cut from contact sheets of synthetic faces of people
who do not exist (SFHQ, SFHQ-T2I) by ``scripts/build_donor_bank.py``; ``faceanon donors build``
makes one from a user's own photos. Both go through :func:`build_bank`: detection, alignment, the
donor filters (:class:`Filters`, :func:`rejection`), embeddings and de-duplication
(docs/donors.md).

Images are RGB ``uint8`` ``(H, W, 3)``; landmarks ``(68, 2)`` float pixels, x first.
"""

from __future__ import annotations

import io
import json
import random
import zipfile
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterable, Mapping

import cv2
import numpy as np

from .faces import LEFT_EYE, RIGHT_EYE, box_iou
from .images import atomic_write
from .iris import light_eyes
from .weights import model_path

#: The canonical frame every attribute is measured in: eye line horizontal, ``CANON_IOD`` px
#: between the eye centres, the landmarks' bounding box grown by ``CANON_MARGIN`` of that.
CANON_IOD = 64.0
CANON_MARGIN = 0.5


def _eye_centres(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(68, 2) -> centres of the subject's right eye (picture left) and left eye, (2,) each."""
    return landmarks[RIGHT_EYE].mean(0), landmarks[LEFT_EYE].mean(0)


def canonical_face(
    crop: np.ndarray, landmarks: np.ndarray, iod: float = CANON_IOD
) -> tuple[np.ndarray, np.ndarray]:
    """Rotate and scale an (S, S, 3) crop so that the eye line is horizontal and ``iod`` px long.
    Returns the (h, w, 3) image of the landmarks' bounding box grown by :data:`CANON_MARGIN`
    ``* iod`` on every side, and the (68, 2) landmarks in it.

    A crop whose face is larger than the frame's is first shrunk with area averaging (a plain
    warp would alias fine texture into the sharpness and texture measures); a smaller one is
    upsampled bilinearly, so the measures see what the crop holds, no more.
    """
    image, pts = crop, np.asarray(landmarks, np.float64)
    right, left = _eye_centres(pts)
    scale = iod / max(float(np.hypot(*(left - right))), 1e-6)
    if scale < 1.0:
        h, w = crop.shape[:2]
        size = (max(int(round(w * scale)), 1), max(int(round(h * scale)), 1))
        image = cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
        pts = (pts + 0.5) * (size[0] / w, size[1] / h) - 0.5
        right, left = _eye_centres(pts)
        scale = iod / max(float(np.hypot(*(left - right))), 1e-6)
    mid = 0.5 * (left + right)
    angle = np.degrees(np.arctan2(left[1] - right[1], left[0] - right[0]))
    m = cv2.getRotationMatrix2D((float(mid[0]), float(mid[1])), float(angle), scale)
    out = pts @ m[:, :2].T + m[:, 2]
    lo = np.floor(out.min(0) - CANON_MARGIN * iod)
    hi = np.ceil(out.max(0) + CANON_MARGIN * iod)
    m[:, 2] -= lo
    w, h = (int(v) for v in hi - lo)
    frame = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REFLECT_101)
    return frame, out - lo


def _fill(polygon: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(P, 2) polygon -> bool mask of ``shape`` (h, w), sub-pixel edges."""
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round(np.asarray(polygon) * 16).astype(np.int32)], 1, cv2.LINE_8, 4)
    return mask.astype(bool)


def _grow(mask: np.ndarray, radius: float) -> np.ndarray:
    """Dilate (radius > 0) or erode (radius < 0) a bool mask by a disc of ``|radius|`` px."""
    r = max(int(round(abs(radius))), 1)
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    op = cv2.dilate if radius > 0 else cv2.erode
    return op(mask.astype(np.uint8), disc).astype(bool)


def face_zones(landmarks: np.ndarray, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """Landmark-derived zones of a canonical frame of ``shape`` (h, w), each an (h, w) bool
    mask, from its (68, 2) landmarks (:func:`canonical_face`):

    - ``skin``: hull of the jaw and brows (points 0-26) eroded by 0.08 IOD, minus the eyes
      (grown by 0.12 IOD), the brows (drawn 0.25 IOD thick) and the outer lips (grown 0.08 IOD);
    - ``cheek_r``, ``cheek_l``: the skin between the lower eyelid (moved 0.15 IOD down), the
      nose wing and the jaw (points 41, 40, 31, 3, 2, 1 and their mirror 46, 47, 35, 13, 14, 15);
    - ``upper_lip``: skin between the nostrils (moved 0.1 IOD down) and the upper lip (31-35,
      54-48); ``chin``: between the lower lip and the chin (55-59, 6-10); ``jaw_r``, ``jaw_l``:
      between the nose wing, the mouth corner and the jaw (31, 48, 6-3 and 35, 54, 10-13);
      all intersected with ``skin``;
    - ``eyes``: the two eye polygons; ``frame``: where a glasses frame sits: for each eye the
      ellipse band ``0.8 <= rho <= 1.3`` of semi-axes (0.5, 0.4) IOD around its centre below
      0.1 IOD above it, plus the nose bridge between the inner eye corners from 0.25 IOD above
      to 0.15 IOD below the eye line;
    - ``inner_mouth``: the inner-lip polygon (60-67); ``lips``: the outer-lip polygon (48-59)
      without it.
    """
    pts = np.asarray(landmarks, np.float64)
    iod = CANON_IOD
    hull = np.zeros(shape, np.uint8)
    cv2.fillConvexPoly(hull, np.round(cv2.convexHull(pts[:27].astype(np.float32)) * 16)
                       .astype(np.int32), 1, cv2.LINE_8, 4)
    eyes = _fill(pts[RIGHT_EYE], shape) | _fill(pts[LEFT_EYE], shape)
    brows = np.zeros(shape, np.uint8)
    for part in (slice(17, 22), slice(22, 27)):
        cv2.polylines(brows, [np.round(pts[part]).astype(np.int32)], False, 1,
                      int(round(0.25 * iod)))
    skin = (_grow(hull.astype(bool), -0.08 * iod) & ~_grow(eyes, 0.12 * iod)
            & ~brows.astype(bool) & ~_grow(_fill(pts[48:60], shape), 0.08 * iod))
    down = np.array([0.0, 0.15 * iod])
    zones = {
        "skin": skin,
        "cheek_r": _fill(np.array([pts[41] + down, pts[40] + down, pts[31], pts[3], pts[2],
                                   pts[1]]), shape) & skin,
        "cheek_l": _fill(np.array([pts[46] + down, pts[47] + down, pts[35], pts[13], pts[14],
                                   pts[15]]), shape) & skin,
        "upper_lip": _fill(np.concatenate([pts[31:36] + (0.0, 0.1 * iod), pts[48:55][::-1]]),
                           shape) & skin,
        "chin": _fill(np.concatenate([pts[55:60], pts[6:11]]), shape) & skin,
        "jaw_r": _fill(pts[[31, 48, 6, 5, 4, 3]], shape) & skin,
        "jaw_l": _fill(pts[[35, 54, 10, 11, 12, 13]], shape) & skin,
        "eyes": eyes,
    }
    zones["inner_mouth"], zones["lips"] = _mouth_zones(pts, shape)
    frame = np.zeros(shape, np.uint8)
    for part in (RIGHT_EYE, LEFT_EYE):
        centre = pts[part].mean(0)
        ring = np.zeros_like(frame)
        for radius, value in ((1.3, 1), (0.8, 0)):
            axes = (int(round(radius * 0.5 * iod * 16)), int(round(radius * 0.4 * iod * 16)))
            cv2.ellipse(ring, tuple(np.round(centre * 16).astype(int)), axes, 0, 0, 360, value,
                        -1, cv2.LINE_8, 4)
        ring[: max(int(np.ceil(centre[1] - 0.1 * iod)), 0)] = 0
        frame |= ring
    eye_y = int(round(0.5 * (pts[RIGHT_EYE, 1].mean() + pts[LEFT_EYE, 1].mean())))
    x0, x1 = int(np.floor(pts[39, 0])) + 1, int(np.ceil(pts[42, 0]))
    frame[max(eye_y - int(0.25 * iod), 0) : eye_y + int(0.15 * iod), max(x0, 0) : max(x1, 0)] = 1
    zones["frame"] = frame.astype(bool)
    return zones


#: Pitch model (:func:`head_pose`): median nose-tip drop below the eye line, in inter-ocular
#: distances, of 250 LFW faces (0.517; 0.515 on the SFHQ sheets), and the nose tip's depth in
#: front of the eyes in the same unit (anthropometric, about 3 cm for 6.3 cm between the pupils).
PITCH_DROP = 0.52
PITCH_DEPTH = 0.5


def head_pose(landmarks: np.ndarray) -> tuple[float, float, float]:
    """``(yaw, pitch, roll)`` in degrees from (68, 2) landmarks in any frame.

    - roll: angle of the line from the right eye's centre to the left eye's; positive when the
      eye on the picture's right is lower (the head leans towards the picture's right shoulder).
    - yaw: the nose tip (30) between the jaw sides (mean x of points 0-2 and 14-16) at ``r`` of
      the way, on the de-rolled landmarks; a cylinder whose nose tip stands one radius in front
      gives ``yaw = asin(2 r - 1)``; positive when the nose points to the picture's right.
    - pitch: the nose tip's drop below the eye line over the inter-ocular distance (corrected by
      ``cos(yaw)``), ``d``; ``pitch = asin((d - PITCH_DROP) / PITCH_DEPTH)``; positive when the
      head is tilted down (chin towards the chest), negative when it looks up.

    2-D estimates from landmarks, good to roughly 10 degrees on near-frontal faces; dlib's
    68-point model does not follow profiles (it fits a frontal shape onto them), so a profile
    can read as frontal: :func:`frontal_score` is the check for that.
    """
    pts = np.asarray(landmarks, np.float64)
    right, left = _eye_centres(pts)
    d = left - right
    iod = max(float(np.hypot(*d)), 1e-6)
    roll = float(np.degrees(np.arctan2(d[1], d[0])))
    c, s = d / iod
    local = (pts - 0.5 * (left + right)) @ np.array([[c, -s], [s, c]])  # de-rolled
    x0, x1 = local[0:3, 0].mean(), local[14:17, 0].mean()
    r = (local[30, 0] - x0) / (x1 - x0) if x1 - x0 > 1e-6 else 0.5
    yaw = float(np.arcsin(np.clip(2 * r - 1, -1.0, 1.0)))
    drop = local[30, 1] / iod * np.cos(yaw)
    pitch = float(np.degrees(np.arcsin(np.clip((drop - PITCH_DROP) / PITCH_DEPTH, -1.0, 1.0))))
    return float(np.degrees(yaw)), pitch, roll


def eye_aspect_ratio(landmarks: np.ndarray) -> float:
    """Mean eye aspect ratio of both eyes, ``(|p2 - p6| + |p3 - p5|) / (2 |p1 - p4|)`` for
    each eye's six points (Soukupova and Cech 2016): about 0.3 open, under 0.15 closed."""
    pts = np.asarray(landmarks, np.float64)
    ratios = []
    for part in (RIGHT_EYE, LEFT_EYE):
        p = pts[part]
        vertical = np.linalg.norm(p[1] - p[5]) + np.linalg.norm(p[2] - p[4])
        ratios.append(vertical / max(2 * np.linalg.norm(p[0] - p[3]), 1e-6))
    return float(np.mean(ratios))


def mouth_opening(landmarks: np.ndarray) -> float:
    """Inner-lip gap over mouth width: the mean of ``|p61 - p67|``, ``|p62 - p66|`` and
    ``|p63 - p65|`` over ``|p48 - p54|``; 0 for closed lips, about 0.3 for a wide-open mouth."""
    pts = np.asarray(landmarks, np.float64)
    gap = np.mean([np.linalg.norm(pts[a] - pts[b]) for a, b in ((61, 67), (62, 66), (63, 65))])
    return float(gap / max(np.linalg.norm(pts[48] - pts[54]), 1e-6))


def _mouth_zones(pts: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(68, 2) landmarks -> the inner-lip polygon (60-67) and the lips around it (the outer
    polygon 48-59 without it), each an (h, w) bool mask of ``shape``."""
    inner = _fill(pts[60:68], shape)
    return inner, _fill(pts[48:60], shape) & ~inner


def mouth_redness(crop: np.ndarray, landmarks: np.ndarray) -> float:
    """How much redder the inside of the lips is than the lips: the median Cr over the inner-lip
    polygon (60-67) minus that over the lips around it (the outer polygon 48-59 without it),
    in the canonical frame (:func:`canonical_face`), Cr in [0, 1]. (S, S, 3) uint8 RGB crop,
    (68, 2) crop-px landmarks -> float.

    Negative where the mouth shows its inside (teeth, the cavity, the tongue in its shadow, all
    less red than lips); zero or more where the inner-lip points lie on the lips themselves
    (closed or pouting lips whose landmarks part them). On faceapi's photos: -0.007 to -0.088
    for the open mouths (surprised, fearful, happy), +0.001 to +0.019 for the closed ones
    (angry, disgusted, the Big Bang Theory cast); of the bank's wide-open mouths measured
    with teeth, the three that are closed or pouting by eye score +0.006 to +0.022.
    """
    image, pts = canonical_face(crop, landmarks)
    inner, lips = _mouth_zones(pts, image.shape[:2])
    cr = cv2.cvtColor(image.astype(np.float32) / 255, cv2.COLOR_RGB2YCrCb)[..., 1]
    return _redness(cr, inner, lips)


def _redness(cr: np.ndarray, inner: np.ndarray, lips: np.ndarray) -> float:
    """:func:`mouth_redness` from the canonical frame's (h, w) Cr and its inner-lip and lips
    masks; 0 where either has under 4 px."""
    if inner.sum() < 4 or lips.sum() < 4:
        return 0.0
    return float(np.median(cr[inner]) - np.median(cr[lips]))


#: Teeth (:func:`face_attributes`): lips open by at least ``TEETH_MIN_OPEN``; a pixel of the
#: inner-lip polygon is a tooth when its HSV saturation is below ``TEETH_MAX_SAT`` and its luma
#: above ``TEETH_MIN_LUMA`` times the skin's median luma.
TEETH_MIN_OPEN = 0.03
TEETH_MAX_SAT = 0.4
TEETH_MIN_LUMA = 0.7
#: Beard (:func:`beard_evidence`): logistic ``1 / (1 + exp(-BEARD_SLOPE (h - BEARD_MID)))``,
#: fitted on 304 hand-labelled SFHQ faces (72 with facial hair; ROC AUC 0.92).
BEARD_SLOPE = 8.2
BEARD_MID = 0.44
#: Beard zones smaller than this (pixels of the canonical frame, IOD 64) are left out: a short
#: upper lip leaves a sliver whose median follows single pixels.
BEARD_MIN_ZONE = 100
#: Glasses (:func:`face_attributes`): logistic of the frame-to-eye edge ratio, fitted on 251
#: hand-labelled frontal SFHQ faces (50 with glasses or sunglasses; ROC AUC 0.94).
GLASSES_SLOPE = 5.1
GLASSES_MID = -0.25


def _sigmoid(x: float) -> float:
    return float(1.0 / (1.0 + np.exp(-x)))


def beard_evidence(luma: np.ndarray, chroma: np.ndarray, zones: dict[str, np.ndarray]) -> float:
    """Facial-hair evidence ``h`` of a canonical face: (C, C) luma and chroma magnitude
    ``hypot(Cr - 0.5, Cb - 0.5)``, and :func:`face_zones`.

    Hair is darker than skin (black, brown) or less saturated (grey, white, stubble), so each
    beard zone scores ``max(1 - Y_z / Y_c, 1 - chroma_z / chroma_c)`` with medians over the zone
    and the cheeks: the upper lip and chin against both cheeks, each jaw side against its own
    cheek (side light darkens one side only; the lighter side counts). ``h`` is the highest zone
    score; zones under ``BEARD_MIN_ZONE`` pixels are left out. Chroma is left out when the
    cheeks have almost none (a grayscale photo).
    """
    def stats(mask: np.ndarray) -> tuple[float, float] | None:
        return (float(np.median(luma[mask])), float(np.median(chroma[mask]))) \
            if mask.sum() >= BEARD_MIN_ZONE else None

    def score(zone: np.ndarray, ref: np.ndarray) -> float | None:
        z, r = stats(zone), stats(ref)
        if z is None or r is None:
            return None
        dark = 1 - z[0] / max(r[0], 1e-3)
        pale = 1 - z[1] / r[1] if r[1] > 0.01 else 0.0
        return max(dark, pale)

    cheeks = zones["cheek_r"] | zones["cheek_l"]
    scores = [score(zones["upper_lip"], cheeks), score(zones["chin"], cheeks)]
    sides = [score(zones["jaw_r"], zones["cheek_r"]), score(zones["jaw_l"], zones["cheek_l"])]
    sides = [s for s in sides if s is not None]
    scores.append(min(sides) if sides else None)
    scores = [s for s in scores if s is not None]
    return max(scores) if scores else 0.0


def face_attributes(crop: np.ndarray, landmarks: np.ndarray,
                    read_eyes: bool = True) -> dict[str, float]:
    """Attributes of the face in an (S, S, 3) uint8 RGB crop with its (68, 2) landmarks in crop
    pixels, measured in the canonical frame (:func:`canonical_face`: eyes level, 64 px apart), so
    a face gives about the same values at any crop size or roll:

    - ``yaw``, ``pitch``, ``roll``: degrees, :func:`head_pose` (yaw > 0: nose towards the
      picture's right; pitch > 0: head tilted down; roll > 0: picture-right eye lower);
    - ``mouth_open``: :func:`mouth_opening` (0 closed); ``teeth``: share of the inner-lip
      polygon that is bright and unsaturated (``TEETH_*``), 0 when the lips are closed;
    - ``eye_open``: :func:`eye_aspect_ratio`;
    - ``cb``, ``cr``, ``cb_std``, ``cr_std``, ``luma``: mean and standard deviation of Cb and Cr
      and mean Y over the ``skin`` zone (:func:`face_zones`), in OpenCV's float YCrCb of the
      [0, 1] image: Y in [0, 1], Cb and Cr in [0, 1] with 0.5 neutral (the scale
      ``photometric.color_transfer`` works in);
    - ``beard``: 0..1, the logistic ``BEARD_*`` of :func:`beard_evidence`;
    - ``glasses``: 0..1, the logistic ``GLASSES_*`` of ``log(mean |grad Y| on the frame zone /
      mean |grad Y| on the eyes)``: a frame (or dark lenses) puts edges around the eyes that
      bare skin does not have;
    - ``sharpness``: variance of the 4-neighbour Laplacian of Y (0-255 units) over the skin
      zone, in the canonical frame (so comparable across resolutions; an upsampled face scores
      low);
    - ``shade``: how much brighter the cheek on the picture's right (``cheek_l``) is than the
      one on its left (``cheek_r``), over the mean Y of the skin: ``(Y_l - Y_r) / Y_skin``,
      0 for a face lit evenly from the front, about +-1 for one lit hard from a side (0 where
      a cheek has under 10 px);
    - ``lips``: how much redder the lips are than the skin, the median Cr over the ``lips``
      zone less that over ``skin`` (0 where the lips have under 10 px): lipstick and a child's
      lips read high. Of the largest faces of the LFW DevTest 500: 0.010 at the median, 0.037
      at the 90th percentile; of the 8 highest (0.058-0.102), 7 are women wearing lipstick;
    - ``eyes``: how light and blue the irises are, :func:`~fiftyone_faceanon.iris.light_eyes`
      on the crop itself (the iris network finds them; NaN where they are hidden, and where
      ``read_eyes`` is False: the donor backend reads them for its eye rule alone, on faces
      that will be verified and not through kept lenses).

    Checked on real photos (``tests/test_donors.py``, fixtures/faceapi): ``surprised`` and
    ``fearful`` (open mouths, 0.38 and 0.41) against ``angry`` and ``disgusted`` (closed, under
    0.02); the bearded man of ``angry`` (beard 0.87) against the women of ``neutral`` and
    ``happy`` (0.03, 0.09); Leonard and Bernadette (glasses 0.27, 0.56) against Sheldon, Amy,
    Penny and Raj (at most 0.09). Lipstick can lift ``mouth_open`` of closed lips (``neutral``:
    0.16); some glasses-free photos reach ``glasses`` 0.35. The same face at a 128 and a 384 px
    crop differs by at most 0.05 in each attribute but ``sharpness``. About 2.5 ms per face on
    one core at 128 px, 3.5 ms at 384 px.
    """
    image, pts = canonical_face(crop, landmarks)
    zones = face_zones(pts, image.shape[:2])
    ycc = cv2.cvtColor(image.astype(np.float32) / 255, cv2.COLOR_RGB2YCrCb)
    luma, cr, cb = ycc[..., 0], ycc[..., 1], ycc[..., 2]
    skin = _skin(zones)
    yaw, pitch, roll = head_pose(landmarks)
    opening = mouth_opening(landmarks)
    teeth = _teeth(image, luma, zones, opening)
    chroma = np.hypot(cr - 0.5, cb - 0.5)
    smooth = cv2.GaussianBlur(luma, (0, 0), 1.0)
    grad = np.hypot(cv2.Sobel(smooth, cv2.CV_32F, 1, 0), cv2.Sobel(smooth, cv2.CV_32F, 0, 1))
    eyes = zones["eyes"]
    frame = float(np.log(grad[zones["frame"]].mean() / max(grad[eyes].mean(), 1e-6))) \
        if eyes.any() else GLASSES_MID
    laplacian = cv2.Laplacian(luma * 255, cv2.CV_32F, ksize=1)
    right, left = zones["cheek_r"], zones["cheek_l"]
    shade = 0.0
    if min(left.sum(), right.sum()) >= 10:
        shade = float((luma[left].mean() - luma[right].mean())
                      / max(float(luma[skin].mean()), 1e-3))
    lips = zones["lips"]
    redness = (float(np.median(cr[lips]) - np.median(cr[skin])) if lips.sum() >= 10 else 0.0)
    return {
        "yaw": yaw, "pitch": pitch, "roll": roll,
        "mouth_open": opening, "teeth": teeth, "eye_open": eye_aspect_ratio(landmarks),
        "cb": float(cb[skin].mean()), "cr": float(cr[skin].mean()),
        "cb_std": float(cb[skin].std()), "cr_std": float(cr[skin].std()),
        "luma": float(luma[skin].mean()),
        "beard": _sigmoid(BEARD_SLOPE * (beard_evidence(luma, chroma, zones) - BEARD_MID)),
        "glasses": _sigmoid(GLASSES_SLOPE * (frame - GLASSES_MID)),
        "sharpness": float(laplacian[skin].var()),
        "shade": shade, "lips": redness,
        "eyes": light_eyes(crop, landmarks) if read_eyes else float("nan"),
    }


def _skin(zones: dict[str, np.ndarray]) -> np.ndarray:
    """The ``skin`` zone of :func:`face_zones`, or the whole frame where degenerate landmarks
    leave it under 20 px."""
    skin = zones["skin"]
    return skin if skin.sum() >= 20 else np.ones_like(skin)


def _teeth(image: np.ndarray, luma: np.ndarray, zones: dict[str, np.ndarray],
           opening: float) -> float:
    """``teeth`` of :func:`face_attributes` from the canonical (h, w, 3) uint8 ``image``, its
    (h, w) luma in [0, 1], its :func:`face_zones` and the lips' :func:`mouth_opening`."""
    inner = zones["inner_mouth"]
    if opening < TEETH_MIN_OPEN or inner.sum() < 4:
        return 0.0
    rgb = image[inner].astype(np.float32)
    top = rgb.max(1)
    sat = (top - rgb.min(1)) / np.maximum(top, 1.0)  # HSV saturation
    bright = luma[inner] > TEETH_MIN_LUMA * float(np.median(luma[_skin(zones)]))
    return float(np.mean((sat < TEETH_MAX_SAT) & bright))


def mouth_inside(crop: np.ndarray, landmarks: np.ndarray) -> tuple[float, float]:
    """``(teeth, redness)`` of the face in an (S, S, 3) uint8 RGB crop with its (68, 2)
    crop-px landmarks: :func:`face_attributes`' ``teeth`` and :func:`mouth_redness`, from one
    canonical frame."""
    image, pts = canonical_face(crop, landmarks)
    ycc = cv2.cvtColor(image.astype(np.float32) / 255, cv2.COLOR_RGB2YCrCb)
    zones = face_zones(pts, image.shape[:2])
    return (_teeth(image, ycc[..., 0], zones, mouth_opening(landmarks)),
            _redness(ycc[..., 1], zones["inner_mouth"], zones["lips"]))


# --- demographic labels (k-NN on UTKFace) -------------------------------------------------------

#: Age bins of the coverage table: (label, lowest age, highest age).
AGE_BINS = (("0-12", 0, 12), ("13-19", 13, 19), ("20-39", 20, 39), ("40-59", 40, 59),
            ("60+", 60, 200))
#: UTKFace's race codes.
RACES = ("White", "Black", "Asian", "Indian", "Others")
#: Neighbours voted over by :func:`knn_labels`.
KNN_K = 15


#: Where fer's box lies around a face's 68 landmarks (:func:`expressions`): ``(x0, y0, x1,
#: y1)`` in fractions of their bounding box's width and height, the median of the detector's
#: box over 339 faces of LFW DevTrain (the first photo of every eighth person).
EXPRESSION_BOX = (0.013, -0.337, 0.970, 0.964)


def expressions(crops: list[np.ndarray], landmarks: list[np.ndarray]) -> np.ndarray:
    """(N, 7) probabilities of fer's expression classes (:data:`~.metrics.emotion.EMOTIONS`)
    for the faces of N (S, S, 3) uint8 RGB crops with their (68, 2) landmarks in crop pixels,
    each cut from the box :data:`EXPRESSION_BOX` puts around its landmarks. The same reading
    on a donor's crop and on the face it replaces: the box comes from the landmarks, which both
    have, not from a detector."""
    from .metrics.emotion import INPUT_SIZE, box_crops, load_emotion_model

    boxes = []
    for pts in landmarks:
        lo, hi = pts.min(0), pts.max(0)
        boxes.append(np.r_[lo, lo] + np.asarray(EXPRESSION_BOX) * np.r_[hi - lo, hi - lo])
    cut = [box_crops(crop, [box]) for crop, box in zip(crops, boxes)]
    return load_emotion_model("cpu").predict_crops(
        np.concatenate([np.zeros((0, INPUT_SIZE, INPUT_SIZE), np.float32), *cut]))


def utkface_labels(name: str) -> tuple[int, int, int] | None:
    """``(age, gender, race)`` from a UTKFace file name ``AGE_GENDER_RACE_DATE.jpg.chip.jpg``
    (gender 0 male, 1 female; race 0-4 as :data:`RACES`), or None when the name is malformed."""
    parts = name.split("_")
    try:
        age, gender, race = (int(p) for p in parts[:3])
    except ValueError:
        return None
    return (age, gender, race) if gender in (0, 1) and 0 <= race < len(RACES) else None


def utkface_chips(folder: Path) -> list[Path]:
    """The UTKFace chips in ``folder`` whose file names carry labels (:func:`utkface_labels`), in
    name order."""
    return sorted(p for p in Path(folder).glob("*.jpg") if utkface_labels(p.name))


def utkface_reference(
    folder: Path, judge, n: int = 2000, seed: int = 0, device: str = "auto"
) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings and labels of ``n`` UTKFace chips drawn with ``seed`` from ``folder``: (M, D)
    float32 unit rows of ``judge`` and (M, 3) int ``(age, gender, race)``, M <= n (chips where
    MTCNN finds no face are skipped; the largest face of a chip is used)."""
    files = utkface_chips(folder)
    pick = np.random.default_rng(seed).choice(len(files), min(n, len(files)), replace=False)
    embeddings, kept = embed_largest_faces([files[i] for i in np.sort(pick)], {"j": judge},
                                           device)
    return embeddings["j"], np.array([utkface_labels(p.name) for p in kept],
                                     np.int64).reshape(-1, 3)


def utkface_500(files: list[Path]) -> list[Path]:
    """The UTKFace 500 of docs/benchmarks.md among ``files`` (UTKFace chips in name order):
    100 per race code, drawn by ``random.Random(0)`` from each code's chips. The demographic
    heads are checked on them and trained on the rest."""
    by: dict[int, list[Path]] = {}
    for f in files:
        by.setdefault(utkface_labels(f.name)[2], []).append(f)
    rng = random.Random(0)
    return [f for race in sorted(by) for f in rng.sample(by[race], 100)]


def embed_largest_faces(files: list[Path], judges: dict, device: str = "auto",
                        progress: Callable[[int], None] | None = None, grey: bool = False
                        ) -> tuple[dict[str, np.ndarray], list[Path]]:
    """Each of ``judges``' (M, D) float32 unit embeddings of the largest face MTCNN finds in
    each of ``files`` (64 at a time; ``progress(images done)`` after each), and the M files it
    found one in. ``grey``: each image taken in grey first (every channel the mean of the
    three, rounded)."""
    from .faces import find_faces_batch
    from .images import load_image

    def load(path: Path) -> np.ndarray:
        rgb = load_image(path).rgb
        if not grey:
            return rgb
        return np.repeat(np.rint(rgb.mean(2, keepdims=True)).astype(np.uint8), 3, 2)

    rows: dict[str, list[np.ndarray]] = {name: [] for name in judges}
    kept: list[Path] = []
    for start in range(0, len(files), 64):
        chunk = files[start : start + 64]
        images = [load(p) for p in chunk]
        found = find_faces_batch(images, device=device)
        items = [(im, [max(f, key=lambda x: _box_area(x.box))])
                 for im, f in zip(images, found) if f]
        kept.extend(p for p, f in zip(chunk, found) if f)
        for name, judge in judges.items():
            rows[name].extend(judge.embed_many(items) if items else [])
        if progress:
            progress(len(chunk))
    return {name: (np.concatenate(r).astype(np.float32) if r else
                   np.zeros((0, judges[name].dim), np.float32)) for name, r in rows.items()}, kept


def _box_area(box: np.ndarray) -> float:
    return float((box[2] - box[0]) * (box[3] - box[1]))


def knn_labels(
    query: np.ndarray, reference: np.ndarray, labels: np.ndarray, k: int = KNN_K,
    exclude_self: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Age, gender and race of each (N, D) unit-row ``query`` from its ``k`` most
    cosine-similar rows of the (M, D) ``reference`` with (M, 3) ``(age, gender, race)``
    ``labels``: the similarity-weighted median age, and the similarity-weighted majority gender
    and race. ``exclude_self`` skips each query's best match (leave-one-out on the reference).
    Returns (N,) float32 age, (N,) int8 gender, (N,) int8 race."""
    sim = np.asarray(query, np.float32) @ np.asarray(reference, np.float32).T
    start = 1 if exclude_self else 0
    top = np.argsort(-sim, axis=1)[:, start : start + k]
    w = np.maximum(np.take_along_axis(sim, top, 1), 1e-3)
    ages = labels[top, 0].astype(np.float64)
    order = np.argsort(ages, 1)
    cum = np.cumsum(np.take_along_axis(w, order, 1), 1)
    mid = (cum < 0.5 * cum[:, -1:]).sum(1)
    age = np.take_along_axis(np.take_along_axis(ages, order, 1), mid[:, None], 1)[:, 0]

    def vote(column: int, classes: int) -> np.ndarray:
        onehot = np.eye(classes)[labels[top, column]]  # (N, k, C)
        return (onehot * w[..., None]).sum(1).argmax(1)

    return age.astype(np.float32), vote(1, 2).astype(np.int8), vote(2, len(RACES)).astype(np.int8)


# --- build-time quality measures ----------------------------------------------------------------

#: Chroma distance, in robust standard deviations, beyond which a skin pixel is an occluder.
OCCLUSION_SIGMAS = 4.0


def quality_measures(crop: np.ndarray, landmarks: np.ndarray) -> dict[str, float]:
    """What the donor filters of :func:`build_bank` check beyond :func:`face_attributes`, for an
    (S, S, 3) uint8 crop and its (68, 2) landmarks in crop pixels:

    - ``frontal``: score of dlib's frontal HOG sub-detector (index 0 of its five) on the crop,
      for a detection overlapping the landmark box (IoU > 0.3), -inf without one: dlib's
      landmarks fit a frontal shape onto a profile, its detector does tell them apart;
    - ``sclera``: share of the eye polygons that is bright and unsaturated (the whites of the
      eyes; about 0 behind sunglasses);
    - ``occlusion``: share of the skin zone above the nose tip whose (Cr, Cb) lies more than
      ``OCCLUSION_SIGMAS`` robust standard deviations (1.4826 MAD, at least 0.004) from its
      median: strands of hair, paint or objects across the upper face (a hand, skin-coloured, is
      not seen);
    - ``texture``: mean absolute Laplacian of Y on the skin over that on the eyes and brows
      (grown by 3 px): low for painted or doll-like renderings with smooth skin and crisp
      features;
    - ``sharpness``: ``face_attributes``' sharpness over the squared median skin luma (in
      [0, 1]), so that dark skin is not taken for blur.
    """
    from .faces import _dlib_detector

    image, pts = canonical_face(crop, landmarks)
    zones = face_zones(pts, image.shape[:2])
    ycc = cv2.cvtColor(image.astype(np.float32) / 255, cv2.COLOR_RGB2YCrCb)
    luma = ycc[..., 0]
    skin = _skin(zones)
    skin_luma = float(np.median(luma[skin]))
    eyes = zones["eyes"]
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
    sclera = float(np.mean((hsv[..., 1][eyes] < 100) & (luma[eyes] > 0.75 * skin_luma))) \
        if eyes.any() else 0.0
    upper = skin.copy()
    upper[int(np.ceil(pts[30, 1])):] = False
    occlusion = 0.0
    if upper.sum() >= 20:
        chroma = ycc[..., 1:][upper]
        med = np.median(chroma, 0)
        spread = np.maximum(1.4826 * np.median(np.abs(chroma - med), 0), 0.004)
        occlusion = float(np.mean(np.sqrt((((chroma - med) / spread) ** 2).sum(1))
                                  > OCCLUSION_SIGMAS))
    lap = np.abs(cv2.Laplacian(luma, cv2.CV_32F, ksize=1))
    brows = np.zeros_like(eyes, np.uint8)
    for part in (slice(17, 22), slice(22, 27)):
        cv2.polylines(brows, [np.round(pts[part]).astype(np.int32)], False, 1, 2)
    features = _grow(eyes | brows.astype(bool), 3)
    texture = float(lap[skin].mean() / max(lap[features].mean(), 1e-6))
    sharp = float(cv2.Laplacian(luma * 255, cv2.CV_32F, ksize=1)[skin].var())
    frontal = -np.inf
    lo, hi = landmarks.min(0), landmarks.max(0)
    rects, scores, kinds = _dlib_detector().run(np.ascontiguousarray(crop), 0, -1.0)
    for rect, score, kind in zip(rects, scores, kinds):
        box = np.array([rect.left(), rect.top(), rect.right(), rect.bottom()], float)
        if kind == 0 and box_iou(box, np.r_[lo, hi])[0, 0] > 0.3:
            frontal = max(frontal, float(score))
    return {"frontal": frontal, "sclera": sclera, "occlusion": occlusion, "texture": texture,
            "sharpness": sharp / max(skin_luma, 0.05) ** 2}


# --- the bank -----------------------------------------------------------------------------------

#: Attribute names of :func:`face_attributes`, in the bank's order.
ATTRIBUTES = ("yaw", "pitch", "roll", "mouth_open", "teeth", "eye_open", "cb", "cr", "cb_std",
              "cr_std", "luma", "beard", "glasses", "sharpness", "shade", "lips", "eyes")
#: The shipped bank in ``models/``.
BANK_FILE = "donors_sfhq.npz"
#: The ``format`` string of a bank file.
BANK_FORMAT = "fiftyone_faceanon.donors/1"
#: Donor crop side and context (:func:`~fiftyone_faceanon.faces.crop_transform`): the landmark
#: box spans 384 / 1.6 = 240 px, the forehead points (``faces.forehead_points``) stay inside
#: the crop for every face (at 1.5, 59% of the SFHQ faces lose them over the top edge).
BANK_SIZE = 384
BANK_CONTEXT = 1.6
JPEG_QUALITY = 85
#: Decoded donor crops kept by :meth:`DonorBank.image`.
CACHE = 32


class DonorBankError(RuntimeError):
    """A donor bank file that is missing, corrupt or not a bank; ``str(e)`` is one line."""


@dataclass(eq=False)
class DonorBank:
    """Aligned donor faces with what the ``donor`` backend matches and warps them by.

    - ``ids`` (N,) str; ``size``: crop side S (:data:`BANK_SIZE`);
    - ``landmarks`` (N, 68, 2) float32 in crop pixels;
    - ``attributes``: :data:`ATTRIBUTES` -> (N,) float32 (:func:`face_attributes` of the stored
      crop);
    - ``embeddings``: judge name (``facenet_casia``, ``dlib``: those :func:`load_judges` had) ->
      (N, D) float32 unit rows of the stored crop;
    - ``source`` (N,) str: the image it came from (for the shipped bank, the sheet's path
      relative to the shared data folder); ``cell`` (N, 2) int: (row, col) in the sheet's grid,
      -1 where not a grid; ``box`` (N, 4) float32: the detector's face box in the source image;
      ``scale`` (N,) float32: crop pixels per source pixel (above 1: upsampled);
    - ``age`` (N,) float32 years, ``gender`` (N,) int8 (0 male, 1 female), ``race`` (N,) int8
      (UTKFace's codes, :data:`RACES`): k-NN estimates (:func:`knn_labels`), NaN / -1 where not
      estimated;
    - ``jpeg`` (B,) uint8: the crops' JPEG files end to end, donor ``i`` at
      ``jpeg[offsets[i]:offsets[i + 1]]``; ``meta``: how the bank was built (JSON-able dict);
    - ``gender_seen`` (N,) int8: the gender a person saw (0 male, 1 female; :func:`see_genders`),
      -1 where none was recorded (every donor of a bank saved without it);
    - ``facial_hair_seen`` (N,) bool: a person saw a moustache, beard, goatee or stubble
      (:func:`see_facial_hair`), which ``beard`` misses on light hair and stubble; False where
      none was recorded;
    - ``fringe_seen`` (N,) bool: a person saw hair, a hat or a headscarf inside the donor's own
      face region above its eyes (:func:`see_fringe`), which a wide try would draw onto the
      face's forehead (the donor backend leaves them out of a wide try); False where none was
      recorded;
    - ``expression`` (N, 7) float32: fer's expression probabilities of each stored crop
      (:func:`expressions`), read as the bank is built; a bank saved without them (before
      2026-12-06) has them read as it is made, :data:`CACHE` crops at a time (about 2.6 s for
      759 donors).
    """

    ids: np.ndarray
    size: int
    landmarks: np.ndarray
    attributes: dict[str, np.ndarray]
    embeddings: dict[str, np.ndarray]
    source: np.ndarray
    cell: np.ndarray
    box: np.ndarray
    scale: np.ndarray
    age: np.ndarray
    gender: np.ndarray
    race: np.ndarray
    jpeg: np.ndarray
    offsets: np.ndarray
    meta: dict = field(default_factory=dict)
    gender_seen: np.ndarray | None = None
    facial_hair_seen: np.ndarray | None = None
    fringe_seen: np.ndarray | None = None
    expression: np.ndarray | None = None
    _cache: OrderedDict = field(default_factory=OrderedDict, repr=False)

    def __post_init__(self) -> None:
        from .metrics.emotion import EMOTIONS

        n = len(self.ids)
        if self.gender_seen is None:
            self.gender_seen = np.full(n, -1, np.int8)
        if self.facial_hair_seen is None:
            self.facial_hair_seen = np.zeros(n, bool)
        if self.fringe_seen is None:
            self.fringe_seen = np.zeros(n, bool)
        if self.expression is None:
            self.expression = np.concatenate(
                [np.zeros((0, len(EMOTIONS)), np.float32)]
                + [expressions([self.image(i) for i in range(s, min(n, s + CACHE))],
                               list(self.landmarks[s:s + CACHE])) for s in range(0, n, CACHE)])

    def __len__(self) -> int:
        return len(self.ids)

    @cached_property
    def position(self) -> dict[str, int]:
        """``{donor id: its index}``."""
        return {str(donor): i for i, donor in enumerate(self.ids)}

    def image(self, i: int) -> np.ndarray:
        """Donor ``i``'s (S, S, 3) uint8 RGB crop, decoded on first use (the last
        :data:`CACHE` stay decoded)."""
        i = int(i)
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        data = self.jpeg[self.offsets[i] : self.offsets[i + 1]]
        crop = cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        self._cache[i] = crop
        if len(self._cache) > CACHE:
            self._cache.popitem(last=False)
        return crop

    def coverage(self) -> dict[str, dict[str, int]]:
        """Donor counts per estimated race (:data:`RACES`), age bin (:data:`AGE_BINS`) and
        gender; donors without an estimate count as ``unknown``."""
        races = {f"{code} {name}": int((self.race == code).sum())
                 for code, name in enumerate(RACES)}
        ages = {label: int(((self.age >= lo) & (self.age < hi + 1)).sum())
                for label, lo, hi in AGE_BINS}
        genders = {"male": int((self.gender == 0).sum()), "female": int((self.gender == 1).sum())}
        unknown = int((self.race < 0).sum())
        if unknown:
            for table in (races, ages, genders):
                table["unknown"] = unknown
        return {"race": races, "age": ages, "gender": genders}


def save_bank(bank: DonorBank, path: Path) -> None:
    """Write ``bank`` to one ``.npz`` (no pickled objects: strings as unicode arrays, the JPEG
    bytes as one uint8 array with int64 offsets), atomically. The bytes depend only on the bank."""
    arrays = {
        "format": np.array(BANK_FORMAT), "meta": np.array(json.dumps(bank.meta, sort_keys=True)),
        "ids": np.asarray(bank.ids, str), "size": np.array(bank.size, np.int64),
        "landmarks": np.asarray(bank.landmarks, np.float32),
        "source": np.asarray(bank.source, str), "cell": np.asarray(bank.cell, np.int64),
        "box": np.asarray(bank.box, np.float32), "scale": np.asarray(bank.scale, np.float32),
        "age": np.asarray(bank.age, np.float32), "gender": np.asarray(bank.gender, np.int8),
        "race": np.asarray(bank.race, np.int8), "jpeg": np.asarray(bank.jpeg, np.uint8),
        "offsets": np.asarray(bank.offsets, np.int64),
        "gender_seen": np.asarray(bank.gender_seen, np.int8),
        "facial_hair_seen": np.asarray(bank.facial_hair_seen, bool),
        "fringe_seen": np.asarray(bank.fringe_seen, bool),
        "expression": np.asarray(bank.expression, np.float32),
    }
    arrays.update({f"attr_{k}": np.asarray(v, np.float32) for k, v in bank.attributes.items()})
    arrays.update({f"emb_{k}": np.asarray(v, np.float32) for k, v in bank.embeddings.items()})
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write(path, buf.getvalue())


def load_bank(path: Path | None = None) -> DonorBank:
    """The donor bank at ``path``, or the shipped ``models/donors_sfhq.npz`` when None (checked
    against its sha256 in ``models/manifest.json`` by :func:`~fiftyone_faceanon.weights.model_path`,
    which raises ``WeightsError`` on a mismatch). Raises :class:`DonorBankError` with a one-line
    reason for a missing, unreadable or foreign file. :data:`ATTRIBUTES` that a bank saved
    before they existed lacks (``shade``, 2026-12-05; ``lips``, 2026-12-06; ``eyes``,
    2026-12-07) are measured on its crops as it loads (:func:`face_attributes`, about 5 ms per
    donor on a 2-core VM, 1.7 of them the irises), and so are the expression readings of one
    saved before 2026-12-06 (:attr:`DonorBank.expression`)."""
    if path is None:
        path = model_path(BANK_FILE)
    path = Path(path)
    if not path.is_file():
        raise DonorBankError(f"{path}: no such donor bank file")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DonorBankError(f"{path}: not a readable donor bank ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else 'corrupt'})") from None
    if "format" not in data or str(data["format"]) != BANK_FORMAT:
        found = str(data["format"]) if "format" in data else "no format field"
        raise DonorBankError(f"{path}: not a donor bank of format {BANK_FORMAT} ({found})")
    n = len(data["ids"])
    attributes = {k: data[f"attr_{k}"] for k in ATTRIBUTES if f"attr_{k}" in data}
    if not attributes or len(data["offsets"]) != n + 1:
        raise DonorBankError(f"{path}: incomplete donor bank (attributes or offsets missing)")
    bank = DonorBank(
        ids=data["ids"], size=int(data["size"]), landmarks=data["landmarks"],
        attributes=attributes,
        embeddings={k[4:]: v for k, v in data.items() if k.startswith("emb_")},
        source=data["source"], cell=data["cell"], box=data["box"], scale=data["scale"],
        age=data["age"], gender=data["gender"], race=data["race"], jpeg=data["jpeg"],
        offsets=data["offsets"], meta=json.loads(str(data["meta"])),
        gender_seen=data.get("gender_seen"), facial_hair_seen=data.get("facial_hair_seen"),
        fringe_seen=data.get("fringe_seen"),
        expression=data.get("expression"),
    )
    missing = [k for k in ATTRIBUTES if k not in attributes]
    if missing:
        measured = [face_attributes(bank.image(i), bank.landmarks[i]) for i in range(n)]
        attributes.update({k: np.array([m[k] for m in measured], np.float32) for k in missing})
    return bank


# --- building a bank ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DonorSource:
    """An image to take donors from: ``image`` (H, W, 3) uint8 RGB, named ``name`` (the
    bank's ``source``). For a cell of a contact sheet, ``image`` is the cell, ``cell`` its
    (row, col) and ``offset`` the cell's (x, y) in the sheet; a cell must hold exactly one face."""

    name: str
    image: np.ndarray
    cell: tuple[int, int] = (-1, -1)
    offset: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class Filters:
    """Donor filters of :func:`build_bank`, applied in the order of :data:`REJECTIONS`; chosen
    by looking at what they pass and reject on the SFHQ sheets (docs/donors.md)."""

    max_yaw: float = 30.0  #: degrees, :func:`head_pose`
    max_pitch: float = 25.0
    max_roll: float = 30.0
    min_frontal: float = 0.0  #: dlib frontal HOG score, :func:`quality_measures`
    min_eye_open: float = 0.15  #: eye aspect ratio
    min_sclera: float = 0.05  #: whites of the eyes, checked where ``glasses >= 0.5``
    min_chroma_std: float = 0.012  #: ``cb_std + cr_std`` (grayscale, sepia)
    max_occlusion: float = 0.12
    min_texture: float = 0.17  #: painted or doll-like smooth skin
    min_sharpness: float = 12.0  #: relative sharpness, :func:`quality_measures`
    max_similarity: float = 0.93  #: FaceNet-CASIA cosine above which two donors are one image


#: Rejection reasons, in the order the filters run.
REJECTIONS = ("outside", "several_faces", "pose", "eyes_hidden", "grayscale", "occluded",
              "painting", "blurry", "reviewed", "duplicate")


def rejection(
    region_inside: bool, faces_in_cell: int, attributes: dict[str, float],
    quality: dict[str, float], filters: Filters,
) -> str | None:
    """The first of :data:`REJECTIONS` (but ``duplicate``, decided over the whole bank) that a
    candidate fails, or None. ``region_inside``: the face region (68 landmarks and forehead)
    lies inside the source cell or image (no caption text, neighbouring cell or cut-off face);
    ``faces_in_cell``: faces found in the grid cell at least half as tall as its largest (0
    when not a grid)."""
    a, q, f = attributes, quality, filters
    checks = {
        "outside": not region_inside,
        "several_faces": faces_in_cell > 1,
        "pose": (abs(a["yaw"]) > f.max_yaw or abs(a["pitch"]) > f.max_pitch
                 or abs(a["roll"]) > f.max_roll or q["frontal"] < f.min_frontal),
        "eyes_hidden": (a["eye_open"] < f.min_eye_open
                        or (a["glasses"] >= 0.5 and q["sclera"] < f.min_sclera)),
        "grayscale": a["cb_std"] + a["cr_std"] < f.min_chroma_std,
        "occluded": q["occlusion"] > f.max_occlusion,
        "painting": q["texture"] < f.min_texture,
        "blurry": q["sharpness"] < f.min_sharpness,
    }
    return next((reason for reason, failed in checks.items() if failed), None)


def _encode_jpeg(crop: np.ndarray, quality: int) -> bytes:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return data.tobytes()


def _decode_jpeg(data: bytes) -> np.ndarray:
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR),
                        cv2.COLOR_BGR2RGB)


def read_reviewed(lines: Iterable[str]) -> dict[str, str]:
    """``{id: why}`` for :func:`build_bank`'s ``reviewed`` from lines of text, one donor id per
    line with an optional reason after it (``ID  REASON``); blank lines and lines starting with
    ``#`` are skipped (ids hold ``#``: ``photo.jpg#0``)."""
    reviewed = {}
    for line in lines:
        fields = line.split(maxsplit=1)
        if fields and not fields[0].startswith("#"):
            reviewed[fields[0]] = fields[1].strip() if len(fields) > 1 else "rejected by a person"
    return reviewed


#: How a gender file (:func:`read_genders`) writes what a person saw: male, female.
GENDERS = ("M", "F")


def read_genders(lines: Iterable[str]) -> dict[str, int]:
    """``{id: 0 male, 1 female}`` for :func:`see_genders` from lines of text, one donor id per
    line and then ``M`` or ``F`` (:data:`GENDERS`); blank lines and lines starting with ``#``
    are skipped. Raises ``ValueError`` naming the first line that is neither."""
    genders = {}
    for number, line in enumerate(lines, 1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) != 2 or fields[1] not in GENDERS:
            raise ValueError(f"line {number}: expected `ID M` or `ID F`, got {line.strip()!r}")
        genders[fields[0]] = GENDERS.index(fields[1])
    return genders


def see_genders(bank: DonorBank, genders: Mapping[str, int]) -> list[str]:
    """Record in ``bank.gender_seen`` the gender a person saw (``{id: 0 male, 1 female}``,
    :func:`read_genders`), in place; returns the ids of ``genders`` the bank does not hold."""
    index = bank.position
    for donor, gender in genders.items():
        if donor in index:
            bank.gender_seen[index[donor]] = gender
    bank.meta["gender_seen"] = int((bank.gender_seen >= 0).sum())
    return sorted(set(genders) - set(index))


def see_facial_hair(bank: DonorBank, ids: Iterable[str]) -> list[str]:
    """Record in ``bank.facial_hair_seen`` the donors on which a person saw facial hair (their
    ids, e.g. the keys of :func:`read_reviewed` of a list file), in place; returns the ids the
    bank does not hold."""
    return _see(bank, "facial_hair_seen", ids)


def see_fringe(bank: DonorBank, ids: Iterable[str]) -> list[str]:
    """Record in ``bank.fringe_seen`` the donors on which a person saw hair, a hat or a
    headscarf inside the face region above the eyes (their ids, e.g. the keys of
    :func:`read_reviewed` of a list file), in place; returns the ids the bank does not hold."""
    return _see(bank, "fringe_seen", ids)


def _see(bank: DonorBank, name: str, ids: Iterable[str]) -> list[str]:
    """Set the (N,) bool ``bank.<name>`` on the donors ``ids`` and count them in
    ``bank.meta[name]``; returns the ids the bank does not hold."""
    index = bank.position
    ids = set(ids)
    seen = getattr(bank, name)
    seen[[index[d] for d in ids if d in index]] = True
    bank.meta[name] = int(seen.sum())
    return sorted(ids - set(index))


def build_bank(
    items: Iterable[DonorSource],
    size: int = BANK_SIZE,
    context: float = BANK_CONTEXT,
    filters: Filters = Filters(),
    quality: int = JPEG_QUALITY,
    device: str = "auto",
    min_face_size: int = 40,
    on_candidate: Callable[[str, str | None, np.ndarray], None] | None = None,
    reviewed: Mapping[str, str] | None = None,
) -> tuple[DonorBank, dict[str, int]]:
    """Cut, filter and align the donors of ``items``; returns the bank and the number of
    candidates each filter rejected (:data:`REJECTIONS`; a candidate counts for the first
    filter it fails).

    Every face MTCNN finds (``faces.find_faces``, 68 dlib landmarks) is aligned into an
    (``size``, ``size``) crop (``faces.crop_transform`` with ``context``), stored as JPEG of
    ``quality``, decoded again, and measured on what was decoded (:func:`face_attributes`,
    :func:`quality_measures`), so the bank's attributes describe the crops it holds. The
    candidates that pass :func:`rejection` are embedded by every judge ``load_judges`` has
    (FaceNet-CASIA, dlib), then de-duplicated: a donor whose FaceNet-CASIA cosine to one kept
    before it exceeds ``filters.max_similarity`` is the same picture (contact sheets repeat
    images) and is dropped, the least upsampled copy kept. ``on_candidate(id, reason, crop)``
    sees each candidate's final decision (``reason`` None when kept). ``reviewed``: candidate
    ids that a person looked at and rejected (``{id: why}``, e.g. a tongue out, which no filter
    measures), rejected as ``reviewed`` when they pass the filters. Ages, genders and races
    are left unknown (:func:`estimate_labels` adds them).
    """
    from .faces import crop_face, find_faces, forehead_points
    from .metrics.identity import load_judges

    kept: list[dict] = []
    counts = dict.fromkeys(REJECTIONS, 0)

    def decide(cid: str, reason: str | None, crop: np.ndarray) -> None:
        if reason:
            counts[reason] += 1
        if on_candidate is not None:
            on_candidate(cid, reason, crop)

    for item in items:
        faces = find_faces(item.image, crop_size=size, min_face_size=min_face_size,
                           device=device, context=context)
        h, w = item.image.shape[:2]
        grid = item.cell[0] >= 0
        heights = [f.box[3] - f.box[1] for f in faces]
        in_cell = sum(hh >= 0.5 * max(heights) for hh in heights) if grid else 0
        for k, face in enumerate(faces):
            cid = f"{item.name}#r{item.cell[0]}c{item.cell[1]}" if grid else f"{item.name}#{k}"
            if len(faces) > 1 and grid:
                cid += f"f{k}"
            outline = np.concatenate([face.landmarks, forehead_points(face.landmarks)])
            inside = bool((outline >= 0).all() and (outline[:, 0] <= w - 1).all()
                          and (outline[:, 1] <= h - 1).all())
            data = _encode_jpeg(crop_face(item.image, face.crop), quality)
            crop = _decode_jpeg(data)
            landmarks = face.crop.to_crop(face.landmarks)
            attributes = face_attributes(crop, landmarks)
            reason = rejection(inside, in_cell, attributes,
                               quality_measures(crop, landmarks), filters)
            if reason is None and cid in (reviewed or {}):
                reason = "reviewed"
            if reason:
                decide(cid, reason, crop)
                continue
            kept.append({
                "id": cid, "jpeg": data, "landmarks": landmarks, "attributes": attributes,
                "source": item.name, "cell": item.cell,
                "box": np.asarray(face.box) + np.tile(item.offset, 2),
                "crop_box": np.r_[face.crop.to_crop(face.box[:2][None])[0],
                                  face.crop.to_crop(face.box[2:][None])[0]],
                "score": face.score, "scale": face.crop.scale,
            })

    judges, _ = load_judges(["facenet_casia", "dlib"], device=device)
    embeddings = {name: np.zeros((len(kept), judge.dim), np.float32)
                  for name, judge in judges.items()}
    for start in range(0, len(kept), 32):
        batch = kept[start : start + 32]
        images = [(_decode_jpeg(d["jpeg"]), [_crop_face_record(d, size)]) for d in batch]
        for name, judge in judges.items():
            rows = judge.embed_many(images)
            embeddings[name][start : start + len(batch)] = np.concatenate(rows)

    order = np.argsort([d["scale"] for d in kept], kind="stable")
    reference = embeddings.get("facenet_casia")
    keep = np.zeros(len(kept), bool)
    for i in order:
        if reference is not None and keep.any() and \
                float((reference[keep] @ reference[i]).max()) > filters.max_similarity:
            decide(kept[i]["id"], "duplicate", _decode_jpeg(kept[i]["jpeg"]))
            continue
        keep[i] = True
    index = np.flatnonzero(keep)
    for i in index:
        decide(kept[i]["id"], None, _decode_jpeg(kept[i]["jpeg"]))
    donors = [kept[i] for i in index]
    blobs = [np.frombuffer(d["jpeg"], np.uint8) for d in donors]
    n = len(donors)
    bank = DonorBank(
        ids=np.array([d["id"] for d in donors], str).reshape(n),
        size=int(size),
        landmarks=np.array([d["landmarks"] for d in donors], np.float32).reshape(n, 68, 2),
        attributes={k: np.array([d["attributes"][k] for d in donors], np.float32)
                    for k in ATTRIBUTES},
        embeddings={name: e[index] for name, e in embeddings.items()},
        source=np.array([d["source"] for d in donors], str).reshape(n),
        cell=np.array([d["cell"] for d in donors], np.int64).reshape(n, 2),
        box=np.array([d["box"] for d in donors], np.float32).reshape(n, 4),
        scale=np.array([d["scale"] for d in donors], np.float32),
        age=np.full(n, np.nan, np.float32), gender=np.full(n, -1, np.int8),
        race=np.full(n, -1, np.int8),
        jpeg=np.concatenate(blobs) if blobs else np.zeros(0, np.uint8),
        offsets=np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64),
        meta={"size": int(size), "context": float(context), "jpeg_quality": int(quality),
              "filters": asdict(filters), "rejections": counts,
              "judges": sorted(judges)},
    )
    return bank, counts


def _crop_face_record(donor: dict, size: int):
    """A :class:`~fiftyone_faceanon.faces.Face` of a kept candidate in its own (size, size)
    crop, for the judges (FaceNet crops the box, dlib aligns the landmarks)."""
    from .faces import Face, crop_transform

    landmarks = np.asarray(donor["landmarks"], np.float64)
    return Face(np.asarray(donor["crop_box"], float), float(donor["score"]), landmarks,
                crop_transform(landmarks, size))


def estimate_labels(bank: DonorBank, reference: np.ndarray, labels: np.ndarray,
                    k: int = KNN_K) -> None:
    """Fill ``bank``'s age, gender and race with :func:`knn_labels` of its FaceNet-CASIA
    embeddings against a labelled reference (:func:`utkface_reference`), in place."""
    bank.age, bank.gender, bank.race = knn_labels(bank.embeddings["facenet_casia"], reference,
                                                  labels, k)
    bank.meta["labels"] = (f"k-NN (k={k}, similarity-weighted) on FaceNet-CASIA embeddings of "
                           f"{len(reference)} labelled UTKFace faces; estimates, not ground truth")


def face_thumb(crop: np.ndarray, size: int) -> np.ndarray:
    """The middle 70% of an (S, S, 3) donor crop (the face and forehead), resized to
    (``size``, ``size``, 3)."""
    s = crop.shape[0]
    m = int(round(0.15 * s))
    return cv2.resize(crop[m : s - m, m : s - m], (size, size), interpolation=cv2.INTER_AREA)


def contact_sheet(
    thumbs: list[np.ndarray], cols: int, labels: list[str] | None = None
) -> np.ndarray:
    """(t, t, 3) thumbnails in a grid of ``cols`` columns, in reading order, each captioned with
    its label when given: (rows * t, cols * t, 3) uint8."""
    t = thumbs[0].shape[0] if thumbs else 8
    rows = max((len(thumbs) + cols - 1) // cols, 1)
    out = np.zeros((rows * t, cols * t, 3), np.uint8)
    for k, thumb in enumerate(thumbs):
        r, c = divmod(k, cols)
        thumb = thumb.copy()
        if labels:
            for colour, width in (((0, 0, 0), 3), ((255, 255, 0), 1)):
                cv2.putText(thumb, labels[k], (2, 11), cv2.FONT_HERSHEY_SIMPLEX, 0.33, colour,
                            width)
        out[r * t : (r + 1) * t, c * t : (c + 1) * t] = thumb
    return out


def sheet_cells(
    sheet: np.ndarray, dark: int = 20, min_run: int = 40, inset: int = 3
) -> list[tuple[int, int, tuple[int, int, int, int]]]:
    """The photo cells of a contact sheet: (H, W, 3) uint8 RGB -> ``(row, col, (x0, y0, x1,
    y1))`` per cell, in reading order.

    The photos are separated by near-black gaps (any channel at most ``dark``) holding the
    captions: a column (row) of the sheet is part of a photo when its share of lit pixels exceeds
    15% of the 95th percentile of that share over all columns (rows); runs of at least
    ``min_run`` such columns (rows) are the grid's columns (rows), each cell shrunk by ``inset``
    px to drop the photo's border line. Cells whose pixels are all dark are skipped.
    """
    lit = sheet.max(2) > dark

    def runs(share: np.ndarray) -> list[tuple[int, int]]:
        on = np.concatenate([[0], (share > 0.15 * np.percentile(share, 95)).astype(np.int8), [0]])
        edges = np.diff(on)
        return [(int(a), int(b)) for a, b in zip(np.flatnonzero(edges == 1),
                                                 np.flatnonzero(edges == -1)) if b - a >= min_run]

    cells = []
    for r, (y0, y1) in enumerate(runs(lit.mean(1))):
        for c, (x0, x1) in enumerate(runs(lit.mean(0))):
            box = (x0 + inset, y0 + inset, x1 - inset, y1 - inset)
            if lit[box[1] : box[3], box[0] : box[2]].any():
                cells.append((r, c, box))
    return cells
