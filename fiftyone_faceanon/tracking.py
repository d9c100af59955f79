"""Faces over time: tracks that follow each face through a video, with no frame left out.

Stage 1 of the pipeline for videos (:mod:`.video`). Frames are RGB (H, W, 3) uint8; boxes are
(4,) ``x0, y0, x1, y1`` and landmarks (68, 2) in pixels, as in :mod:`.faces`.

:func:`track_faces` runs the detector on every ``detect_every``-th frame and follows each face
in between with dlib's 68-point predictor (*landmark tracking*): the face's box is moved to where
its velocity predicts, the landmarks are predicted in it, and the box is carried along by the
similarity between the previous and the new landmarks (:func:`~.pipeline.moved_box`). On a
detection frame, detections are linked to tracks by box IoU (an optimal assignment); an
unmatched detection starts a track, which is also followed *backwards* through the last frames,
so a face the detector found late is replaced from its first frame.

A face that cannot be followed (its landmarks leave the frame, its scale jumps) is coasted at
constant velocity. If a detection picks it up again within ``patience`` frames, the frames in
between are filled by linear interpolation of its neighbours; otherwise the track ends and its
last ``extend`` coasted frames are kept (extrapolated). A track that is followed but no longer
detected ends after ``patience`` frames. Every face so found is replaced by the video stage: a
detector that blinks for a few frames leaves no original face on screen.

:func:`smooth_track` then filters each track's landmarks and boxes with the One-Euro filter
(:func:`one_euro`; Casiez, Roussel and Vogel, CHI 2012), so the pasted face does not jitter.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, NamedTuple

import numpy as np

from . import faces as F

#: Where a face of a track comes from, in order of trust.
SOURCES = ("detected", "tracked", "interpolated", "extrapolated")


@dataclass(frozen=True)
class TrackSettings:
    """How faces are found and followed (:func:`track_faces`) and smoothed (:func:`smooth_track`).

    ``detect_every``: the detector runs on frames ``0, k, 2k, ...`` (1: every frame);
    ``iou``: least box IoU that links a detection to a track (a smaller detection centred in a
    followed face is a part of it, not a new track); ``patience``: frames a track lives on
    without a detection (followed or coasted); ``backfill``: frames a new track is followed
    back before its first detection; ``extend``: coasted frames kept at a track's end;
    ``min_visible``: least share of a followed face's landmarks inside the frame;
    ``max_zoom``: largest frame-to-frame scale change of a followed face; ``min_cutoff``
    (Hz), ``beta`` (per inter-ocular distance per second) and ``d_cutoff`` (Hz): the One-Euro
    filter's parameters; ``cut_difference`` and ``cut_histogram``: the shot-cut test
    (:func:`shot_cut`)."""

    detect_every: int = 5
    iou: float = 0.3
    patience: int = 30
    backfill: int = 30
    extend: int = 3
    min_visible: float = 0.2
    max_zoom: float = 1.25
    min_cutoff: float = 1.0
    beta: float = 0.5
    d_cutoff: float = 1.0
    cut_difference: float = 20.0
    cut_histogram: float = 0.1


#: the share of a face's box inside the frame that counts it as in view (:func:`detected_share`)
IN_VIEW = 0.85


@dataclass
class TrackedFace:
    """One face of a track in one frame: box (4,), landmarks (68, 2), detector score (the last
    detection's for followed faces) and ``source`` (:data:`SOURCES`)."""

    box: np.ndarray
    landmarks: np.ndarray
    score: float
    source: str


@dataclass
class Track:
    """A face followed through a video: ``faces`` by frame index, contiguous from
    :attr:`first` to :attr:`last`."""

    id: int
    faces: dict[int, TrackedFace] = field(default_factory=dict)
    last_detected: int = -1
    #: the face was in view before its first frame but could not be followed there
    lost_start: bool = False
    #: the first frame of the shot the track is in
    shot: int = 0

    @property
    def first(self) -> int:
        return min(self.faces)

    @property
    def last(self) -> int:
        return max(self.faces)

    def velocity(self, t: int) -> np.ndarray:
        """(4,) box motion per frame at frame ``t`` (from ``t - 1``; zero without it)."""
        if t - 1 in self.faces and t in self.faces:
            return self.faces[t].box - self.faces[t - 1].box
        return np.zeros(4)


def _area(box) -> float:
    return max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0)


