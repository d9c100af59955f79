"""Verification: every replaced face is scored against its original by every shipped judge.

A face is *matched* when any judge's cosine similarity ``cos(e_o, e_a)`` between the original's
and the anonymized face's embeddings is at or above that judge's FAR 1e-3 threshold
(``models/manifest.json``, calibrated on LFW by ``scripts/calibrate_judges.py``). The pipeline
redoes a matched face (next donor, stronger geometry) and, when it is still matched, handles it
fail-closed (:func:`fail_closed`).

The anonymized image is embedded at the original face's place (its detector box and 68
landmarks) and where a re-identifier finds the face in it (the detector run again on it, dlib's
landmarks found there: :func:`~.metrics.detection.found_again`), as the metrics suite scores
re-identification (docs/metrics.md), so a verified face is one the suite's ``reid_far_<judge>``
and ``reid_far_found_<judge>`` do not count.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from . import faces as F
from .faces import Face

#: The judges every verification uses (both ship with the package), cheapest first (dlib's
#: ResNet about 6-8 ms per face on one CPU thread, FaceNet-CASIA 23-41): a planned face's try
#: (:meth:`~.pipeline.Pipeline.plan_identity`) is judged in this order and ends at the first
#: judge that matches a view; on video tracks that fail it is mostly dlib.
VERIFY_JUDGES = ("dlib", "facenet_casia")
THRESHOLD = "far_1e-3"
#: Verification passes a face judged before it is encoded only this far below each judge's
#: threshold: a JPEG moves a similarity by a few hundredths (on LFW 102 of 565 verified faces sat
#: within 0.055 under FaceNet-CASIA's threshold).
MARGIN = {"facenet_casia": 0.03, "dlib": 0.005, "facenet_vggface2": 0.03}
#: ... and a face judged as it is written (:func:`~.images.as_written`) this far below: FaceNet
#: crops a face by its detector box (facenet-pytorch's convention), and a re-identifier's box is
#: never exactly ours. Moving the box by one pixel (six ways) moved FaceNet-CASIA's similarity by
#: up to 0.03 for half the verified LFW DevTest 500 faces, and up to 0.12; judged at the limit
#: itself, 32 of 555 verified faces (seed 0) were matched with the box moved by a pixel, each
#: within 0.039 under the limit with its own box. dlib aligns its chips on the landmarks, and
#: the same moves did not change its similarity at all (docs/benchmarks.md, "A verified face is
#: one crop away from a match").
CROP_MARGIN = {"facenet_casia": 0.04, "facenet_vggface2": 0.04}
#: A face is judged again where a re-identifier finds it in the output
#: (:meth:`~.pipeline.Pipeline._judge`) by a judge whose similarity at its original place is
#: this close to its line (or closer): moving its crop to the box and landmarks found in the
#: output moved dlib's similarity by at most 0.030 and FaceNet-CASIA's by at most 0.132 (99th
#: percentile 0.075) on the 551 verified LFW DevTest 500 faces of seed 0 (docs/benchmarks.md,
#: "Judged where a re-identifier finds the face").
FOUND_BAND = {"dlib": 0.04, "facenet_casia": 0.15, "facenet_vggface2": 0.15}
ON_FAIL = ("blur", "mask", "error")
#: Cells per side of the fail-closed blur's mosaic (:func:`fail_closed`).
MOSAIC = 6
#: Faces whose detector box is smaller than this (pixels, the shorter side) are not judged: the
#: judges were calibrated on faces of 60 px and more, and on a face of a dozen pixels their
#: similarity measures the surroundings (a 12 px face blurred away still scores 0.8 with
#: FaceNet-CASIA).
MIN_JUDGED_SIZE = 32
#: ... nor faces with less than this share of their detector box inside the image: the judges'
#: crops reach beyond the box, and where the frame cuts them both crops hold the same padding
#: (a face leaving a video frame). On a pan over the group photo dlib scored 0.937 a donor
#: FaceNet-CASIA scores -0.04 on a face with 76% of its box in view; MTCNN's box of a face that
#: fills the frame's height has 87-93% in view and is judged.
MIN_INSIDE = 0.85


def large_enough(face: Face) -> bool:
    """Whether ``face``'s box is at least :data:`MIN_JUDGED_SIZE` px on its shorter side."""
    return F.box_side(face.box) >= MIN_JUDGED_SIZE


def judgeable(face: Face, shape: tuple[int, ...]) -> bool:
    """Whether the judges can score ``face`` in an image of ``shape`` (H, W, ...): it is
    :func:`large_enough` and :data:`MIN_INSIDE` of its box is in view."""
    return large_enough(face) and F.in_view(face.box, shape) >= MIN_INSIDE


