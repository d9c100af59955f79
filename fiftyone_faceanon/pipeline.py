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
from functools import cache, partial
from typing import Callable

import cv2
import numpy as np

from . import faces as F
from .anonymizers import DEFAULT_BACKEND, create_backend
from .hands import hands_mask
from .mesh import Mesh, turned
from .metrics.detection import found_again
from .photometric import PhotometricSettings, postprocess
from .unlink import FROM_TRY
from .verify import (ON_FAIL, VerificationError, Verifier, fail_closed, judgeable, judged_view,
                     large_enough, split_rows)

#: :meth:`Pipeline.plan_identity` judges a try's views this many at a time and stops at the
#: first match (a try that fails usually fails on its first views, the largest face first, or
#: on those the last try was matched on, which a retry judges first on their own:
#: :func:`view_chunks`).
VIEW_CHUNK = 4
#: Default identity-neutral geometry strength (``--geometry``), chosen by measurement
#: (docs/benchmarks.md, "Geometry strength").
DEFAULT_GEOMETRY = 0.5
#: Each verification retry adds this much geometry strength (capped at 1).
GEOMETRY_STEP = 0.25
#: From this try (0-based) on, an image's face is replaced over a wider region
#: (:meth:`Pipeline._region`): forehead to ``WIDE_FOREHEAD`` of the chin-to-brow height and the
#: hull grown by ``WIDEN`` of the crop. A face that the judges still match after two tries is
#: mostly matched by its outline; on the 12 LFW images with a face written fail-closed this left
#: 3 such faces instead of 13. A face too small to be judged (``verify.large_enough``) gets it
#: at its only try. A video track never does: on the Hamilton clip a track verified at its third
#: try over the wider region leaked 3 frames to dlib (0.927-0.936) that its judged views (at
#: most 0.90) did not foresee, and none without it (docs/video.md).
WIDEN_FROM = 2
WIDE_FOREHEAD = 0.3
WIDEN = 0.04
#: An image's face that verification judges (``verify`` on, the face
#: :func:`~.verify.large_enough`) gets its new face's detail matched to the original's
#: (:func:`~.photometric.match_detail`) on its tries before this one (0-based), so a face
#: redone to unlink it on the first of its tries (it starts at :data:`~.unlink.FROM_TRY`);
#: its later tries, a face that is not verified and a video's faces keep the donor's. A face
#: blurred towards a soft photo is more like it to the judges: matched at every try, 7 of the
#: 565 LFW DevTest 500 faces failed closed at seed 0, against 2 without; matched on faces too
#: small to judge, the metrics suite's judges matched 7 of those 8 faces against 4
#: (docs/benchmarks.md, "Detail matched to the photo").
DETAIL_TRIES = 2


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
    #: also find faces turned sideways or upside down (:func:`~.faces.detect_faces`)
    any_roll: bool = True
    feather: float = 0.04
    #: identity-neutral geometry strength, 0 (the paper: the original's landmarks) to 1
    geometry: float = DEFAULT_GEOMETRY
    #: donor bank file for donor backends; None: the shipped one
    donors: str | None = None
    #: score every replaced face with the judges, retry, fail closed (without it a donor backend
    #: still reads the judges' embeddings of each original to choose its donor)
    verify: bool = True
    #: tries per face before ``on_fail`` (on LFW, 5 instead of 3 leaves 30% fewer faces to it; 6
    #: instead of 5 one face fewer at each of seeds 0-2, which keeps detection at 98% or more)
    tries: int = 6
    #: ``blur``, ``mask`` or ``error`` (no output) for a face still matched after every try
    on_fail: str = "blur"
    #: keep the original's pixels where an occluder crosses the face
    occluders: bool = True
    #: judge thresholds overriding the manifest's FAR 1e-3 ones (``{judge: cosine}``)
    verify_thresholds: tuple[tuple[str, float], ...] = ()
    #: after a run of files, anonymize again the faces that a judge links to another image's
    #: face of the same person (:mod:`.unlink`; with verification and a donor bank only)
    unlink: bool = True
    #: ``donor`` backend: keep each face's apparent group in its donor
    #: (:data:`~.anonymizers.donor.SURE_GROUP`), at a cost in expression and in faces failed
    #: closed
    same_group: bool = False

    def __post_init__(self):
        if self.same_group and self.backend != "donor":
            raise ValueError(f"same_group needs the donor backend, not {self.backend!r}")

    def as_dict(self) -> dict:
        """The settings as JSON would give them back (tuples as lists), for sidecars and resume."""
        return json.loads(json.dumps(asdict(self)))


@dataclass
class FaceRecord:
    """What became of one face. ``original``: the detected :class:`~.faces.Face`; ``anonymized``:
    the same face at its new geometry (landmarks in image pixels, box moved with them);
    ``similarity``: each judge's final cosine to the original, the higher of the face's place and
    where it is found again (:meth:`Pipeline._judge`; empty without verification);
    ``status``: ``replaced`` (not verified), ``too_small`` (replaced over the wide region, not
    verified: smaller than :data:`~.verify.MIN_JUDGED_SIZE`), ``verified``, or
    ``fail_closed:<blur|mask>``; a video track's plan can also be ``covered:<blur|mask>``
    (:meth:`Pipeline.plan_identity`)."""

    original: F.Face
    anonymized: F.Face
    donor: str | None
    geometry: float
    tries: int
    similarity: dict[str, float]
    status: str
    donor_index: int | None = None
    #: the donors it avoided, anonymized again to keep it apart from another image's face of
    #: its person (:mod:`.unlink`); private, since it says that person is in another image
    unlinked: tuple[str, ...] = ()

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
                "similarity": {j: round(float(s), 5) for j, s in self.similarity.items()},
                "unlinked": list(self.unlinked)}


@dataclass
class Result:
    """``image`` (H, W, 3) uint8, the faces found in the original, one :class:`FaceRecord` per
    face, seconds per stage, every judge's embeddings of the original faces (``{judge: (F,
    D)}``; None where the judges did not read them) and of the verified faces at their places
    in ``image`` as it is released (``anonymized``, ``{judge: (F, D)}``, full precision, from
    the judging that verified them: :meth:`Pipeline.anonymize_many`'s ``released``; NaN rows
    for the other faces and where a judge embedded a face in bfloat16 only)."""

    image: np.ndarray
    faces: list[F.Face]
    records: list[FaceRecord]
    timings: dict[str, float]
    original: dict[str, np.ndarray] | None = None
    anonymized: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def unverified(self) -> list[FaceRecord]:
        """Faces that failed verification and were handled fail-closed."""
        return [r for r in self.records if r.status.startswith("fail_closed")]


def _verified_rows(embedded: dict[str, np.ndarray], records: list[FaceRecord]
                   ) -> dict[str, np.ndarray]:
    """``{judge: (F, D)}`` embeddings with NaN rows but for the verified faces, whose last
    judging is of the final image (:meth:`Pipeline._settle` judges a verified face again when
    the image was pasted after it was judged); another face's may be of an image since
    changed."""
    verified = np.array([r.status == "verified" for r in records], bool)[:, None]
    return {j: np.where(verified, e, np.nan).astype(np.float32) for j, e in embedded.items()}