def part_of(box: np.ndarray, other: np.ndarray) -> bool:
    """Whether the (4,) ``box`` is smaller than ``other`` with its centre inside it: a face
    there would be behind ``other`` with its centre hidden, so what the detector found is a
    part of ``other`` (on a profile MTCNN also finds a small "face" at the eye and temple)."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return (_area(box) < _area(other) and other[0] <= cx <= other[2]
            and other[1] <= cy <= other[3])


def _visible(landmarks: np.ndarray, shape: tuple[int, ...]) -> float:
    h, w = shape[:2]
    inside = ((landmarks[:, 0] >= 0) & (landmarks[:, 0] < w) & (landmarks[:, 1] >= 0)
              & (landmarks[:, 1] < h))
    return float(inside.mean())


class Frame(NamedTuple):
    """A frame as tracking reads it: ``rgb`` (H, W, 3) uint8 and its ``gray`` (H, W) uint8,
    converted once for every track that follows a face through it."""

    rgb: np.ndarray
    gray: np.ndarray

    @classmethod
    def of(cls, rgb: np.ndarray) -> "Frame":
        import cv2

        return cls(rgb, cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))


def follow(previous: Frame, frame: Frame, face: TrackedFace,
           settings: TrackSettings) -> TrackedFace | None:
    """The face of frame ``previous`` followed into ``frame``: its 68
    landmarks are carried by pyramidal Lucas-Kanade optical flow, a similarity fitted to the
    carried points (RANSAC) moves its box, and dlib's predictor places the landmarks in the moved
    box (so the expression is measured, not carried). ``None`` when fewer than half the points
    could be carried, fewer than ``min_visible`` of the landmarks are inside the frame, or the
    face's scale changed by more than ``max_zoom``."""
    import cv2

    iod = float(np.linalg.norm(face.landmarks[36] - face.landmarks[45]))
    win = int(np.clip(iod / 2, 9, 41)) | 1
    pts = face.landmarks.astype(np.float32).reshape(-1, 1, 2)
    moved, ok, _ = cv2.calcOpticalFlowPyrLK(previous.gray, frame.gray, pts, None,
                                            winSize=(win, win), maxLevel=3)
    ok = ok.ravel().astype(bool)
    if ok.sum() < len(ok) / 2:
        return None
    sim, _ = cv2.estimateAffinePartial2D(pts[ok], moved[ok], method=cv2.RANSAC,
                                         ransacReprojThreshold=max(2.0, iod / 20))
    if sim is None:
        return None
    zoom = float(np.hypot(*sim[:, 0]))
    if not 1 / settings.max_zoom <= zoom <= settings.max_zoom:
        return None
    corners = np.array([[face.box[0], face.box[1], 1], [face.box[2], face.box[3], 1]]) @ sim.T
    box = np.concatenate([corners.min(0), corners.max(0)])
    lms = F.landmarks_68(frame.rgb, box)
    if _visible(lms, frame.rgb.shape) < settings.min_visible:
        return None
    return TrackedFace(box, lms, face.score, "tracked")


@dataclass(frozen=True)
class Thumbnail:
    """What :func:`shot_cut` compares of a frame: a 64 x 36 gray thumbnail (float32) and the
    frame's 8 x 8 x 8-bin RGB histogram, normalised to sum 1."""

    gray: np.ndarray
    histogram: np.ndarray


def thumbnail(frame: Frame) -> Thumbnail:
    """:class:`Thumbnail` of a frame."""
    import cv2

    small = cv2.resize(frame.gray, (64, 36), interpolation=cv2.INTER_AREA).astype(np.float32)
    hist = cv2.calcHist([frame.rgb], [0, 1, 2], None, [8, 8, 8], [0, 256] * 3).ravel()
    return Thumbnail(small, hist / max(float(hist.sum()), 1.0))