class VerificationError(RuntimeError):
    """A face is still matched after every try and ``on_fail`` is ``"error"``, or the judges
    cannot be loaded."""


def judged_view(face: Face, size: int, margin: float = 0.25) -> np.ndarray:
    """(S, S) float32 mask, in the face's crop, of the ellipse inscribed in its detector box grown
    by ``margin`` of its size on each side: about what the judges' crops hold (FaceNet's crop
    grows the box by 32/128). A face still matched after every try is matched there by its hair
    and head outline, so the fail-closed replacement covers it."""
    corners = face.crop.to_crop(np.array([face.box[:2], face.box[2:]], np.float64))
    (x0, y0), (x1, y1) = corners.min(0), corners.max(0)
    w, h = (x1 - x0) * (1 + 2 * margin), (y1 - y0) * (1 + 2 * margin)
    mask = np.zeros((size, size), np.float32)
    cv2.ellipse(mask, (int(round((x0 + x1) / 2)), int(round((y0 + y1) / 2))),
                (int(round(w / 2)), int(round(h / 2))), 0, 0, 360, 1.0, -1)
    return mask


def masked(image: np.ndarray, face: Face, feather: float = 0.04) -> np.ndarray:
    """The (H, W, 3) uint8 image with ``face``'s region and what the judges see around it
    (:func:`judged_view`) filled by its mean colour (:func:`fail_closed` ``mask``): the face
    taken away, its surroundings left."""
    crop = F.crop_face(image, face.crop)
    size = crop.shape[0]
    region = np.maximum(F.face_region(face.crop.to_crop(face.landmarks), size),
                        judged_view(face, size))
    return F.paste_faces(image, [face], [fail_closed(crop, region, "mask")],
                         [F.feathered_mask(region, feather)])


