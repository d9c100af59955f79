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
from typing import NamedTuple

import numpy as np

from . import faces as F
from .anonymizers import DEFAULT_BACKEND, create_backend
from .photometric import PhotometricSettings, postprocess
from .verify import (ON_FAIL, VerificationError, Verifier, fail_closed, judgeable, judged_view,
                     large_enough)

#: :meth:`Pipeline.plan_identity` judges a try's views this many at a time and stops at the
#: first match (a try that fails usually fails on its first views, the largest face first).
VIEW_CHUNK = 4
#: Default identity-neutral geometry strength (``--geometry``), chosen by measurement
#: (docs/benchmarks.md, "Geometry strength").
DEFAULT_GEOMETRY = 0.5
#: Each verification retry adds this much geometry strength (capped at 1).
GEOMETRY_STEP = 0.25


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
    ``status``: ``replaced`` (not verified), ``too_small`` (replaced, not verified: smaller
    than :data:`~.verify.MIN_JUDGED_SIZE`), ``verified``, or ``fail_closed:<blur|mask>``."""

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


class _View(NamedTuple):
    """One view of a planned face (:meth:`Pipeline.plan_identity`): the ``image`` (H, W, 3)
    uint8, the ``face`` as rendered, its ``crop`` (S, S, 3), landmarks ``lms`` (68, 2) in the
    crop, ``occluded`` (S, S) or None, the face where the judges look (``judged``) and the
    colour statistics it is rendered with (``colour``, or None)."""

    image: np.ndarray
    face: F.Face
    crop: np.ndarray
    lms: np.ndarray
    occluded: np.ndarray | None
    judged: F.Face
    colour: np.ndarray | None


@dataclass
class IdentityPlan:
    """How every view of one face is rendered (:meth:`Pipeline.plan_identity`): its seed
    ``index``, ``donor`` (bank index or None) and ``attempt`` (0-based try: geometry strength
    ``geometry + 0.25 attempt``), the verification ``status`` (as :class:`FaceRecord`'s) and each
    judge's highest similarity over the judged views (faces at least
    :data:`~.verify.MIN_JUDGED_SIZE` px and mostly in view)."""

    index: int
    donor: int | None
    attempt: int
    status: str
    similarity: dict[str, float] = field(default_factory=dict)
    #: per judge, how many judged views it matches even with the face masked out
    uninformative: dict[str, int] = field(default_factory=dict)


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
        bank = self.backend.bank
        t0 = time.perf_counter()
        original = self.verifier.embed(image, faces) if self.verifier else None
        exclude = (self.verifier.too_close(original, bank.embeddings)
                   if self.verifier and bank is not None else None)
        timings["verify"] += time.perf_counter() - t0

        n = len(faces)
        pasted: list[tuple[np.ndarray, np.ndarray] | None] = [None] * n
        records: list[FaceRecord | None] = [None] * n
        todo = list(range(n))
        small = [i for i, f in enumerate(faces) if not large_enough(f)]
        out = image
        tries = s.tries if self.verifier else 1
        for attempt in range(tries):
            for i in todo:
                avoid = None
                if bank is not None:  # no donor twice in one image, none close to the face
                    avoid = np.zeros(len(bank), bool) if exclude is None else exclude[i].copy()
                    avoid[[records[k].donor_index for k in range(n)
                           if k != i and records[k] is not None]] = True
                rng = face_rng(s.seed, key, i)
                t0 = time.perf_counter()
                donor = self.backend.choose(
                    crops[i], lms[i], rng, attempt, avoid,
                    None if original is None else {j: e[i] for j, e in original.items()})
                timings["backend"] += time.perf_counter() - t0
                records[i], pasted[i] = self._render(faces[i], crops[i], lms[i], occluded[i],
                                                     rng, donor, attempt, timings)
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

    def _target(self, face, lms, donor, attempt) -> tuple[np.ndarray, FaceRecord]:
        """The geometry of one try at one face: the (68, 2) crop-px target landmarks (the
        original's ``lms`` neutralized at this try's strength towards ``donor``'s) and a
        :class:`FaceRecord` with the face at that geometry."""
        strength = min(1.0, self.settings.geometry + GEOMETRY_STEP * attempt)
        target = lms
        if self.shape is not None and strength > 0:
            identity = (None if donor is None
                        else self.shape.identity(self.backend.donor_landmarks(donor)))
            target = self.shape.neutralize(lms, strength, identity)
        target_img = face.crop.to_image(target)
        record = FaceRecord(
            original=face,
            anonymized=F.Face(moved_box(face.box, face.landmarks, target_img), face.score,
                              target_img, face.crop),
            donor=None if donor is None else self.backend.donor_id(donor),
            geometry=strength if self.shape is not None else 0.0,
            tries=attempt + 1, similarity={}, status="replaced", donor_index=donor)
        return target, record

    def _render(self, face, crop, lms, occluded, rng, donor, attempt, timings, stats=None):
        """One try at one face with the given donor: target geometry (:meth:`_target`),
        rendering, post-processing (``stats``: the colour statistics to transfer, when not the
        crop's own), paste mask; a :class:`FaceRecord` and the ``(crop, mask)`` to paste."""
        s = self.settings
        size = crop.shape[0]
        t0 = time.perf_counter()
        target, record = self._target(face, lms, donor, attempt)
        region = F.face_region(target, size, self.backend.forehead)
        anon = self.backend.anonymize(crop[None], target[None], region[None], [rng],
                                      donors=[donor])[0]
        t1 = time.perf_counter()
        if self.backend.photometric and s.photometric.any:
            anon = postprocess(anon, crop, region, s.photometric, stats)
        mask = F.feathered_mask(region, s.feather)
        if occluded is not None:  # the occluder's original pixels stay, bit for bit
            mask = mask * (1 - F.soften(occluded))
        timings["backend"] += t1 - t0
        timings["postprocess"] += time.perf_counter() - t1
        return record, (anon, mask)

    def _fail_closed(self, image, faces, crops, lms, pasted, records, todo, original, timings):
        """Replace the faces in ``todo`` with :func:`~.verify.fail_closed` over the union of
        their original and last regions and what the judges look at (:func:`judged_view`), or
        raise for ``on_fail="error"``; the judges score the result once more for the record. A
        blur that a judge still matches (it keeps the head's outline and colours) becomes a
        mask, as for a video track (:meth:`plan_identity`), and is scored again."""
        s = self.settings
        if s.on_fail == "error":
            worst = ", ".join(
                f"face {i}: " + ", ".join(f"{j} {v:.3f}" for j, v in records[i].similarity.items())
                for i in todo)
            raise VerificationError(f"still matched after {s.tries} tries ({worst})")
        how = s.on_fail
        while todo:
            for i in todo:
                pasted[i] = self._cover(faces[i], crops[i], lms[i], records[i].anonymized, how)
                records[i] = replace(records[i], status=f"fail_closed:{how}")
            out = F.paste_faces(image, faces, [p[0] for p in pasted], [p[1] for p in pasted])
            matched = self._judge(out, faces, original, records, todo, timings)
            todo = [i for i, m in zip(todo, matched) if m] if how == "blur" else []
            how = "mask"
        return out

    def _cover(self, face, crop, lms, anonymized, how=None, judged=None):
        """The fail-closed ``(crop, mask)`` of a face: :func:`~.verify.fail_closed` (``how``,
        default ``on_fail``) over the union of its original region, the region of its last try
        (``anonymized``: a :class:`~.faces.Face`) and what the judges look at
        (:func:`judged_view`), and where the face is ``judged`` elsewhere (a track's
        unsmoothed geometry: a :class:`~.faces.Face`) its region and view there too."""
        size = crop.shape[0]
        region = np.maximum(F.face_region(lms, size),
                            F.face_region(face.crop.to_crop(anonymized.landmarks), size,
                                          self.backend.forehead))
        region = np.maximum(region, judged_view(face, size))
        if judged is not None:
            seen = F.Face(judged.box, judged.score, judged.landmarks, face.crop)
            region = np.maximum(region, np.maximum(
                F.face_region(face.crop.to_crop(judged.landmarks), size),
                judged_view(seen, size)))
        return fail_closed(crop, region, how or self.settings.on_fail), F.feathered_mask(
            region, self.settings.feather)

    def plan_identity(self, views: list[tuple[np.ndarray, F.Face, F.Face, np.ndarray | None]],
                      key: str, index: int,
                      avoid: np.ndarray | None = None,
                      timings: dict[str, float] | None = None,
                      margin: dict[str, float] | None = None) -> "IdentityPlan":
        """One fake identity for a face seen many times (a video track): the donor and try that
        every view of it is rendered with (:meth:`render_planned`).

        ``views``: ``(image (H, W, 3) uint8, face, judged, colour)``, the first the one the
        donor is matched to; each face's crop transform is the one it will be rendered at;
        ``judged``: the face where the judges look at it, original and rendered (a track's
        unsmoothed geometry, as found in the frame: what a re-identifier finds); ``colour``:
        the colour statistics it will be rendered with (:meth:`render_planned`), or None.
        ``index`` seeds the choice (``face_rng(seed, key, index)``); ``avoid``: (M,) bool,
        donors not to use (e.g. other tracks'). With verification every view is rendered and
        judged at each try as :meth:`replace_faces` judges one image; the plan fails closed
        when a view is still matched after the last try; ``margin``: how much further below
        each judge's threshold every view must stay (the frames between the views vary around
        them). Seconds per stage are added to ``timings``."""
        s = self.settings
        prepared = []
        for image, face, judged, colour in views:
            crop = F.crop_face(image, face.crop)
            lms = face.crop.to_crop(face.landmarks)
            prepared.append(_View(image, face, crop, lms,
                                  F.occluder_mask(crop, lms) if s.occluders else None, judged,
                                  colour))
        crop0, lms0 = prepared[0].crop, prepared[0].lms
        bank = self.backend.bank
        judged = ([v for v in prepared if judgeable(v.judged, v.image.shape)]
                  if self.verifier is not None else [])
        original = identity = None
        # per judge and view, what it gives the view with the face masked out (NaN: not needed)
        floor = {j: np.full(len(judged), np.nan) for j in self.verifier.judges} if judged else {}
        exclude = None if avoid is None else avoid.copy()
        timings = {} if timings is None else timings
        for k in ("backend", "postprocess", "verify"):
            timings.setdefault(k, 0.0)
        if judged:
            t0 = time.perf_counter()
            original = self.verifier.embed_many([(v.image, [v.judged]) for v in judged])
            identity = {j: e[0] for j, e in original.items()}
            if bank is not None:
                close = self.verifier.too_close({j: e[:1] for j, e in original.items()},
                                                bank.embeddings)[0]
                exclude = close if exclude is None else exclude | close
            timings["verify"] += time.perf_counter() - t0
        tries = s.tries if judged else 1
        for attempt in range(tries):
            donor = self.backend.choose(crop0, lms0, face_rng(s.seed, key, index), attempt,
                                        exclude, identity)
            plan = IdentityPlan(index, donor, attempt, "replaced" if self.verifier is None
                                else "too_small", {})
            if not judged:
                return plan
            plan.similarity = {j: -1.0 for j in original}
            for start in range(0, len(judged), VIEW_CHUNK):  # a try ends at its first match
                part = slice(start, start + VIEW_CHUNK)
                matched = self._judge_views(judged[part], {j: e[part] for j, e in
                                                           original.items()},
                                            floor, part, plan, key, margin, timings)
                if matched:
                    break
            plan.uninformative = {j: int((f >= self.verifier.thresholds[j]).sum())
                                  for j, f in floor.items()}
            if not matched:
                plan.status = "verified"
                return plan
        if s.on_fail == "error":
            raise VerificationError(f"still matched after {s.tries} tries (" + ", ".join(
                f"{j} {v:.3f}" for j, v in plan.similarity.items()) + ")")
        plan.status = f"fail_closed:{s.on_fail}"
        known = {j: np.nan_to_num(f, nan=-1.0) for j, f in floor.items()}
        if s.on_fail == "blur" and self._still_matched(judged, plan, original, known):
            plan.status = "fail_closed:mask"
        return plan

    def _judge_views(self, views, original, floor, part, plan, key, margin, timings) -> bool:
        """Render ``plan`` on ``views`` and judge them against their ``original`` embeddings;
        fill the views' entries (``part`` of the track's) of ``floor`` where a judge matches
        and ``plan.similarity`` with the highest similarities; whether a judge matches a view
        beyond its floor."""
        rendered = []
        for v in views:
            _, (anon, mask) = self._render(v.face, v.crop, v.lms, v.occluded,
                                           face_rng(self.settings.seed, key, plan.index),
                                           plan.donor, plan.attempt, timings, v.colour)
            rendered.append((F.paste_faces(v.image, [v.face], [anon], [mask]), [v.judged]))
        t0 = time.perf_counter()
        sims = self.verifier.similarities(original, self.verifier.embed_many(rendered))
        known = {j: f[part] for j, f in floor.items()}
        unknown = np.isnan(next(iter(known.values())))
        hit = self.verifier.matched(sims, margin=margin) & unknown
        if hit.any():
            found = self._floor([v for v, h in zip(views, hit) if h],
                                {j: e[hit] for j, e in original.items()})
            for j in floor:
                floor[j][np.arange(part.start, part.start + len(views))[hit]] = found[j]
        timings["verify"] += time.perf_counter() - t0
        for j, v in sims.items():
            plan.similarity[j] = max(plan.similarity[j], float(v.max()))
        return bool(self.verifier.matched(
            sims, {j: np.nan_to_num(f[part], nan=-1.0) for j, f in floor.items()}, margin).any())

    def _still_matched(self, views, plan, original, floor) -> bool:
        """Whether a judge still matches a view covered as ``plan`` fails closed (beyond what it
        gives the face masked out), judged :data:`VIEW_CHUNK` views at a time up to the first
        match: a blur keeps the head's outline and colours, which dlib sometimes still
        matches; the plan then masks instead."""
        for start in range(0, len(views), VIEW_CHUNK):
            part = slice(start, start + VIEW_CHUNK)
            covered = []
            for v in views[part]:
                _, record = self._target(v.face, v.lms, plan.donor, plan.attempt)
                patch, mask = self._cover(v.face, v.crop, v.lms, record.anonymized,
                                          judged=v.judged)
                covered.append((F.paste_faces(v.image, [v.face], [patch], [mask]), [v.judged]))
            sims = self.verifier.similarities({j: e[part] for j, e in original.items()},
                                              self.verifier.embed_many(covered))
            if self.verifier.matched(sims, {j: f[part] for j, f in floor.items()}).any():
                return True
        return False

    def _floor(self, views, original) -> dict[str, np.ndarray]:
        """:meth:`~.verify.Verifier.floor` of the views (:class:`_View`), where judged."""
        return self.verifier.floor([(v.image, v.judged) for v in views], original,
                                   self.settings.feather)

    def render_planned(self, image: np.ndarray, faces: list[F.Face], plans: list["IdentityPlan"],
                       key: str, stats: list[np.ndarray] | None = None,
                       judged: list[F.Face] | None = None
                       ) -> tuple[np.ndarray, list[F.Face], dict[str, float]]:
        """Replace ``faces`` of an (H, W, 3) uint8 image, each as its plan says (its donor and
        try, or fail-closed), with no choice or verification of its own. ``stats``: per face,
        the colour statistics to transfer (:func:`~.photometric.color_stats`, e.g. smoothed
        along a track) or None; ``judged``: per face, where the judges found it (as its plan's
        views, :meth:`plan_identity`), which a fail-closed cover covers too. Returns the new
        image, each face at its new geometry and seconds per stage."""
        s = self.settings
        timings = {"backend": 0.0, "postprocess": 0.0}
        pasted, moved = [], []
        for face, plan, colour, seen in zip(faces, plans, stats or [None] * len(faces),
                                            judged or [None] * len(faces)):
            crop = F.crop_face(image, face.crop)
            lms = face.crop.to_crop(face.landmarks)
            if plan.status.startswith("fail_closed"):  # covered at the geometry of its last try
                _, record = self._target(face, lms, plan.donor, plan.attempt)
                rendered = self._cover(face, crop, lms, record.anonymized,
                                       plan.status.split(":")[1], seen)
            else:
                occluded = F.occluder_mask(crop, lms) if s.occluders else None
                record, rendered = self._render(face, crop, lms, occluded,
                                                face_rng(s.seed, key, plan.index), plan.donor,
                                                plan.attempt, timings, colour)
            pasted.append(rendered)
            moved.append(record.anonymized)
        out = F.paste_faces(image, faces, [p[0] for p in pasted], [p[1] for p in pasted])
        return out, moved, timings

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