def shot_cut(a: Thumbnail, b: Thumbnail, settings: TrackSettings = TrackSettings()) -> bool:
    """Whether two consecutive frames are in different shots: their thumbnails differ by more
    than ``cut_difference`` grey levels on average *and* their histograms by more than
    ``cut_histogram`` (total variation). A pan or a zoom changes the first, a change of light
    the second; a cut changes both. (On the Hamilton clip the three cuts score 27.7-30.5 and
    0.16-0.37, every other pair at most 13.6 and 0.04.)"""
    return (float(np.abs(a.gray - b.gray).mean()) > settings.cut_difference
            and 0.5 * float(np.abs(a.histogram - b.histogram).sum()) > settings.cut_histogram)


def _interpolate(a: TrackedFace, b: TrackedFace, w: float) -> TrackedFace:
    return TrackedFace((1 - w) * a.box + w * b.box, (1 - w) * a.landmarks + w * b.landmarks,
                       min(a.score, b.score), "interpolated")


def _shifted(face: TrackedFace, velocity: np.ndarray, steps: int) -> TrackedFace:
    """``face`` moved ``steps`` frames at constant box ``velocity`` (4,): the landmarks follow
    the box's centre and scale."""
    box = face.box + steps * velocity
    zoom = max(box[2] - box[0], 1.0) / max(face.box[2] - face.box[0], 1.0)
    old, new = 0.5 * (face.box[:2] + face.box[2:]), 0.5 * (box[:2] + box[2:])
    return TrackedFace(box, new + zoom * (face.landmarks - old), face.score, "extrapolated")


def track_faces(
    frames: Iterable[np.ndarray],
    detect: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    settings: TrackSettings = TrackSettings(),
    on_frame: Callable[[int], None] | None = None,
    pool: Executor | None = None,
    ahead: int = 1,
) -> list[Track]:
    """Every face of a video as tracks, ordered by first frame (module docstring).

    ``frames``: the video's RGB frames in order; ``detect(frame)``: ``(boxes (F, 4), scores
    (F,))``; ``on_frame(t)`` is called after each frame. With a ``pool``, the detector runs
    there on each ``detect_every``-th frame, on ``ahead`` such frames at once, while the frames
    before them are followed (the same tracks: only where the detector runs changes). Track ids
    count from 0 in order of birth.
    """
    s = settings
    recent: deque[Frame] = deque(maxlen=s.backfill + 1)  # frames up to the previous one
    active: list[Track] = []
    done: list[Track] = []
    coasting: dict[int, int] = {}  # track id -> frames coasted since its last face
    next_id = 0
    t = -1
    previous, shot = None, 0
    for t, (rgb, detecting) in enumerate(_read_ahead(frames, detect, s.detect_every, pool,
                                                     ahead)):
        frame = Frame.of(rgb)
        thumb = thumbnail(frame)
        cut = previous is not None and shot_cut(previous, thumb, s)
        previous = thumb
        if cut:  # a new shot: every track ends, nothing is followed or filled across
            done += [_finish(tr, coasting.pop(tr.id, 0), t - 1, s) for tr in active]
            active, recent, shot = [], deque(maxlen=s.backfill + 1), t
        for tr in active:
            if t - 1 in tr.faces and tr.id not in coasting:
                moved = follow(recent[-1], frame, tr.faces[t - 1], s)
                if moved is not None:
                    tr.faces[t] = moved
                    continue
            coasting[tr.id] = coasting.get(tr.id, 0) + 1
        if detection_frame(t, s.detect_every, shot):
            boxes, scores = detecting.result() if detecting else detect(rgb)
            next_id = _link(frame, t, boxes, scores, active, coasting, recent, next_id, shot,
                            s)
        for tr in list(active):
            gone = t - tr.last_detected >= s.patience
            if gone and (tr.id in coasting or t % s.detect_every == 0):
                active.remove(tr)
                done.append(_finish(tr, coasting.pop(tr.id, 0), t, s))
        if on_frame:
            on_frame(t)
        recent.append(frame)
    n = t + 1
    done += [_finish(tr, coasting.pop(tr.id, 0), n - 1, s) for tr in active]
    for tr in done:  # extrapolation never reaches past the video or across a cut
        tr.faces = {k: v for k, v in tr.faces.items() if tr.shot <= k < n}
    return sorted((tr for tr in done if tr.faces), key=lambda tr: (tr.first, tr.id))