def _wears_glasses(original: dict[str, np.ndarray]) -> np.ndarray:
    """(F,) bool: which faces (every judge's embeddings, ``{judge: (F, D)}``) wear glasses by
    the glasses head on their FaceNet-CASIA embedding, so their own frames are kept
    (``donor.keeps_frames``; the `donor` backend then gives them a donor without)."""
    from .anonymizers.donor import keeps_frames

    return keeps_frames(original["facenet_casia"])


def view_chunks(n: int, lead: int = 0) -> list[slice]:
    """The parts of a try's ``n`` views judged together: the first ``lead`` on their own (the
    views the last try was matched on: on the Hamilton clip a retry's first match is one of
    them in 14 of 27 retries), then :data:`VIEW_CHUNK` at a time."""
    starts = [0, *range(lead, n, VIEW_CHUNK)] if 0 < lead < n else [*range(0, n, VIEW_CHUNK)]
    return [slice(a, b) for a, b in zip(starts, starts[1:] + [n])]


def face_rng(seed: int, key: str, index: int) -> np.random.Generator:
    """The generator for face ``index`` of the image named ``key``: the same for the same seed
    whatever the order or the worker the image is processed in."""
    return np.random.default_rng([seed, zlib.crc32(key.encode()), index])


def widened(region: np.ndarray) -> np.ndarray:
    """An (S, S) float32 region grown by :data:`WIDEN` of its side (a wide try's outline)."""
    radius = int(round(WIDEN * region.shape[0]))
    return cv2.dilate(region, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1,) * 2))


def wide_region(target: np.ndarray, size: int) -> np.ndarray:
    """The (S, S) float32 region a wide try replaces around the (68, 2) crop-px ``target`` of a
    face drawn without a mesh: its hull with :data:`WIDE_FOREHEAD` of forehead,
    :func:`widened`."""
    return widened(F.face_region(target, size, WIDE_FOREHEAD))


