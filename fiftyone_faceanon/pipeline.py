"""The core API: one image in, one anonymized image out.

``faces`` finds and crops every face; ``geometry`` moves its landmarks' identity component
towards the donor's (or the mean shape's) while keeping pose and expression; a backend from
``anonymizers`` renders a face onto those landmarks; ``photometric`` restores the original's
lighting and skin tone; the crop is pasted back through a feathered mask that leaves detected
occluders (hair, glasses frames, objects) as they were; ``verify`` scores every replaced face
against its original with every judge and redoes it, then fails closed, while it still matches.
The CLI, the FiftyOne operators and the pre-commit hook all call :class:`Pipeline`.
"""

from __future__ import annotations

import json
import time
import zlib
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from . import faces as F
from .anonymizers import DEFAULT_BACKEND, create_backend
from .photometric import PhotometricSettings, postprocess
from .verify import ON_FAIL, VerificationError, Verifier, fail_closed

#: Default identity-neutral geometry strength (``--geometry``), chosen by measurement
#: (docs/benchmarks.md, "Geometry strength").
DEFAULT_GEOMETRY = 0.5
#: Each verification retry adds this much geometry strength (capped at 1).
GEOMETRY_STEP = 0.25
#: Faces whose detector box is smaller than this (pixels, the shorter side) are not verified:
#: the judges were calibrated on faces of 60 px and more, and on a face of a dozen pixels their
#: similarity measures the surroundings (a 12 px face blurred away still scores 0.8 with
#: FaceNet-CASIA). Such faces are replaced and recorded as ``too_small``.
MIN_VERIFY_SIZE = 32


@dataclass(frozen=True)
class Settings:
    """Everything that decides an output; two runs with equal settings give equal bytes."""

    backend: str = DEFAULT_BACKEND
    seed: int = 0
    photometric: PhotometricSettings = field(default_factory=PhotometricSettings)
    detector: str = "mtcnn"
    threshold: float = 0.9
    min_face_size: int = 20
    device: str = "auto"
    feather: float = 0.04
    #: identity-neutral geometry strength, 0 (the paper: the original's landmarks) to 1
    geometry: float = DEFAULT_GEOMETRY
    #: donor bank file for donor backends; None: the shipped one
    donors: str | None = None
    #: score every replaced face with the judges, retry, fail closed
    verify: bool = True
    #: tries per face before ``on_fail`` (on LFW, 5 instead of 3 leaves 30% fewer faces to it)
    tries: int = 5
    #: ``blur``, ``mask`` or ``error`` (no output) for a face still matched after every try
    on_fail: str = "blur"
    #: keep the original's pixels where an occluder crosses the face
    occluders: bool = True
    #: judge thresholds overriding the manifest's FAR 1e-3 ones (``{judge: cosine}``)
    verify_thresholds: tuple[tuple[str, float], ...] = ()

    def as_dict(self) -> dict:
        """The settings as JSON would give them back (tuples as lists), for sidecars and resume."""
        return json.loads(json.dumps(asdict(self)))


@dataclass
class FaceRecord:
    """What became of one face. ``original``: the detected :class:`~.faces.Face`; ``anonymized``:
    the same face at its new geometry (landmarks in image pixels, box moved with them);
    ``similarity``: each judge's final cosine to the original (empty without verification);
    ``status``: ``replaced`` (not verified), ``too_small`` (below ``MIN_VERIFY_SIZE``),
    ``verified``, or ``fail_closed:<blur|mask>``."""

    original: F.Face
    anonymized: F.Face
    donor: str | None
    geometry: float
    tries: int
    similarity: dict[str, float]
    status: str
    donor_index: int | None = None

    def public(self) -> dict:
        """What may be released: the anonymized geometry and how it was made."""
        return {
            "box": [round(float(v), 2) for v in self.anonymized.box],
            "landmarks": np.round(self.anonymized.landmarks, 2).tolist(),
            "donor": self.donor,
            "geometry": self.geometry,
            "tries": self.tries,
            "status": self.status,
        }

    def private(self) -> dict:
        """Everything, the original's detection and landmarks included: never released."""
        return {**self.original.as_dict(), "anonymized": self.public(),
                "similarity": {j: round(float(s), 5) for j, s in self.similarity.items()}}


@dataclass
class Result:
    """``image`` (H, W, 3) uint8, the faces found in the original, one :class:`FaceRecord` per
    face, seconds per stage."""

    image: np.ndarray
    faces: list[F.Face]
    records: list[FaceRecord]
    timings: dict[str, float]

    @property
    def unverified(self) -> list[FaceRecord]:
        """Faces that failed verification and were handled fail-closed."""
        return [r for r in self.records if r.status.startswith("fail_closed")]


def face_rng(seed: int, key: str, index: int) -> np.random.Generator:
    """The generator for face ``index`` of the image named ``key``: the same for the same seed
    whatever the order or the worker the image is processed in."""
    return np.random.default_rng([seed, zlib.crc32(key.encode()), index])