def detection_frame(t: int, every: int, shot: int) -> bool:
    """Whether :func:`track_faces` runs the detector on frame ``t``: every ``every``-th frame,
    and the first frame of a shot (``shot``, the frame the shot of ``t`` began)."""
    return t % every == 0 or t == shot


def _read_ahead(frames: Iterable[np.ndarray], detect, every: int, pool: Executor | None,
                ahead: int = 1) -> Iterator[tuple[np.ndarray, Future | None]]:
    """``(frame, its detections)`` in order: with a ``pool``, a future of ``detect(frame)`` for
    every ``every``-th frame, submitted ``ahead * every`` frames before the frame is handed on
    (so ``ahead`` detections run at once); otherwise None."""
    if pool is None:
        yield from ((rgb, None) for rgb in frames)
        return
    waiting: deque = deque()
    for t, rgb in enumerate(frames):
        waiting.append((rgb, pool.submit(detect, rgb) if t % every == 0 else None))
        if len(waiting) > ahead * every:
            yield waiting.popleft()
    yield from waiting


def _link(frame, t, boxes, scores, active, coasting, recent, next_id, shot, s) -> int:
    """Link detections of frame ``t`` to the active tracks (optimal assignment on IoU with each
    track's face at ``t`` or its coasted prediction); start tracks (in the shot that began at
    frame ``shot``) for the rest. Returns the next free track id."""
    from scipy.optimize import linear_sum_assignment

    predicted = np.array([
        tr.faces[t].box if t in tr.faces
        else _shifted(tr.faces[tr.last], tr.velocity(tr.last), t - tr.last).box
        for tr in active]).reshape(-1, 4)
    iou = F.box_iou(boxes, predicted)
    rows, cols = linear_sum_assignment(-iou) if iou.size else ([], [])
    matched = set()
    for d, k in zip(rows, cols):
        if iou[d, k] < s.iou:
            continue
        matched.add(d)
        tr = active[k]
        face = TrackedFace(np.asarray(boxes[d], float), F.landmarks_68(frame.rgb, boxes[d]),
                           float(scores[d]), "detected")
        if tr.id in coasting:  # picked up again: fill the gap
            last = tr.last
            for g in range(last + 1, t):
                tr.faces[g] = _interpolate(tr.faces[last], face, (g - last) / (t - last))
            del coasting[tr.id]
        tr.faces[t] = face
        tr.last_detected = t
    # the largest first, so that a detection inside a face found in the same frame meets it
    for d in sorted(set(range(len(boxes))) - matched, key=lambda d: -_area(boxes[d])):
        box = np.asarray(boxes[d], float)
        if any(t in tr.faces and (F.box_iou(box, tr.faces[t].box)[0, 0] >= s.iou
                                  or part_of(box, tr.faces[t].box))
               for tr in active):
            continue  # a second detection of a face already followed, or a part of it
        tr = Track(next_id, {t: TrackedFace(box, F.landmarks_68(frame.rgb, box), float(scores[d]),
                                            "detected")}, t, shot=shot)
        next_id += 1
        _backfill(tr, t, frame, recent, active, s)
        active.append(tr)
    return next_id


def _backfill(tr: Track, t: int, frame: Frame, recent: deque, active: list[Track],
              s: TrackSettings) -> None:
    """Follow a new track backwards through the ``recent`` frames before ``t``, stopping where
    it meets another track's face or cannot be followed (then :attr:`Track.lost_start`)."""
    face, later = tr.faces[t], frame
    for back, earlier in enumerate(list(reversed(recent))[:s.backfill], 1):
        g = t - back
        moved = follow(later, earlier, face, s)
        if moved is None:
            tr.lost_start = True
            return
        if any(g in o.faces and F.box_iou(moved.box, o.faces[g].box)[0, 0] >= s.iou
               for o in active):
            return
        tr.faces[g], face, later = moved, moved, earlier