def moved_box(box: np.ndarray, before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """A detector box (4,) carried along by the similarity that takes landmarks ``before``
    (68, 2) onto ``after``: what a detector would report on the re-shaped face."""
    from .geometry import fit_similarity

    sim = fit_similarity(before, after)
    corners = sim.apply(np.array([[box[0], box[1]], [box[2], box[3]]], np.float64))
    return np.concatenate([corners.min(0), corners.max(0)])


@dataclass(eq=False)
class _View:
    """One view of a planned face (:meth:`Pipeline.plan_identity`): the ``image`` (H, W, 3)
    uint8, the ``face`` as rendered, its ``crop`` (S, S, 3), landmarks ``lms`` (68, 2) in the
    crop, the face where the judges look (``judged``), the colour statistics it is rendered with
    (``colour``, or None) and ``occluders()``, its (S, S) occluder mask or None
    (:meth:`Pipeline._occluded`): found at the view's first render and kept (a
    :func:`functools.cache`, which unlike ``cached_property`` in Python 3.11 holds no lock
    shared by every view while it searches), so a view that is never
    rendered (a track too small to judge, a try that ends at an earlier view) costs no hand
    detection. ``original``: each judge's (D,) embedding of the judged face as it was, made
    when the judge first judges the view (:meth:`Pipeline._originals`), for the same reason."""

    image: np.ndarray
    face: F.Face
    crop: np.ndarray
    lms: np.ndarray
    judged: F.Face
    colour: np.ndarray | None
    occluders: Callable[[], np.ndarray | None]
    original: dict[str, np.ndarray] = field(default_factory=dict)


def mean_embedding(views: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """``[{judge: (1, D) unit embedding}]`` of N views of one face -> ``{judge: (D,)}`` the unit
    mean: what a track's donor is matched to. One view's reading moves with the view (Grace
    Hopper's views on the video contact sheet read P(female) 0.40-0.80), and her largest view,
    cut by the frame's edge, drew a man's face."""
    means = {j: np.mean([v[j][0] for v in views], 0) for j in views[0]}
    return {j: m / max(float(np.linalg.norm(m)), 1e-12) for j, m in means.items()}


def read_track(panel: Verifier, views: list[dict[str, np.ndarray]],
               bank: dict[str, np.ndarray] | None
               ) -> tuple[dict[str, np.ndarray], bool, np.ndarray | None]:
    """What the judges' reading of a track's first judged views (``[{judge: (1, D) unit
    embedding}]``, N views) decides for its plan, all of it on the same views: ``{judge: (D,)}``
    the unit mean its donor is matched to (:func:`mean_embedding`), whether it wears glasses
    (:func:`_wears_glasses` on that mean: its own frames are kept) and, for a bank of M donors
    (``{judge: (M, D)}``, or None), (M,) bool the donors a judge finds close to any one of the
    views (:meth:`~.verify.Verifier.too_close`), which are never used."""
    identity = mean_embedding(views)
    frames = bool(_wears_glasses({j: e[None] for j, e in identity.items()})[0])
    close = None if bank is None else panel.too_close(
        {j: np.concatenate([v[j] for v in views]) for j in views[0]}, bank).any(0)
    return identity, frames, close


@dataclass
class IdentityPlan:
    """How every view of one face is rendered (:meth:`Pipeline.plan_identity`): its seed
    ``index``, ``donor`` (bank index or None) and ``attempt`` (0-based try: geometry strength
    ``geometry + 0.25 attempt``), the verification ``status`` (as :class:`FaceRecord`'s) and each
    judge's highest similarity over the views judged at the last try, at their place or where
    they are found again (faces at least :data:`~.verify.MIN_JUDGED_SIZE` px and mostly in
    view; a try ends at its first match, so a judge later in :data:`~.verify.VERIFY_JUDGES`
    than the one that matched a failed last try may have no entry)."""

    index: int
    donor: int | None
    attempt: int
    status: str
    similarity: dict[str, float] = field(default_factory=dict)
    #: per judge, how many judged views it matches even with the face masked out
    uninformative: dict[str, int] = field(default_factory=dict)
    #: whether the face wears glasses (its first judged view's embedding), whose frames every
    #: view keeps (:meth:`Pipeline._occluded`)
    frames: bool = False
    #: the donors (bank ids) it avoided to be kept apart from other files' faces of its person
    #: (``redo`` in :meth:`Pipeline.plan_identity`)
    unlinked: tuple[str, ...] = ()

    @property
    def covered(self) -> bool:
        """Whether every view is covered (:meth:`Pipeline._cover`, ``<how>`` after the colon)
        instead of showing the donor: after a failed verification (``fail_closed:<how>``) or
        without a donor tried (``covered:<how>``)."""
        return self.status.startswith(("fail_closed:", "covered:"))

    @property
    def tries(self) -> int:
        """How many donors were tried: none for a face covered outright."""
        return 0 if self.status.startswith("covered:") else self.attempt + 1


@dataclass
class _Replacing:
    """One image while :meth:`Pipeline.replace_many` replaces its faces: the ``image``, its
    ``faces`` and ``key``; per face its crop (S, S, 3), crop landmarks (68, 2), occluder mask
    (S, S) or None (found by :meth:`Pipeline._find_occluders` once the originals are embedded),
    record and pasted ``(crop, mask)`` of its latest try; every judge's
    embeddings of the ``original`` faces (``{judge: (F, D)}``), the bank's donors too close to
    each (``exclude``, (F, M) bool); the faces still to try (``todo``), the output so far,
    what it goes through before it is seen (``released``, or None), seconds per stage and the
    faces anonymized again to unlink them (``unlink``); how many times the output was pasted
    (``pastes``) and per face how many it had when the face was last judged (``judged_at``);
    per face its :class:`~.mesh.Mesh` where it is turned and the backend renders meshes
    (``meshes``, else None)."""

    image: np.ndarray
    faces: list[F.Face]
    key: str
    crops: list[np.ndarray]
    lms: list[np.ndarray]
    occluded: list[np.ndarray | None]
    timings: dict[str, float]
    records: list[FaceRecord | None]
    pasted: list[tuple[np.ndarray, np.ndarray] | None]
    #: per face, what the backend reads off it for its donor (:meth:`Pipeline._read_faces`)
    readings: list[object | None]
    todo: list[int]
    out: np.ndarray
    released: Callable[[np.ndarray], np.ndarray] | None = None
    original: dict[str, np.ndarray] | None = None
    #: every judge's full-precision embeddings of each face at its place in the output as
    #: last judged (``{judge: (F, D)}``, NaN rows where none: :meth:`Pipeline._judge`)
    anonymized: dict[str, np.ndarray] = field(default_factory=dict)
    exclude: np.ndarray | None = None
    #: faces anonymized again to unlink them: ``{face: (M,) bool}``, the donors they avoid
    unlink: dict[int, np.ndarray] = field(default_factory=dict)
    pastes: int = 0
    judged_at: list[int] = field(default_factory=list)
    meshes: list[Mesh | None] = field(default_factory=list)

    def paste(self) -> None:
        """``out``: the image with every face's latest ``(crop, mask)`` pasted."""
        self.out = F.paste_faces(self.image, self.faces, [p[0] for p in self.pasted],
                                 [p[1] for p in self.pasted])
        self.pastes += 1


def _share_judging(states: list[_Replacing], seconds: float, faces: list[int]) -> None:
    """Charge the seconds of one judging pass over several images to each in proportion to
    the faces it had judged."""
    total = sum(faces) or 1
    for st, n in zip(states, faces):
        st.timings["judge"] += seconds * n / total


class Pipeline:
    """Loads the detector, landmark model, backend, shape model and judges once; anonymizes
    an image, or several together (:meth:`anonymize_many`)."""

    def __init__(self, settings: Settings = Settings()):
        if settings.on_fail not in ON_FAIL:
            raise ValueError(f"on_fail must be one of {ON_FAIL}, not {settings.on_fail!r}")
        if not 0.0 <= settings.geometry <= 1.0:
            raise ValueError(f"geometry must be in [0, 1], not {settings.geometry}")
        self.settings = settings
        kwargs = {"bank": settings.donors} if settings.donors else {}
        if settings.same_group:
            kwargs["same_group"] = True
        self.backend = create_backend(settings.backend, **kwargs)
        self.backend.verified = settings.verify
        self.shape = None
        if settings.geometry > 0 or (settings.verify and settings.tries > 1):
            from .geometry import load_shape_model

            self.shape = load_shape_model()
        # the judges' panel: it verifies each try and, for a backend that chooses donors, reads
        # each original's gender, age and glasses and keeps away donors like it, verifying or not
        self.panel = (Verifier(settings.device, dict(settings.verify_thresholds))
                      if settings.verify or self.backend.bank is not None else None)

    def anonymize(self, image: np.ndarray, key: str = "") -> Result:
        """Find and replace every face of an RGB (H, W, 3) uint8 image. ``key`` (e.g. the
        file's relative path) seeds each face's randomness together with ``settings.seed``.
        Raises :class:`~.verify.VerificationError` for a face still matched with
        ``on_fail="error"``."""
        result = self.anonymize_many([image], [key])[0]
        if isinstance(result, VerificationError):
            raise result
        return result

    def anonymize_many(self, images: list[np.ndarray], keys: list[str],
                       released: list[Callable[[np.ndarray], np.ndarray]] | None = None,
                       unlink: list[dict[int, np.ndarray]] | None = None,
                       faces: list[list[F.Face]] | None = None,
                       originals: list[dict[str, np.ndarray] | None] | None = None
                       ) -> list[Result | VerificationError]:
        """:meth:`anonymize` of several images at once, one result per image: MTCNN runs once
        over the images of each size and each judge once per try over the faces of every image
        (:meth:`replace_many`). An image with a face still matched under ``on_fail="error"``
        gets its :class:`~.verify.VerificationError` instead of a result. ``released``: per
        image, what it goes through before anyone sees it (the file it is written to:
        :func:`~.images.as_written`); the judges then score that, against their own
        thresholds, so a face verified is verified in the file; without it they score the
        image as it is, :data:`~.verify.MARGIN` below them. ``unlink``: per image, the faces
        to anonymize again apart from other images' faces of their person (:mod:`.unlink`):
        ``{face index: (M,) bool}``, the bank's donors each must avoid; such a face starts at
        try :data:`~.unlink.FROM_TRY` and its record lists them (``unlinked``). ``faces``: per
        image, the faces found in it before (an image anonymized again to unlink it), which
        are then not searched for again; ``originals``: per image, every judge's embeddings of
        those faces from before (``{judge: (F, D)}``, or None), which are then not computed
        again. MTCNN's scores move in their last bits with the batch,
        which on rare images moves a box (LFW: 1 face of 565 by 3.5 px), so an image's output
        can depend on the images it is detected with; :mod:`.batch` always groups the same
        images (fixed chunks). Raises ``ValueError`` for an image that is not an RGB (H, W, 3)
        uint8 array (:func:`~.images.load_image` gives one for any file)."""
        for image, key in zip(images, keys):
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"{key or 'image'}: an RGB (H, W, 3) uint8 array is needed, "
                                 f"not {image.dtype} of shape {image.shape}")
        detect, found, landmarks = 0.0, faces, [0.0] * len(images)
        if faces is None:
            s = self.settings
            t0 = time.perf_counter()
            detections = F.detect_faces(images, s.detector, s.threshold, s.min_face_size,
                                        s.device, s.any_roll)
            detect = (time.perf_counter() - t0) / max(1, len(images))
            found, landmarks = [], []
            for image, (boxes, scores, turns) in zip(images, detections):
                t0 = time.perf_counter()
                found.append([F.face_from_box(image, box, score, self.backend.crop_size,
                                              turn=turn)
                              for box, score, turn in zip(boxes, scores, turns)])
                landmarks.append(time.perf_counter() - t0)
        results: list[Result | VerificationError] = []
        released = released or [None] * len(images)
        for seconds, done in zip(landmarks, self.replace_many(
                list(zip(images, found, keys, released)), unlink, originals)):
            if not isinstance(done, VerificationError):
                done.timings = {"detect": detect, "landmarks": seconds, **done.timings}
            results.append(done)
        return results

    def replace_many(
        self, items: list[tuple[np.ndarray, list[F.Face], str,
                                Callable[[np.ndarray], np.ndarray] | None]],
        unlink: list[dict[int, np.ndarray]] | None = None,
        originals: list[dict[str, np.ndarray] | None] | None = None,
    ) -> list[Result | VerificationError]:
        """Replace the given faces of each ``(image, faces, key, released)``; per item its
        :class:`Result` (seconds per stage: ``occluders``, ``backend``, ``postprocess``,
        ``judge``: the judges reading the originals and, with verification, scoring each try),
        or the :class:`~.verify.VerificationError` of ``on_fail="error"``.
        ``released``: what the image goes through before it is seen, which the judges score
        (:meth:`anonymize_many`), or None; ``unlink``: per item, the faces to keep apart from
        other images' (:meth:`anonymize_many`); ``originals``: per item, the judges'
        embeddings of its faces from before, or None (:meth:`anonymize_many`).

        Try ``t`` (0-based) of a face uses its candidate donor ``t`` and geometry strength
        ``min(1, geometry + 0.25 t)``; only faces that a judge still matches are tried again.
        Each judge embeds the original faces of all the items in one pass, then each try's
        faces in one pass: on the CPU a judge takes about 40% less time per face in batches of
        eight than one by one (docs/benchmarks.md). An item's similarities differ from those of
        a run of it alone only in the last bits of their floats (the convolutions' order of
        summation follows the batch size), so its bytes do not depend on the others.
        """
        states = [self._start(*item) for item in items]
        for st, faces in zip(states, unlink or []):  # (a face not found again is not redone)
            st.unlink = {i: avoid for i, avoid in faces.items() if i < len(st.faces)}
        for st, original in zip(states, originals or []):
            st.original = original
        if self.panel is not None:
            self._embed_originals([st for st in states if st.faces])
        self._find_occluders(states)
        self._read_faces(states)
        for attempt in range(self.settings.tries if self.settings.verify else 1):
            trying = [st for st in states if st.todo]
            for st in trying:
                self._try(st, attempt)
            if not self.settings.verify:
                break
            for st in trying:
                for i in st.todo:
                    if not large_enough(st.faces[i]):
                        st.records[i].status = "too_small"
                st.todo = [i for i in st.todo if large_enough(st.faces[i])]
            judged = [st for st in trying if st.todo]
            for st, matched in zip(judged, self._judge(judged)):
                for i, m in zip(st.todo, matched):
                    st.records[i].status = "replaced" if m else "verified"
                st.todo = [i for i, m in zip(st.todo, matched) if m]
        results: list = []
        for st in states:
            if self.settings.verify:
                try:
                    self._settle(st)
                except VerificationError as e:
                    results.append(e)
                    continue
            results.append(Result(st.out, st.faces, st.records, st.timings, st.original,
                                  _verified_rows(st.anonymized, st.records)))
        return results

    def _start(self, image: np.ndarray, faces: list[F.Face], key: str,
               released: Callable[[np.ndarray], np.ndarray] | None) -> _Replacing:
        """The state of one image before its first try: every face's crop, crop landmarks and
        mesh (:meth:`_mesh`), every face to do, the output a copy of the image, no face judged
        yet."""
        t0 = time.perf_counter()
        crops = [F.crop_face(image, f.crop) for f in faces]
        lms = [f.crop.to_crop(f.landmarks) for f in faces]
        meshes = [self._mesh(c, f) for c, f in zip(crops, faces)]
        n = len(faces)
        judges = self.panel.judges if self.panel is not None else {}
        return _Replacing(image, faces, key, crops, lms, [None] * n,
                          {"occluders": 0.0, "backend": time.perf_counter() - t0,
                           "postprocess": 0.0, "judge": 0.0},
                          records=[None] * n, pasted=[None] * n, readings=[None] * n,
                          todo=list(range(n)),
                          out=image.copy(), released=released, judged_at=[-1] * n,
                          anonymized={j: np.full((n, judge.dim), np.nan, np.float32)
                                      for j, judge in judges.items()}, meshes=meshes)

    def _mesh(self, crop: np.ndarray, face: F.Face) -> Mesh | None:
        """The face's :class:`~.mesh.Mesh` in its (S, S, 3) crop where it is turned beyond
        :data:`~.mesh.TURNED` (:func:`~.mesh.turned`) and the backend renders meshes; else
        None."""
        if not self.backend.renders_meshes:
            return None
        corners = face.crop.to_crop(np.reshape(face.box, (2, 2)))
        return turned(crop, np.r_[corners.min(0), corners.max(0)])

    def _embed_originals(self, states: list[_Replacing]) -> None:
        """Every judge's embeddings of the states' original faces that no state holds yet, in
        one pass, and for each face the bank's donors a judge finds close to it; without
        verification in bfloat16 where a judge has that fast path, since they then only
        choose the donor."""
        t0 = time.perf_counter()
        bank = self.backend.bank
        missing = [st for st in states if st.original is None]
        if missing:
            for st, original in zip(missing, self.panel.embed_each(
                    [(st.image, st.faces) for st in missing], fast=not self.settings.verify)):
                st.original = original
        if bank is not None:
            for st in states:
                st.exclude = self.panel.too_close(st.original, bank.embeddings)
                for i, avoid in st.unlink.items():
                    st.exclude[i] |= avoid
        _share_judging(states, time.perf_counter() - t0, [len(st.faces) for st in states])

    def _find_occluders(self, states: list[_Replacing]) -> None:
        """Every face's occluder mask (:meth:`_occluded`), with its glasses frames where its
        embedding (verification) says it wears glasses (:func:`_wears_glasses`)."""
        for st in states:
            t0 = time.perf_counter()
            frames = (np.zeros(len(st.faces), bool) if st.original is None
                      else _wears_glasses(st.original))
            st.occluded = [self._occluded(c, lm, f) for c, lm, f in zip(st.crops, st.lms, frames)]
            st.timings["occluders"] += time.perf_counter() - t0

    def _read_faces(self, states: list[_Replacing]) -> None:
        """What the backend matches each face's donor on
        (:meth:`~.anonymizers.Anonymizer.read`: with the judges, their embeddings of the
        original, and a turned face's mesh), read once for all its tries; a turned face's mesh
        takes the way its donors are to face (``Mesh.facing``,
        :meth:`~.anonymizers.Anonymizer.facing`)."""
        for st in states:
            t0 = time.perf_counter()
            for i, (crop, lms) in enumerate(zip(st.crops, st.lms)):
                identity = (None if st.original is None
                            else {j: e[i] for j, e in st.original.items()})
                st.readings[i] = self.backend.read(crop, lms, identity, self.settings.verify,
                                                   st.meshes[i])
                if st.meshes[i] is not None:
                    st.meshes[i] = replace(st.meshes[i],
                                           facing=self.backend.facing(st.readings[i]))
            st.timings["backend"] += time.perf_counter() - t0

    def _try(self, st: _Replacing, attempt: int) -> None:
        """Try ``attempt`` at the faces ``st.todo``: a donor each (none used twice in the image,
        none a judge finds close to the face), rendered; ``st.out`` gets every face's latest
        try, its donor chosen on what :meth:`_read_faces` read off it. A face to unlink
        (``st.unlink``) is at try ``attempt +`` :data:`~.unlink.FROM_TRY` (its geometry, region
        and candidate rank), its donor chosen at every try on the terms of a first try (skin
        tone and light: ``redo`` in :meth:`~.anonymizers.Anonymizer.choose`, which is also
        told whether the try is wide and whether it is the face's last)."""
        bank = self.backend.bank
        for i in st.todo:
            at = attempt + (FROM_TRY if i in st.unlink else 0)
            avoid = None
            if bank is not None:
                avoid = np.zeros(len(bank), bool) if st.exclude is None else st.exclude[i].copy()
                avoid[[r.donor_index for k, r in enumerate(st.records)
                       if k != i and r is not None]] = True
            rng = face_rng(self.settings.seed, st.key, i)
            small = not large_enough(st.faces[i])
            wide = at >= WIDEN_FROM or small
            last = self.settings.verify and attempt == self.settings.tries - 1
            t0 = time.perf_counter()
            donor = self.backend.choose(st.readings[i], rng, at, avoid, i in st.unlink, wide,
                                        last)
            st.timings["backend"] += time.perf_counter() - t0
            st.records[i], st.pasted[i] = self._render(
                st.faces[i], st.crops[i], st.lms[i], st.occluded[i], rng, donor, at, st.timings,
                wide=wide,
                detail=self.settings.verify and not small and at < DETAIL_TRIES,
                mesh=st.meshes[i])
            if i in st.unlink:
                st.records[i].unlinked = tuple(str(d) for d in bank.ids[st.unlink[i]])
        st.paste()

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

    def occluders(self, crop: np.ndarray, lms: np.ndarray) -> np.ndarray | None:
        """What crosses the face in an (S, S, 3) crop with its (68, 2) crop-px landmarks, as
        (S, S) bool: what is not skin (:func:`~.faces.occluder_mask`) and the hands in the crop
        (:func:`~.hands.hands_mask`); or None with ``occluders`` off."""
        if not self.settings.occluders:
            return None
        return F.occluder_mask(crop, lms) | hands_mask(crop)

    def _occluded(self, crop: np.ndarray, lms: np.ndarray, frames: bool = False,
                  found: np.ndarray | None = None) -> np.ndarray | None:
        """The (S, S) occluder mask of a face, whose original pixels stay: ``found`` (what
        :meth:`occluders` finds, e.g. filtered over a video's neighbouring frames) or else what
        it finds in the crop, and for a face that wears glasses (``frames``), their frames
        (:func:`~.faces.frames_mask`); or None with ``occluders`` off."""
        mask = self.occluders(crop, lms) if found is None else found
        if mask is None:
            return None
        return mask | F.frames_mask(crop, lms) if frames else mask

    def _view_occluded(self, crop: np.ndarray, lms: np.ndarray, frames: bool,
                       found: Callable[[], np.ndarray | None] | None) -> np.ndarray | None:
        """:meth:`_occluded` of a planned view, with what ``found`` gives (when given) as what
        crosses it."""
        return self._occluded(crop, lms, frames, None if found is None else found())

    def _region(self, target: np.ndarray, size: int, wide: bool,
                mesh: Mesh | None = None) -> np.ndarray:
        """The (S, S) region a try replaces around the (68, 2) crop-px ``target``: the face's
        hull with the backend's forehead or, ``wide``, :func:`wide_region` (more forehead, the
        outline grown), so that less of the head's outline is left for a judge to match. A
        turned face's is the visible surface of its target ``mesh``
        (:meth:`~.mesh.Mesh.surface`), :func:`widened` when ``wide``."""
        if mesh is not None:
            region = mesh.surface(size).astype(np.float32)
            return widened(region) if wide else region
        if wide:
            return wide_region(target, size)
        return F.face_region(target, size, self.backend.forehead)

    def _render(self, face, crop, lms, occluded, rng, donor, attempt, timings, stats=None,
                wide=False, detail=False, mesh=None):
        """One try at one face with the given donor: target geometry (:meth:`_target`; a
        turned face's ``mesh`` moved as far towards the donor's as drawn onto it,
        ``backend.donor_mesh`` at the mesh's ``facing``, :meth:`~.mesh.Mesh.toward`),
        rendering over the region of :meth:`_region`
        (``wide``), post-processing (``stats``:
        the colour statistics to transfer, when not the crop's own; ``detail``: the new face's
        detail matched to the original's, :data:`DETAIL_TRIES`), paste mask; a
        :class:`FaceRecord` and the ``(crop, mask)`` to paste."""
        s = self.settings
        size = crop.shape[0]
        t0 = time.perf_counter()
        target, record = self._target(face, lms, donor, attempt)
        meshes = {}
        if mesh is not None:
            mesh = mesh.toward(self.backend.donor_mesh(donor, mesh.facing), record.geometry)
            meshes["meshes"] = [mesh]
        region = self._region(target, size, wide, mesh)
        anon = self.backend.anonymize(crop[None], target[None], region[None], [rng],
                                      donors=[donor], **meshes)[0]
        t1 = time.perf_counter()
        photometric = s.photometric if detail else replace(s.photometric, most_detail=None)
        if self.backend.photometric and photometric.any:
            anon = postprocess(anon, crop, region, photometric, stats, face.crop.scale)
        mask = F.feathered_mask(region, s.feather)
        if occluded is not None:  # the occluder's original pixels stay, bit for bit
            mask = mask * (1 - F.soften(occluded))
        timings["backend"] += t1 - t0
        timings["postprocess"] += time.perf_counter() - t1
        return record, (anon, mask)

    def _settle(self, st: _Replacing) -> None:
        """After the last try: the faces ``st.todo`` fail closed (:meth:`_fail_closed`), and a
        verified face last judged before the image's latest paste (another face's later try,
        or a cover) is judged once more in the final image, since that paste can reach into
        what the judges see of it; one now matched fails closed too, and its cover is a paste
        after every other. So each verified face's last judging is of the final image."""
        if st.todo:
            self._fail_closed(st)
        while stale := [i for i, r in enumerate(st.records)
                        if r.status == "verified" and st.judged_at[i] < st.pastes]:
            st.todo = stale
            matched = self._judge([st])[0]
            st.todo = [i for i, m in zip(stale, matched) if m]
            if st.todo:
                self._fail_closed(st)

    def _fail_closed(self, st: _Replacing) -> None:
        """Replace the faces ``st.todo`` with :func:`~.verify.fail_closed` over the union of
        their original and last regions and what the judges look at (:func:`judged_view`), or
        raise for ``on_fail="error"``; every judge scores the result once more for the record. A
        blur that a judge still matches (it keeps the head's outline and colours) becomes a
        mask, as for a video track (:meth:`plan_identity`), and is scored again."""
        s = self.settings
        if s.on_fail == "error":
            worst = ", ".join(
                f"face {i}: " + ", ".join(f"{j} {v:.3f}"
                                          for j, v in st.records[i].similarity.items()
                                          if not np.isnan(v))
                for i in st.todo)
            raise VerificationError(f"still matched after {s.tries} tries ({worst})")
        how = s.on_fail
        while st.todo:
            for i in st.todo:
                st.pasted[i] = self._cover(st.faces[i], st.crops[i], st.lms[i],
                                           st.records[i].anonymized, how)
                st.records[i] = replace(st.records[i], status=f"fail_closed:{how}")
            st.paste()
            matched = self._judge([st], every=True)[0]
            st.todo = [i for i, m in zip(st.todo, matched) if m] if how == "blur" else []
            how = "mask"

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
                      margin: dict[str, float] | None = None,
                      released: Callable[[np.ndarray], np.ndarray] | None = None,
                      found: list[Callable[[], np.ndarray | None]] | None = None,
                      cover: bool = False, redo: bool = False) -> "IdentityPlan":
        """One fake identity for a face seen many times (a video track): the donor and try that
        every view of it is rendered with (:meth:`render_planned`).

        ``views``: ``(image (H, W, 3) uint8, face, judged, colour)``, the first the one whose
        crop the donor is matched to (and to the judges' reading of the first judged views,
        :func:`read_track`); each face's crop transform is the one it will be rendered at;
        ``judged``: the face where the judges look at it, original and rendered (a track's
        unsmoothed geometry, as found in the frame: what a re-identifier finds); ``colour``:
        the colour statistics it will be rendered with (:meth:`render_planned`), or None.
        ``index`` seeds the choice (``face_rng(seed, key, index)``); ``avoid``: (M,) bool,
        donors not to use (e.g. other tracks'). With verification every view is rendered and
        judged at each try as :meth:`replace_many` judges an image's faces; the plan fails closed
        when a view is still matched after the last try; ``margin``: how much further below
        each judge's threshold every view must stay (the frames between the views vary around
        them); ``released``: what a rendered view goes through before it is judged, as the
        frames will be before anyone sees them (a video's encoder: :func:`~.videoio.as_encoded`;
        by default nothing); ``found``: per view, what gives its occluders (as
        :meth:`occluders`, e.g. filtered over a video's neighbouring frames) at its first render
        (by default found in the view); ``cover``: no donor is tried, every view is covered
        (status ``covered:<how>``: a mask with ``on_fail`` mask, else a blur, or a mask where a
        judge still matches the blur), for a face that may not be one (a video track the
        detector seldom confirmed); ``redo``: the face is anonymized again apart from another
        file's face of its person (:mod:`.unlink`), from try :data:`~.unlink.FROM_TRY` on,
        its donor chosen at every try on a first try's terms, as :meth:`replace_many` redoes a
        photo's face. Seconds per stage are added to ``timings``."""
        s = self.settings
        released = released or (lambda image: image)
        seen = ([i for i, (image, _, judged, _) in enumerate(views)
                 if judgeable(judged, image.shape)] if self.panel is not None else [])
        bank = self.backend.bank
        identity, head = None, []
        frames = False
        exclude = None if avoid is None else avoid.copy()
        timings = {} if timings is None else timings
        for k in ("backend", "postprocess", "judge"):
            timings.setdefault(k, 0.0)
        if seen:  # the first views' originals now, the others' when they are first judged;
            # without verification only the first, which chooses the donor
            t0 = time.perf_counter()
            head = self.panel.embed_each([(views[i][0], [views[i][2]])
                                          for i in seen[:VIEW_CHUNK if s.verify else 1]],
                                         fast=not s.verify)
            identity, frames, close = read_track(
                self.panel, head, None if bank is None else bank.embeddings)
            if close is not None:
                exclude = close if exclude is None else exclude | close
            timings["judge"] += time.perf_counter() - t0
        prepared = []
        for i, (image, face, judged, colour) in enumerate(views):
            crop, lms = F.crop_face(image, face.crop), face.crop.to_crop(face.landmarks)
            prepared.append(_View(image, face, crop, lms, judged, colour, cache(partial(
                self._view_occluded, crop, lms, frames, None if found is None else found[i]))))
        judged = [prepared[i] for i in seen] if s.verify else []
        for view, rows in zip(judged, head):
            view.original = {j: e[0] for j, e in rows.items()}
        # per judge and view, what it gives the view with the face masked out (NaN: not needed)
        floor = {j: np.full(len(judged), np.nan) for j in self.panel.judges} if judged else {}
        if cover:
            return self._covered(IdentityPlan(index, None, 0, "", frames=frames), "covered",
                                 "mask" if s.on_fail == "mask" else "blur", judged, floor,
                                 released, margin)
        tries = s.tries if judged else 1
        lead = 0  # how many views first (the last try's matches) are judged on their own
        reading = self.backend.read(prepared[0].crop, prepared[0].lms, identity, s.verify)
        first = FROM_TRY if redo else 0
        last = first + tries - 1 if judged else None  # the try after which the track fails closed
        for attempt in range(first, first + tries):
            donor = self.backend.choose(reading, face_rng(s.seed, key, index), attempt, exclude,
                                        redo, last=attempt == last)
            plan = IdentityPlan(index, donor, attempt, "too_small" if s.verify else "replaced",
                                {}, frames=frames)
            if not judged:
                return plan
            for part in view_chunks(len(judged), lead):  # a try ends at its first match
                matched = self._judge_views(judged[part], floor, part, plan, key, margin,
                                            timings, released)
                if matched.any():
                    # the next try judges these views first: what one donor's face gives away
                    # there, the next one's often does too (the outcome does not depend on the
                    # order, only how soon a matched try ends)
                    hits = part.start + np.flatnonzero(matched)
                    lead = len(hits)
                    first = np.concatenate([hits, np.delete(np.arange(len(judged)), hits)])
                    judged = [judged[k] for k in first]
                    floor = {j: f[first] for j, f in floor.items()}
                    break
            plan.uninformative = {j: int((f >= self.panel.thresholds[j]).sum())
                                  for j, f in floor.items()}
            if not matched.any():
                plan.status = "verified"
                return plan
        if s.on_fail == "error":
            raise VerificationError(f"still matched after {s.tries} tries (" + ", ".join(
                f"{j} {v:.3f}" for j, v in plan.similarity.items()) + ")")
        return self._covered(plan, "fail_closed", s.on_fail, judged, floor, released, margin)

    def _covered(self, plan, why, how, judged, floor, released, margin) -> "IdentityPlan":
        """``plan`` with every view covered, status ``<why>:<how>``: a blur that a judge still
        matches on a ``judged`` view (:meth:`_still_matched`, beyond the ``floor`` known so
        far, within ``margin`` of its threshold as a try's views are) becomes a mask."""
        plan.status = f"{why}:{how}"
        known = {j: np.nan_to_num(f, nan=-1.0) for j, f in floor.items()}
        if how == "blur" and judged and self._still_matched(judged, plan, known, released,
                                                            margin):
            plan.status = f"{why}:mask"
        return plan

    def _judge_views(self, views, floor, part, plan, key, margin, timings, released
                     ) -> np.ndarray:
        """Render ``plan`` on ``views`` and judge them, as ``released`` gives them back, against
        their originals (:meth:`_originals`), one judge after another in
        :data:`~.verify.VERIFY_JUDGES` up to the first that matches a view beyond its floor:
        a try that fails ends there, so the costlier judge seldom runs on it. Where no judge
        matches a view at its place, it is judged where a re-identifier finds the face
        (:meth:`_views_found_again`). Fills the views' entries (``part`` of the track's) of a
        judge's ``floor`` where it matches and ``plan.similarity`` with each judge's highest
        similarity, at either place; (len(views),) bool: which views the matching judge
        matches beyond their floor (none: no judge matches)."""
        rendered = []
        for v in views:
            _, (anon, mask) = self._render(v.face, v.crop, v.lms, v.occluders(),
                                           face_rng(self.settings.seed, key, plan.index),
                                           plan.donor, plan.attempt, timings, v.colour)
            rendered.append((released(F.paste_faces(v.image, [v.face], [anon], [mask])),
                             [v.judged]))
        t0 = time.perf_counter()
        at = np.arange(part.start, part.start + len(views))
        scored = {}
        for j in self.panel.judges:
            matched, scored[j] = self._judge_views_at(views, rendered, j, floor, at, plan,
                                                      margin)
            if matched.any():
                break
        else:
            matched = self._views_found_again(views, rendered, scored, floor, at, plan, margin)
        timings["judge"] += time.perf_counter() - t0
        return matched

    def _judge_views_at(self, views, rendered, judge, floor, at, plan, margin,
                        rows: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """For :meth:`_judge_views`: ``judge``'s similarity of each of ``views`` rendered
        (``rendered``: ``(image, [face])`` where it looks, at the place or found again; ``rows``:
        those of ``views`` they are, default all) to its original, raising
        ``plan.similarity``; its ``floor`` (the view ``at`` there) filled where it matches;
        (len(rendered),) bool, which it matches beyond their floor, and the similarities."""
        rows = np.arange(len(views)) if rows is None else np.asarray(rows, int)
        original = {judge: self._originals([views[k] for k in rows], judge)}
        sims = self.panel.score(original, rendered, margin)
        plan.similarity[judge] = max(plan.similarity.get(judge, -1.0), float(sims[judge].max()))
        hit = self.panel.matched(sims, margin=margin) & np.isnan(floor[judge][at[rows]])
        if hit.any():
            floor[judge][at[rows[hit]]] = self._floor([views[k] for k in rows[hit]],
                                                      {judge: original[judge][hit]})[judge]
        return self.panel.matched(sims, {judge: np.nan_to_num(floor[judge][at[rows]], nan=-1.0)},
                                  margin), sims[judge]

    def _views_found_again(self, views, rendered, scored, floor, at, plan, margin
                           ) -> np.ndarray:
        """For :meth:`_judge_views`, once no judge matches a view at its place: the views a
        judge scored there (``scored``: ``{judge: (len(views),)}``) within
        :data:`~.verify.FOUND_BAND` of its line less ``margin`` judged again by that judge
        where a re-identifier finds the face in the rendered view, as :meth:`_judge` judges a
        photo's faces (the pipeline's detector run again, :meth:`_detect_again`, and dlib's
        landmarks found there), one judge after another up to the first that matches;
        (len(views),) bool: which it matches there beyond their floor."""
        near = self.panel.near(scored, margin=margin)
        look = np.flatnonzero(np.any(list(near.values()), axis=0))
        matched = np.zeros(len(views), bool)
        if not len(look):
            return matched
        images = [rendered[k][0] for k in look]
        faces = [[views[k].judged] for k in look]
        found = {k: found_again(image, fs, boxes)[0][0] for k, image, fs, boxes
                 in zip(look, images, faces, self._detect_again(images, faces))}
        for j in self.panel.judges:
            rows = [k for k in look if near[j][k]]
            if rows:
                matched[rows] = self._judge_views_at(
                    views, [(rendered[k][0], [found[k]]) for k in rows], j, floor, at, plan,
                    margin, rows)[0]
                if matched.any():
                    break
        return matched

    def _still_matched(self, views, plan, floor, released, margin) -> bool:
        """Whether a judge still matches a view blurred as ``plan`` covers it, as ``released``
        gives it back (beyond what it gives the face masked out, within ``margin`` of its
        threshold): a blur keeps the head's outline and colours, which dlib sometimes still
        matches; the plan then masks instead. Judged one judge after another
        (:data:`~.verify.VERIFY_JUDGES`), each over the views :data:`VIEW_CHUNK` at a time, up
        to the first match; each chunk is blurred once."""

        @cache
        def blurred(start: int, stop: int) -> list:  # (a slice is not hashable in 3.11)
            covered = []
            for v in views[start:stop]:
                _, record = self._target(v.face, v.lms, plan.donor, plan.attempt)
                patch, mask = self._cover(v.face, v.crop, v.lms, record.anonymized, "blur",
                                          v.judged)
                covered.append((released(F.paste_faces(v.image, [v.face], [patch], [mask])),
                                [v.judged]))
            return covered

        for j in self.panel.judges:
            for part in view_chunks(len(views)):
                sims = self.panel.score({j: self._originals(views[part], j)},
                                        blurred(part.start, part.stop))
                if self.panel.matched(sims, {j: floor[j][part]}, margin).any():
                    return True
        return False

    def _originals(self, views: list[_View], judge: str) -> np.ndarray:
        """(len(views), D): each view's :attr:`_View.original` by ``judge``, embedding those
        not embedded yet in one pass."""
        todo = [v for v in views if judge not in v.original]
        if todo:
            rows = self.panel.embed_each([(v.image, [v.judged]) for v in todo], (judge,))
            for v, e in zip(todo, rows):
                v.original[judge] = e[judge][0]
        return np.stack([v.original[judge] for v in views])

    def _floor(self, views, original) -> dict[str, np.ndarray]:
        """:meth:`~.verify.Verifier.floor` of the views (:class:`_View`), where judged."""
        return self.panel.floor([(v.image, v.judged) for v in views], original,
                                self.settings.feather)

    def render_planned(self, image: np.ndarray, faces: list[F.Face], plans: list["IdentityPlan"],
                       key: str, stats: list[np.ndarray] | None = None,
                       judged: list[F.Face] | None = None,
                       found: list[np.ndarray | None] | None = None
                       ) -> tuple[np.ndarray, list[F.Face], dict[str, float]]:
        """Replace ``faces`` of an (H, W, 3) uint8 image, each as its plan says (its donor and
        try, or covered), with no choice or verification of its own. ``stats``: per face,
        the colour statistics to transfer (:func:`~.photometric.color_stats`, e.g. smoothed
        along a track) or None; ``judged``: per face, where the judges found it (as its plan's
        views, :meth:`plan_identity`), which a fail-closed cover covers too; ``found``: per
        face, what crosses it (as :meth:`occluders` finds, e.g. filtered over a video's
        neighbouring frames), or None to find it here. Returns the new image, each face at its
        new geometry and seconds per stage."""
        s = self.settings
        timings = {"occluders": 0.0, "backend": 0.0, "postprocess": 0.0}
        pasted, moved = [], []
        none = [None] * len(faces)
        for face, plan, colour, seen, crossing in zip(faces, plans, stats or none,
                                                      judged or none, found or none):
            crop = F.crop_face(image, face.crop)
            lms = face.crop.to_crop(face.landmarks)
            if plan.covered:  # at the geometry of its last try
                _, record = self._target(face, lms, plan.donor, plan.attempt)
                rendered = self._cover(face, crop, lms, record.anonymized,
                                       plan.status.split(":")[1], seen)
            else:
                t0 = time.perf_counter()
                occluded = self._occluded(crop, lms, plan.frames, crossing)
                timings["occluders"] += time.perf_counter() - t0
                record, rendered = self._render(face, crop, lms, occluded,
                                                face_rng(s.seed, key, plan.index), plan.donor,
                                                plan.attempt, timings, colour)
            pasted.append(rendered)
            moved.append(record.anonymized)
        out = F.paste_faces(image, faces, [p[0] for p in pasted], [p[1] for p in pasted])
        return out, moved, timings

    def _detect_again(self, images: list[np.ndarray], faces: list[list[F.Face]]
                      ) -> list[np.ndarray]:
        """(B, 4) boxes of the pipeline's detector in each image, looking only for faces of at
        least half the size of the smallest of its ``faces`` (:func:`~.faces.pyramid_min_size`:
        those are found in the same boxes), the images of one such size batched."""
        s = self.settings
        sizes = [F.pyramid_min_size(min(F.box_side(f.box) for f in fs), s.min_face_size)
                 for fs in faces]
        boxes: list[np.ndarray] = [np.zeros((0, 4))] * len(images)
        for size in set(sizes):
            at = [k for k, z in enumerate(sizes) if z == size]
            for k, (b, _) in zip(at, F.detect_boxes([images[k] for k in at], s.detector,
                                                    s.threshold, size, s.device)):
                boxes[k] = b
        return boxes

    def _score_found_again(self, states: list[_Replacing], images: list[np.ndarray],
                           scored: list[dict[str, np.ndarray]], matched: list[np.ndarray]
                           ) -> bool:
        """For :meth:`_judge`: judge the faces ``todo`` of each state that no judge matches at
        their place (``matched``) again where a re-identifier finds them in its released
        ``images[k]`` (:func:`~.metrics.detection.found_again`: the pipeline's detector run
        again, :meth:`_detect_again`, and dlib's landmarks found there), by each judge whose
        similarity in ``scored[k]`` (``{judge: (len(todo),)}``) is within
        :data:`~.verify.FOUND_BAND` of its line, and raise ``scored`` in place to the higher of
        the two; whether any face was judged again."""
        near = [{j: v & ~m for j, v in self.panel.near(sims, st.released is not None).items()}
                for st, sims, m in zip(states, scored, matched)]
        again = [np.flatnonzero(np.any(list(n.values()), axis=0)) for n in near]
        look = [k for k, rows in enumerate(again) if len(rows)]
        if not look:
            return False
        faces = [[states[k].faces[states[k].todo[r]] for r in again[k]] for k in look]
        found = {k: dict(zip(again[k], found_again(images[k], fs, boxes)[0]))
                 for k, fs, boxes in zip(look, faces, self._detect_again(
                     [images[k] for k in look], faces))}
        for j in self.panel.judges:
            rows = {k: np.flatnonzero(near[k][j]) for k in look}
            rows = {k: r for k, r in rows.items() if len(r)}
            if not rows:
                continue
            sims = split_rows(self.panel.score(
                {j: np.concatenate([states[k].original[j][np.asarray(states[k].todo)[r]]
                                    for k, r in rows.items()])},
                [(images[k], [found[k][i] for i in r]) for k, r in rows.items()]),
                [len(r) for r in rows.values()])
            for (k, r), v in zip(rows.items(), sims):
                scored[k][j][r] = np.maximum(scored[k][j][r], v[j])
        return True

    def _judge(self, states: list[_Replacing], every: bool = False) -> list[np.ndarray]:
        """Score each state's faces ``todo`` in its output, as it is released, against their
        originals, all states in one pass per judge: at the original face's place, one judge
        after another in :data:`~.verify.VERIFY_JUDGES`, each on the faces no judge before it
        matched (such a face is tried again, or fails closed, whatever the others say), or with
        ``every`` on all of them; then, for a face no judge matches there, where a
        re-identifier finds it in the output (:meth:`_score_found_again`), as the metrics
        suite's ``reid_far_<judge>`` and ``reid_far_found_<judge>`` do. Record each judge's
        highest similarity of the two (NaN for a judge that did not score the face); per state,
        (len(todo),) bool: which a judge still matches at either place."""
        if not states:
            return []
        t0 = time.perf_counter()
        images = [st.released(st.out) if st.released else st.out for st in states]
        scored = [{} for _ in states]
        unmatched = [np.ones(len(st.todo), bool) for st in states]
        for j in self.panel.judges:
            rows = [np.flatnonzero(o | every) for o in unmatched]
            sims, embedded = self.panel.score_embedded(
                {j: np.concatenate([st.original[j][np.asarray(st.todo, int)[r]]
                                    for st, r in zip(states, rows)])},
                [(image, [st.faces[st.todo[i]] for i in r])
                 for image, st, r in zip(images, states, rows)])
            counts = [len(r) for r in rows]
            for k, (st, r, v, e) in enumerate(zip(states, rows, split_rows(sims, counts),
                                                  split_rows(embedded, counts))):
                scored[k][j] = np.full(len(st.todo), np.nan)
                scored[k][j][r] = v[j]
                st.anonymized[j][np.asarray(st.todo, int)[r]] = e[j]
                unmatched[k] &= ~self.panel.matched({j: scored[k][j]},
                                                written=st.released is not None)
        matched = [~o for o in unmatched]
        if self._score_found_again(states, images, scored, matched):
            matched = [self.panel.matched(sims, written=st.released is not None)
                       for st, sims in zip(states, scored)]
        for st, sims in zip(states, scored):
            for k, i in enumerate(st.todo):
                st.records[i].similarity = {j: float(v[k]) for j, v in sims.items()}
                st.judged_at[i] = st.pastes
        _share_judging(states, time.perf_counter() - t0, [len(st.todo) for st in states])
        return matched