def moved_box(box: np.ndarray, before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """A detector box (4,) carried along by the similarity that takes landmarks ``before``
    (68, 2) onto ``after``: what a detector would report on the re-shaped face."""
    from .geometry import fit_similarity

    sim = fit_similarity(before, after)
    corners = sim.apply(np.array([[box[0], box[1]], [box[2], box[3]]], np.float64))
    return np.concatenate([corners.min(0), corners.max(0)])


def judged_view(face: F.Face, size: int, margin: float = 0.25) -> np.ndarray:
    """(S, S) float32 mask, in the face's crop, of the ellipse inscribed in its detector box grown
    by ``margin`` of its size on each side: about what the judges' crops hold (FaceNet's crop
    grows the box by 32/128). A face still matched after every try is matched there by its hair
    and head outline, so the fail-closed replacement covers it."""
    import cv2

    (x0, y0), (x1, y1) = face.crop.to_crop(np.array([face.box[:2], face.box[2:]], np.float64))
    w, h = (x1 - x0) * (1 + 2 * margin), (y1 - y0) * (1 + 2 * margin)
    mask = np.zeros((size, size), np.float32)
    cv2.ellipse(mask, (int(round((x0 + x1) / 2)), int(round((y0 + y1) / 2))),
                (int(round(w / 2)), int(round(h / 2))), 0, 0, 360, 1.0, -1)
    return mask


class Pipeline:
    """Loads the detector, landmark model, backend, shape model and judges once; anonymizes
    images one by one."""

    def __init__(self, settings: Settings = Settings()):
        if settings.on_fail not in ON_FAIL:
            raise ValueError(f"on_fail must be one of {ON_FAIL}, not {settings.on_fail!r}")
        if not 0.0 <= settings.geometry <= 1.0:
            raise ValueError(f"geometry must be in [0, 1], not {settings.geometry}")
        self.settings = settings
        kwargs = {"bank": settings.donors} if settings.donors else {}
        self.backend = create_backend(settings.backend, **kwargs)
        self.shape = None
        if settings.geometry > 0 or (settings.verify and settings.tries > 1):
            from .geometry import load_shape_model

            self.shape = load_shape_model()
        self.verifier = (Verifier(settings.device, dict(settings.verify_thresholds))
                         if settings.verify else None)

    def anonymize(self, image: np.ndarray, key: str = "") -> Result:
        """Find and replace every face of an RGB (H, W, 3) uint8 image. ``key`` (e.g. the
        file's relative path) seeds each face's randomness together with ``settings.seed``."""
        s = self.settings
        t0 = time.perf_counter()
        boxes, scores = F.detect_boxes([image], s.detector, s.threshold, s.min_face_size,
                                       s.device)[0]
        t1 = time.perf_counter()
        faces = []
        for b, p in zip(boxes, scores):
            face = F.face_from_box(image, b, p, self.backend.crop_size or F.MIN_CROP)
            if self.backend.crop_size is None:
                face.crop = F.crop_transform(face.landmarks, F.crop_size_for(face.landmarks))
            faces.append(face)
        t2 = time.perf_counter()
        out, records, timings = self.replace_faces(image, faces, key)
        return Result(out, faces, records,
                      {"detect": t1 - t0, "landmarks": t2 - t1, **timings})

    def replace_faces(
        self, image: np.ndarray, faces: list[F.Face], key: str = ""
    ) -> tuple[np.ndarray, list[FaceRecord], dict[str, float]]:
        """Replace the given faces; returns the new image, a record per face and seconds per
        stage (``backend``, ``postprocess``, ``verify``).

        Try ``t`` (0-based) of a face uses its candidate donor ``t`` and geometry strength
        ``min(1, geometry + 0.25 t)``; only faces that a judge still matches are tried again.
        """
        s = self.settings
        timings = {"backend": 0.0, "postprocess": 0.0, "verify": 0.0}
        if not faces:
            return image.copy(), [], timings
        crops = [F.crop_face(image, f.crop) for f in faces]
        lms = [f.crop.to_crop(f.landmarks) for f in faces]
        occluded = [F.occluder_mask(c, lm) if s.occluders else None
                    for c, lm in zip(crops, lms)]
        bank = getattr(self.backend, "bank", None)
        t0 = time.perf_counter()
        original = self.verifier.embed(image, faces) if self.verifier else None
        exclude = (self.verifier.too_close(original, bank.embeddings)
                   if self.verifier and bank is not None else None)
        timings["verify"] += time.perf_counter() - t0

        n = len(faces)
        pasted: list[tuple[np.ndarray, np.ndarray] | None] = [None] * n
        records: list[FaceRecord | None] = [None] * n
        todo = list(range(n))
        small = [i for i, f in enumerate(faces)
                 if min(f.box[2] - f.box[0], f.box[3] - f.box[1]) < MIN_VERIFY_SIZE]
        out = image
        tries = s.tries if self.verifier else 1
        for attempt in range(tries):
            for i in todo:
                avoid = None
                if bank is not None:  # no donor twice in one image, none close to the face
                    avoid = np.zeros(len(bank), bool) if exclude is None else exclude[i].copy()
                    avoid[[records[k].donor_index for k in range(n)
                           if k != i and records[k] is not None]] = True
                records[i], pasted[i] = self._render(
                    faces[i], crops[i], lms[i], occluded[i], key, i, attempt, avoid,
                    None if original is None else {j: e[i] for j, e in original.items()},
                    timings)
            out = F.paste_faces(image, faces, [p[0] for p in pasted], [p[1] for p in pasted])
            if self.verifier is None:
                break
            for i in small:
                records[i].status = "too_small"
            todo = [i for i in todo if i not in small]
            if not todo:
                break
            matched = self._judge(out, faces, original, records, todo, timings)
            for i, m in zip(todo, matched):
                records[i].status = "replaced" if m else "verified"
            todo = [i for i, m in zip(todo, matched) if m]
            if not todo:
                break
        if self.verifier is not None and todo:
            out = self._fail_closed(image, faces, crops, lms, pasted, records, todo, original,
                                    timings)
        return out, records, timings

    def _render(self, face, crop, lms, occluded, key, index, attempt, exclude, identity,
                timings):
        """One try at one face: donor, target geometry, rendering, post-processing, mask."""
        s = self.settings
        size = crop.shape[0]
        rng = face_rng(s.seed, key, index)
        t0 = time.perf_counter()
        donor = self.backend.choose(crop, lms, rng, attempt, exclude, identity)
        strength = min(1.0, s.geometry + GEOMETRY_STEP * attempt)
        target = lms
        if self.shape is not None and strength > 0:
            identity = (None if donor is None
                        else self.shape.identity(self.backend.donor_landmarks(donor)))
            target = self.shape.neutralize(lms, strength, identity)
        region = F.face_region(target, size, self.backend.forehead)
        anon = self.backend.anonymize(crop[None], target[None], region[None], [rng],
                                      donors=[donor])[0]
        t1 = time.perf_counter()
        if self.backend.photometric and s.photometric.any:
            anon = postprocess(anon, crop, region, s.photometric)
        mask = F.feathered_mask(region, s.feather)
        if occluded is not None:  # the occluder's original pixels stay, bit for bit
            mask = mask * (1 - F.soften(occluded))
        timings["backend"] += t1 - t0
        timings["postprocess"] += time.perf_counter() - t1
        target_img = face.crop.to_image(target)
        record = FaceRecord(
            original=face,
            anonymized=F.Face(moved_box(face.box, face.landmarks, target_img), face.score,
                              target_img, face.crop),
            donor=None if donor is None else self.backend.donor_id(donor),
            geometry=strength if self.shape is not None else 0.0,
            tries=attempt + 1, similarity={}, status="replaced", donor_index=donor)
        return record, (anon, mask)

    def _fail_closed(self, image, faces, crops, lms, pasted, records, todo, original, timings):
        """Replace the faces in ``todo`` with :func:`~.verify.fail_closed` over the union of
        their original and last regions and what the judges look at (:func:`judged_view`), or
        raise for ``on_fail="error"``; the judges score the result once more for the record."""
        s = self.settings
        if s.on_fail == "error":
            worst = ", ".join(
                f"face {i}: " + ", ".join(f"{j} {v:.3f}" for j, v in records[i].similarity.items())
                for i in todo)
            raise VerificationError(f"still matched after {s.tries} tries ({worst})")
        for i in todo:
            size = crops[i].shape[0]
            region = np.maximum(F.face_region(lms[i], size),
                                F.face_region(faces[i].crop.to_crop(
                                    records[i].anonymized.landmarks), size,
                                              self.backend.forehead))
            region = np.maximum(region, judged_view(faces[i], size))
            covered = fail_closed(crops[i], region, s.on_fail)
            pasted[i] = (covered, F.feathered_mask(region, s.feather))
            records[i] = replace(records[i], status=f"fail_closed:{s.on_fail}")
        out = F.paste_faces(image, faces, [p[0] for p in pasted], [p[1] for p in pasted])
        self._judge(out, faces, original, records, todo, timings)
        return out

    def _judge(self, out, faces, original, records, todo, timings) -> np.ndarray:
        """Score the faces ``todo`` of the output image against their originals with every
        judge (at the original face's place), record each judge's similarity; (len(todo),) bool:
        which a judge still matches."""
        t0 = time.perf_counter()
        sims = self.verifier.similarities({j: e[todo] for j, e in original.items()},
                                          self.verifier.embed(out, [faces[i] for i in todo]))
        for k, i in enumerate(todo):
            records[i].similarity = {j: float(v[k]) for j, v in sims.items()}
        timings["verify"] += time.perf_counter() - t0
        return self.verifier.matched(sims)