def _finish(tr: Track, coasted: int, t: int, s: TrackSettings) -> Track:
    """End a track at frame ``t``: when it was coasting, keep up to ``extend`` frames past its
    last face at constant velocity; when it could not be followed back to its start, the same
    before its first face."""
    if coasted:
        last, v = tr.last, tr.velocity(tr.last)
        for g in range(1, min(s.extend, t - last) + 1):
            tr.faces[last + g] = _shifted(tr.faces[last], v, g)
    if tr.lost_start:
        first = tr.first
        v = tr.velocity(first + 1)
        for g in range(1, s.extend + 1):
            tr.faces[first - g] = _shifted(tr.faces[first], -v, g)
    return tr


def detected_share(track: Track, every: int, shape: tuple[int, ...]) -> float:
    """The share of a track's chances on which the detector found its face: about 1 for a
    face, low for a false detection that the tracker followed back and on (a hand, a patch of
    hair). A chance is a frame of its life on which the detector ran (:func:`detection_frame`)
    where the face was found, or was in view: :data:`IN_VIEW` of its box inside the (H, W)
    frame ``shape`` (the detector misses a face leaving the frame, and those frames do not
    count)."""
    def chance(t: int) -> bool:
        face = track.faces[t]
        return face.source == "detected" or (
            detection_frame(t, every, track.shot) and F.in_view(face.box, shape) >= IN_VIEW)

    chances = [t for t in track.faces if chance(t)]
    return sum(track.faces[t].source == "detected" for t in chances) / max(len(chances), 1)


def one_euro(x: np.ndarray, rate: float, min_cutoff: float = 1.0, beta: float = 0.5,
             d_cutoff: float = 1.0) -> np.ndarray:
    """The One-Euro filter along axis 0 of ``x`` (T, D) sampled at ``rate`` Hz: an exponential
    smoother whose cutoff ``f_c = min_cutoff + beta |dx/dt|`` rises with the (smoothed) speed,
    so slow motion is smoothed hard (no jitter) and fast motion is followed (little lag).

    ``alpha(f_c) = 1 / (1 + rate / (2 pi f_c))``; ``x_hat_t = alpha x_t + (1 - alpha) x_hat_{t-1}``.
    Returns (T, D) float64.
    """
    x = np.asarray(x, np.float64)
    out = np.empty_like(x)
    if len(x) == 0:
        return out

    def alpha(cutoff):
        return 1.0 / (1.0 + rate / (2 * np.pi * cutoff))

    out[0] = x[0]
    dx = np.zeros(x.shape[1:])
    for t in range(1, len(x)):
        dx = alpha(d_cutoff) * (x[t] - x[t - 1]) * rate + (1 - alpha(d_cutoff)) * dx
        a = alpha(min_cutoff + beta * np.abs(dx))
        out[t] = a * x[t] + (1 - a) * out[t - 1]
    return out


def smooth_track(track: Track, rate: float, settings: TrackSettings = TrackSettings()) -> Track:
    """The track with its landmarks and boxes One-Euro filtered (:func:`one_euro`) forwards and
    then backwards, in units of the track's median inter-ocular distance so that the parameters
    do not depend on the face's size. The whole track is known, so the two passes cancel each
    other's lag: a face moving at constant speed is not left behind (a forward pass alone lags a
    pan by several pixels, and the new face would slide off the head). A new :class:`Track`;
    sources and scores kept."""
    frames = sorted(track.faces)
    lms = np.stack([track.faces[t].landmarks for t in frames])  # (T, 68, 2)
    boxes = np.stack([track.faces[t].box for t in frames])  # (T, 4)
    iod = float(np.median(np.linalg.norm(lms[:, 36] - lms[:, 45], axis=1))) or 1.0
    flat = np.concatenate([lms.reshape(len(frames), -1), boxes], 1) / iod
    params = (rate, settings.min_cutoff, settings.beta, settings.d_cutoff)
    out = one_euro(one_euro(flat, *params)[::-1], *params)[::-1] * iod
    faces = {t: TrackedFace(out[i, 136:], out[i, :136].reshape(68, 2), track.faces[t].score,
                            track.faces[t].source) for i, t in enumerate(frames)}
    return Track(track.id, faces, track.last_detected, track.lost_start, track.shot)