@dataclass
class Verifier:
    """The judges and their thresholds, loaded once: ``limits``, the manifest's FAR 1e-3 ones;
    ``written``, those less :data:`CROP_MARGIN`, for faces judged as they are written;
    ``thresholds``, those less :data:`MARGIN`, for faces judged before they are encoded.
    ``thresholds`` given overrides all three (``{judge: cosine}``), e.g. to test the
    fail-closed path."""

    device: str = "auto"
    thresholds: dict[str, float] | None = None

    def __post_init__(self):
        from .metrics.identity import judge_thresholds, load_judges

        self.judges, unavailable = load_judges(VERIFY_JUDGES, self.device)
        if unavailable:
            raise VerificationError(f"verification needs every judge; unavailable: {unavailable}")
        limits, given = judge_thresholds(), self.thresholds or {}
        self.limits = {j: given.get(j, limits[j][THRESHOLD]) for j in self.judges}
        self.written = {j: given.get(j, limits[j][THRESHOLD] - CROP_MARGIN.get(j, 0.0))
                        for j in self.judges}
        self.thresholds = {j: given.get(j, limits[j][THRESHOLD] - MARGIN[j])
                           for j in self.judges}
        #: "close" for choosing donors: the looser accuracy-optimal threshold
        self.close = {j: min(limits[j]["accuracy"], self.thresholds[j]) for j in self.judges}

    def embed_many(self, items: list[tuple[np.ndarray, list[Face]]],
                   judges: tuple[str, ...] | None = None, fast: bool = False
                   ) -> dict[str, np.ndarray]:
        """``{judge: (N, D)}`` unit embeddings of the faces of several images (``(image,
        faces)`` pairs), in order, each judge's network (of ``judges``; default all) run once
        over all of them; ``fast``: in bfloat16 where a judge has that fast path, for what no
        verification depends on (the donor choice of faces that are not verified)."""
        return {j: np.concatenate([np.zeros((0, self.judges[j].dim), np.float32),
                                   *self.judges[j].embed_many(items, fast)])
                for j in judges or self.judges}

    def embed_each(self, items: list[tuple[np.ndarray, list[Face]]],
                   judges: tuple[str, ...] | None = None, fast: bool = False
                   ) -> list[dict[str, np.ndarray]]:
        """:meth:`embed_many`, split back into ``{judge: (F, D)}`` per ``(image, faces)``."""
        return split_rows(self.embed_many(items, judges, fast),
                          [len(faces) for _, faces in items])

    def floor(self, items: list[tuple[np.ndarray, Face]], original: dict[str, np.ndarray],
              feather: float = 0.04) -> dict[str, np.ndarray]:
        """``{judge: (N,)}`` similarity of each original face (``original``: its embeddings,
        ``{judge: (N, D)}``) to its own image with the face masked out (:func:`masked`): what a
        judge gives a face that is not there. Where it reaches the judge's threshold (a small,
        dark, blurred or turned face whose embedding is the judge's generic one, or no face at
        all), that judge cannot tell this face from none."""
        return self.score(original, [(masked(image, face, feather), [face])
                                     for image, face in items])

    def leaks(self, original: np.ndarray, anonymized: np.ndarray, faces: list[Face],
              thresholds: dict[str, float]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Which ``faces`` of an original (H, W, 3) image its anonymized copy still gives away:
        (F,) bool, a judge at or above ``thresholds[judge]`` at the original face's place, not
        counting a judge whose :meth:`floor` reaches its verification threshold for that face;
        and each judge's (F,) similarity."""
        items = [(original, [f]) for f in faces]
        before = self.embed_many(items)
        sims = self.similarities(before, self.embed_many([(anonymized, [f]) for f in faces]))
        hits = np.any([sims[j] >= thresholds[j] for j in sims], axis=0)
        if hits.any():
            floor = self.floor([(original, f) for f in faces], before)
            hits = np.any([(sims[j] >= thresholds[j]) & (floor[j] < self.thresholds[j])
                           for j in sims], axis=0)
        return hits, sims

    def too_close(self, original: dict[str, np.ndarray], others: dict[str, np.ndarray]
                  ) -> np.ndarray:
        """(F, M) bool: which of M embeddings (e.g. a donor bank's) any judge finds close to
        each of F original faces: at or above its accuracy-optimal threshold, which is looser
        than the FAR 1e-3 one a verified face must stay under."""
        hit = None
        for j, e in original.items():
            h = e @ others[j].T >= self.close[j]
            hit = h if hit is None else hit | h
        return hit

    def score(self, original: dict[str, np.ndarray], items: list[tuple[np.ndarray, list[Face]]],
              margin: dict[str, float] | None = None) -> dict[str, np.ndarray]:
        """``{judge: (N,)}`` similarity of the N faces of ``items`` (``(image, faces)`` pairs)
        to their originals (``original``: ``{judge: (N, D)}`` embeddings, by the judges to score
        with): :meth:`similarities` of :meth:`embed_many`, for less. A judge with a fast path
        (``Judge.fast``: FaceNet-CASIA on a CPU with native bfloat16) embeds the faces in
        bfloat16, then again at full precision those within
        :data:`~.metrics.identity.BF16_ERROR` of a line it decides at (:meth:`screen`: from the
        lowest of its threshold less ``margin`` and its :attr:`written` one to its :attr:`limits`
        one; :meth:`matched`, a floor). Every decision is then
        the full-precision one; a similarity outside that band may differ from it by up to
        BF16_ERROR (one above it is matched at every line: 1 in 7 of the tries' faces on LFW,
        which no longer cost a second embedding)."""
        return self.score_embedded(original, items, margin)[0]

    def score_embedded(self, original: dict[str, np.ndarray],
                       items: list[tuple[np.ndarray, list[Face]]],
                       margin: dict[str, float] | None = None
                       ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """:meth:`score`, and each judge's ``{judge: (N, D)}`` full-precision embeddings of the
        faces it scored, NaN rows for those it embedded in bfloat16 only."""
        margin = margin or {}
        sims, embedded = {}, {}
        for j in original:
            judge = self.judges[j]
            crops = [c for image, faces in items for c in judge.crops(image, faces)]
            embedded[j] = judge.embed_crops(crops, judge.fast)
            sims[j] = np.einsum("fd,fd->f", original[j], embedded[j])
            if judge.fast:
                embedded[j][:] = np.nan
                low, high = self.screen(j, margin)
                again = np.flatnonzero((sims[j] >= low) & (sims[j] < high))
                if len(again):
                    embedded[j][again] = judge.embed_crops([crops[k] for k in again])
                    sims[j][again] = np.einsum("fd,fd->f", original[j][again],
                                               embedded[j][again])
        return sims, embedded

    def screen(self, judge: str, margin: dict[str, float] | None = None) -> tuple[float, float]:
        """The band of similarities that :meth:`score` embeds again at full precision for
        ``judge``: within :data:`~.metrics.identity.BF16_ERROR` of its lines, its threshold
        less ``margin``, its :attr:`written` one and its :attr:`limits` one."""
        from .metrics.identity import BF16_ERROR

        low = self.line(False, margin)[judge]
        return (min(low, self.written[judge]) - BF16_ERROR,
                max(low, self.limits[judge]) + BF16_ERROR)

    def similarities(self, original: dict[str, np.ndarray], anonymized: dict[str, np.ndarray]
                     ) -> dict[str, np.ndarray]:
        """``{judge: (F,)}`` row-wise cosine of the original and anonymized faces."""
        return {j: np.einsum("fd,fd->f", original[j], anonymized[j]) for j in original}

    def line(self, written: bool, margin: dict[str, float] | None = None) -> dict[str, float]:
        """Each judge's line a face is matched at: its :attr:`written` one for faces judged
        ``written`` (as the file gives them back), else its :attr:`thresholds` one, less
        ``margin[judge]`` when given."""
        base, margin = (self.written if written else self.thresholds), margin or {}
        return {j: t - margin.get(j, 0.0) for j, t in base.items()}

    def near(self, similarity: dict[str, np.ndarray], written: bool = False,
             margin: dict[str, float] | None = None) -> dict[str, np.ndarray]:
        """``{judge: (F,) bool}``: which similarities are within :data:`FOUND_BAND` under the
        :meth:`line` :meth:`matched` decides at."""
        base = self.line(written, margin)
        return {j: s >= base[j] - FOUND_BAND[j] for j, s in similarity.items()}

    def matched(self, similarity: dict[str, np.ndarray],
                floor: dict[str, np.ndarray] | None = None,
                margin: dict[str, float] | None = None, written: bool = False) -> np.ndarray:
        """(F,) bool: any judge at or above its :meth:`line` for faces judged ``written`` or not
        (less ``margin[judge]`` when given).
        ``floor``: each judge's similarity of each original to itself with the face masked out
        (:meth:`~.pipeline.Pipeline.plan_identity`); a judge that matches the masked face as
        well cannot tell this face from none, and its match does not count."""
        base = self.line(written, margin)
        hits = [similarity[j] >= base[j] for j in similarity]
        if floor is not None:
            hits = [h & ~(floor[j] >= self.thresholds[j]) for h, j in zip(hits, similarity)]
        return np.any(hits, axis=0)


def split_rows(rows: dict[str, np.ndarray], counts: list[int]) -> list[dict[str, np.ndarray]]:
    """``{judge: (N, ...)}`` rows of several images' faces, in order, split back into one
    ``{judge: (n_k, ...)}`` per image of ``counts[k]`` faces."""
    bounds = np.cumsum(counts)[:-1]
    parts = {j: np.split(r, bounds) for j, r in rows.items()}
    return [{j: p[k] for j, p in parts.items()} for k in range(len(counts))]


def fail_closed(crop: np.ndarray, region: np.ndarray, how: str) -> np.ndarray:
    """The fail-closed replacement of an (S, S, 3) uint8 crop over its (S, S) region: ``blur``
    averages the face away (a 6 x 6 mosaic of the crop blurred with sigma S/12, so no judge has
    features left to match: a plain Gaussian blur still lets dlib match a fifth of faces),
    ``mask`` fills it with the region's mean colour. Returns (S, S, 3) uint8."""
    size = crop.shape[0]
    if how == "mask":
        sel = region > 0
        colour = crop[sel].mean(0) if sel.any() else np.zeros(3)
        return np.broadcast_to(np.rint(colour).astype(np.uint8), crop.shape).copy()
    if how != "blur":
        raise ValueError(f"unknown fail-closed action {how!r}; choose from {ON_FAIL}")
    mosaic = cv2.resize(crop, (MOSAIC, MOSAIC), interpolation=cv2.INTER_AREA).astype(np.float32)
    along = _blurred_blocks(size)
    blurred = (along @ mosaic.transpose(2, 0, 1) @ along.T).transpose(1, 2, 0)
    return np.clip(np.rint(blurred), 0, 255).astype(np.uint8)


def _blurred_blocks(size: int) -> np.ndarray:
    """(size, MOSAIC) float32: column i is the indicator of the mosaic's i-th block along one
    side (as ``cv2.resize`` with ``INTER_NEAREST`` spreads MOSAIC cells over ``size`` pixels),
    blurred with OpenCV's Gaussian of sigma size/12 (reflect-101 border). The mosaic is constant
    on blocks, so its 2-D blur is ``B M B^T`` per channel: the same as ``cv2.GaussianBlur`` of the
    upscaled mosaic, in O(S^2) instead of O(S^3) (170 ms for S = 512 on one thread)."""
    cells = cv2.resize(np.arange(MOSAIC, dtype=np.uint8)[None], (size, 1),
                       interpolation=cv2.INTER_NEAREST)[0]
    blocks = (cells[:, None] == np.arange(MOSAIC)).astype(np.float32)
    sigma = size / 12
    kernel = cv2.getGaussianKernel(int(round(sigma * 8 + 1)) | 1, sigma, cv2.CV_32F)
    return cv2.sepFilter2D(blocks, -1, np.ones(1, np.float32), kernel,
                           borderType=cv2.BORDER_REFLECT_101)
