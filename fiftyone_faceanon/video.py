"""Videos: every face replaced in every frame, one stable fake identity per person.

The image pipeline (:class:`~.pipeline.Pipeline`) run on a video in four steps: three passes
over its frames, with the plan between the second and the third (decoding a frame costs a few
milliseconds, detecting faces in it a hundred):

1. **Track** (:func:`~.tracking.track_faces`): detection on every ``detect_every``-th frame,
   landmark tracking in between and backwards from each new face, interpolation over short
   misses, extrapolation at the ends; each track's landmarks and boxes are then One-Euro
   smoothed (:func:`~.tracking.smooth_track`).
2. **Colours and views**: each track's colour statistics on every frame, smoothed along the
   track (:class:`~.photometric.StatsFilter`), and the frames of it the judges check: its
   largest detected face first, then frames spread over its life (``samples`` in all).
3. **Plan** (:meth:`~.pipeline.Pipeline.plan_identity`): one identity per track, chosen on the
   track's largest detected face and, with verification, judged on every view as it will be
   rendered (smoothed geometry and colours) and encoded (:func:`~.videoio.as_encoded`: the
   encoder takes away much of a small donor face's detail) where a re-identifier finds it (the
   track's unsmoothed geometry); retried with the next donor and a stronger geometry, and
   fail-closed for the whole track when still matched. No donor is used by two tracks of one video.
   A track the detector seldom confirmed (:data:`DOUBTFUL`) is covered with no donor tried.
4. **Render** (:meth:`~.pipeline.Pipeline.render_planned`): every frame's faces at their
   smoothed geometry, at a crop size fixed per track, with the smoothed colour statistics and
   the occluders filtered in time (:class:`_Occluders`, which the plan's views share),
   encoded by :class:`~.videoio.VideoWriter` (same size, rate and frame count; audio copied; no
   metadata of the source).
"""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np

from . import faces as F
from .parallel import in_order
from .photometric import StatsFilter, color_stats
from .pipeline import IdentityPlan, Pipeline
from .tracking import Track, TrackSettings, detected_share, smooth_track, track_faces
from .verify import judgeable
from .videoio import (VideoInfo, VideoWriter, as_encoded, codec_for, probe, read_frames,
                      read_some_frames)


#: How much further below each judge's verification threshold the judged frames of a track must
#: stay: the frames between them vary around them (on the Hamilton clip, dlib's similarity
#: moves by 0.02-0.04 between frames of one track).
VIDEO_MARGIN = {"facenet_casia": 0.05, "dlib": 0.015}

#: A track that the detector found on fewer than this share of its chances (the detection
#: frames of its life where it was in view: :func:`~.tracking.detected_share`) is covered
#: (blurred) rather than given a donor face: on the Hamilton clip such tracks (1 of 7, 8 and 12)
#: are MTCNN's false faces on a hand holding a microphone, in the singer's hair and in the dark
#: between two heads, which the tracker followed for 35-60 frames and a donor face drawn there
#: shows, and a face half hidden behind another head (1 of 7); every other track of the
#: Hamilton clip and the test clips was found on all of its chances.
DOUBTFUL = 0.5


@dataclass(frozen=True)
class VideoSettings:
    """What decides a video's output besides the pipeline's :class:`~.pipeline.Settings`:
    tracking, how many frames of each track the judges check (``samples``), and the encoding
    (``quality``: the encoder's CRF, lower is better; ``strip_audio``)."""

    tracking: TrackSettings = field(default_factory=TrackSettings)
    #: 12 judged frames let a frame between two of them leak on the Hamilton clip (docs/video.md)
    samples: int = 24
    quality: int = 23
    strip_audio: bool = False


@dataclass
class FrameFace:
    """One face of one frame: its ``track`` id, the ``original`` (as tracked: raw landmarks),
    the geometry it was rendered at (``anonymized``), and the track face's ``source``."""

    track: int
    original: F.Face
    anonymized: F.Face
    source: str


@dataclass
class VideoResult:
    """``info`` of the video, its smoothed ``tracks``, each track's :class:`IdentityPlan`, the
    faces of every frame and seconds per stage."""

    info: VideoInfo
    tracks: list[Track]
    plans: dict[int, IdentityPlan]
    frames: list[list[FrameFace]]
    timings: dict[str, float]

    @property
    def unverified(self) -> list[int]:
        """Track ids handled fail-closed."""
        return [t for t, p in self.plans.items() if p.status.startswith("fail_closed")]


Progress = Callable[[str, int, int], None]


def anonymize_video(pipeline: Pipeline, src: Path, dst: Path, key: str,
                    settings: VideoSettings = VideoSettings(),
                    progress: Progress | None = None, threads: int = 1,
                    unlink: dict[int, np.ndarray] | None = None) -> VideoResult:
    """Anonymize the video ``src`` into ``dst`` (written atomically) with ``pipeline``; ``key``
    (e.g. the file's relative path) seeds each track's identity with the pipeline's seed.
    ``progress(stage, done, total)`` is called per frame of the ``track`` and ``render`` passes;
    ``threads`` plan tracks and render frames concurrently (the output does not depend on it).
    ``unlink``: the tracks to anonymize again apart from other files' faces of their person
    (:mod:`.unlink`), ``{place in the video's tracks: (M,) bool}``, the bank's donors each
    must avoid; each is planned with ``redo`` (:meth:`~.pipeline.Pipeline.plan_identity`) and
    its plan lists them (``unlinked``). The tracks are found again as they were the first time
    (tracking does not depend on the identities), so a place names the same track.
    Raises :class:`~.videoio.VideoError` for a video that cannot be read."""
    start = time.perf_counter()
    info = probe(src)
    timings: dict[str, float] = {}
    raw = _track(pipeline, src, info, settings.tracking, timings, progress, threads)
    t0 = time.perf_counter()
    tracks = [smooth_track(tr, float(info.fps), settings.tracking) for tr in raw]
    sizes = {tr.id: _crop_size(pipeline, tr) for tr in tracks}
    timings["smooth"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    occluders = _Occluders(pipeline)
    colours, views, found = _colours_and_views(pipeline, src, info, raw, tracks, sizes,
                                               settings.samples, occluders, threads)
    timings["colours"] = time.perf_counter() - t0
    released = partial(as_encoded, codec=codec_for(dst), quality=settings.quality)
    doubtful = {tr.id for tr in tracks if detected_share(
        tr, settings.tracking.detect_every, (info.height, info.width)) < DOUBTFUL}
    redo = {tracks[k].id: avoid for k, avoid in (unlink or {}).items() if k < len(tracks)}
    plans = _plan(pipeline, key, tracks, views, found, doubtful, timings, threads, released,
                  redo)
    frames = _render(pipeline, src, dst, key, info, raw, tracks, plans, sizes, colours,
                     occluders, settings, timings, progress, threads)
    timings["total"] = time.perf_counter() - start
    return VideoResult(info, tracks, plans, frames, timings)


def _detector(pipeline: Pipeline):
    s = pipeline.settings
    return lambda frame: F.detect_boxes([frame], s.detector, s.threshold, s.min_face_size,
                                        s.device)[0]


def _track(pipeline, src, info, settings, timings, progress, threads) -> list[Track]:
    """The tracks of the video; with ``threads`` > 1 the detector runs in that many threads of
    its own, ahead of the frames being followed. ``timings``: ``track``, the pass's wall time
    (decoding, detecting and following); ``detect``, the detector's seconds within it."""
    detect = _detector(pipeline)
    spent: list[float] = []  # one per call: the threads do not add into one number

    def timed_detect(frame):
        t0 = time.perf_counter()
        found = detect(frame)
        spent.append(time.perf_counter() - t0)
        return found

    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) if threads > 1 else nullcontext() as pool:
        tracks = track_faces(read_frames(src), timed_detect, settings,
                             (lambda t: progress("track", t + 1, info.frames)) if progress
                             else None, pool, threads)
    timings["detect"] = sum(spent)
    timings["track"] = time.perf_counter() - t0
    return tracks


def _crop_size(pipeline: Pipeline, track: Track) -> int:
    """The crop side every face of a track is rendered at: the backend's, or for a backend that
    renders each face at its own resolution, the track's median face's (so the rendering does
    not change resolution, and look, from frame to frame)."""
    if pipeline.backend.crop_size is not None:
        return pipeline.backend.crop_size
    extent = np.median([np.ptp(f.landmarks, 0).max() for f in track.faces.values()])
    return F.crop_size_for(np.array([[0.0, 0.0], [extent, extent]]))


def _face(tracked, size: int) -> F.Face:
    return F.Face(tracked.box, tracked.score, tracked.landmarks,
                  F.crop_transform(tracked.landmarks, size))


def largest_face(track: Track) -> int:
    """The frame of a track's largest detected face (largest landmark extent; the earliest of
    equals), or of its largest face when none was detected: the face its donor is matched to
    and the one that stands for the person in a gallery."""
    detected = [t for t, f in track.faces.items() if f.source == "detected"] or list(track.faces)
    return max(detected, key=lambda t: (float(np.ptp(track.faces[t].landmarks, 0).max()), -t))


def _views(track: Track, samples: int) -> list[int]:
    """Frames of a track the judges check: its largest detected face first, then
    ``samples - 1`` frames spread evenly over its life (every frame of a short track; detected
    or not: a face the detector missed is judged too)."""
    first = largest_face(track)
    rest = [t for t in range(track.first, track.last + 1) if t != first]
    if len(rest) > samples - 1:
        rest = [rest[int(i)] for i in np.linspace(0, len(rest) - 1, samples - 1)]
    return [first] + rest


def _cutout(frame: np.ndarray, face: F.Face, judged: F.Face
            ) -> tuple[np.ndarray, F.Face, F.Face]:
    """The part of an (H, W, 3) frame that rendering and judging ``face`` read (its crop's
    extent and a tenth more on each side, inside the frame) and ``face`` and ``judged`` (the
    same face as tracked, unsmoothed) in its coordinates: what the plan keeps of a frame
    instead of the whole of it."""
    x0, y0, x1, y1 = face.crop.image_box()
    grow = 0.1 * (x1 - x0)
    h, w = frame.shape[:2]
    x0, y0 = max(int(x0 - grow), 0), max(int(y0 - grow), 0)
    x1, y1 = min(int(np.ceil(x1 + grow)), w), min(int(np.ceil(y1 + grow)), h)
    shift = np.array([x0, y0], np.float64)

    def moved(f: F.Face) -> F.Face:
        lms = f.landmarks - shift
        return F.Face(f.box - np.tile(shift, 2), f.score, lms,
                      F.crop_transform(lms, f.crop.size))

    return np.ascontiguousarray(frame[y0:y1, x0:x1]), moved(face), moved(judged)


class _Occluders:
    """What crosses each track's face on each frame (:meth:`~.pipeline.Pipeline.occluders`),
    found once whichever asks first, the plan (a view and its neighbours) or the render, and
    filtered over the frame and its two neighbours in the track (:func:`~.faces.majority_mask`):
    a hand or hair that the search misses on one frame, or finds on one frame only, does not
    blink in or out. A track's first and last frames keep what is found on them."""

    def __init__(self, pipeline: Pipeline):
        self.pipeline = pipeline
        self.found: dict[tuple[int, int], tuple[np.ndarray | None, F.CropTransform]] = {}

    def find(self, tid: int, t: int, crop: np.ndarray, lms: np.ndarray,
             transform: F.CropTransform) -> None:
        """Search track ``tid``'s (S, S, 3) ``crop`` of frame ``t`` (its (68, 2) crop-px
        ``lms``, taken with ``transform``), unless done already."""
        if (tid, t) not in self.found:
            self.found[tid, t] = (self.pipeline.occluders(crop, lms), transform)

    def steady(self, tid: int, t: int) -> np.ndarray | None:
        """The (S, S) mask of track ``tid`` on frame ``t`` filtered in time, from what
        :meth:`find` found on ``t`` and on its neighbours in the track."""
        before, (mask, at), after = (self.found.get((tid, s)) for s in (t - 1, t, t + 1))
        if mask is None or before is None or after is None:
            return mask
        return F.majority_mask([before[0], mask, after[0]], [before[1], at, after[1]], at)

    def view(self, tid: int, t: int,
             near: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, F.CropTransform]]
             ) -> np.ndarray | None:
        """:meth:`steady` of a planned view, its frame's and neighbours' crops in ``near``."""
        for s in (t - 1, t, t + 1):
            if (tid, s) in near:
                self.find(tid, s, *near[tid, s])
        return self.steady(tid, t)

    def forget(self, t: int, tids: list[int]) -> None:
        """Drop what was found on frame ``t`` for the tracks ``tids`` (the render is past it
        and past its next frame)."""
        for tid in tids:
            self.found.pop((tid, t), None)


def _colours_and_views(pipeline, src, info, raw, tracks, sizes, samples, occluders, threads
                       ) -> tuple[dict[tuple[int, int], np.ndarray], dict[int, list[tuple]],
                                  dict[int, list[Callable[[], np.ndarray | None]]]]:
    """One more pass over the frames: each track's colour statistics on every frame of it,
    smoothed in frame order (:class:`~.photometric.StatsFilter`), by ``(track, frame)``; and
    each track's views for :meth:`~.pipeline.Pipeline.plan_identity` (:func:`_views`: cut out
    with :func:`_cutout`, judged at the ``raw`` geometry, with those statistics) with what
    gives their occluders (``occluders``, :meth:`_Occluders.view`: the crops of each view's
    frame and its neighbours are kept for it), so that the plan judges the faces as they will
    be rendered. The faces of ``threads`` frames are cut out and measured at once."""
    order = {tr.id: _views(tr, samples) for tr in tracks}
    present: dict[int, list[Track]] = {}
    for tr in tracks:
        for t in tr.faces:
            present.setdefault(t, []).append(tr)
    unsmoothed = {tr.id: tr for tr in raw}
    filters = {tr.id: StatsFilter(float(info.fps)) for tr in tracks}
    colours: dict[tuple[int, int], np.ndarray] = {}
    viewed = {(tid, t) for tid, frames in order.items() for t in frames}
    cut: dict[tuple[int, int], tuple] = {}
    near: dict[tuple[int, int], tuple] = {}

    def measured(t: int, frame: np.ndarray) -> list[tuple]:
        """Each face of frame ``t``: its track, face, crop, crop landmarks and colours."""
        faces = []
        for tr in present[t]:
            face = _face(tr.faces[t], sizes[tr.id])
            crop, lms = F.crop_face(frame, face.crop), face.crop.to_crop(face.landmarks)
            faces.append((tr, face, crop, lms, _colour_stats(pipeline, crop, lms)))
        return faces

    with ThreadPoolExecutor(threads) as pool:
        for (t, frame), faces in in_order(pool, measured, read_some_frames(src, present),
                                          2 * threads):
            for tr, face, crop, lms, stats in faces:
                colours[tr.id, t] = filters[tr.id](stats)
                if {(tr.id, t - 1), (tr.id, t), (tr.id, t + 1)} & viewed:
                    near[tr.id, t] = (crop, lms, face.crop)
                if (tr.id, t) in viewed:
                    cut[tr.id, t] = (*_cutout(frame, face, _face(unsmoothed[tr.id].faces[t],
                                                                  sizes[tr.id])),
                                     colours[tr.id, t])
    return (colours, {tid: [cut[tid, t] for t in frames] for tid, frames in order.items()},
            {tid: [partial(occluders.view, tid, t, near) for t in frames]
             for tid, frames in order.items()})


def _colour_stats(pipeline: Pipeline, crop: np.ndarray, lms: np.ndarray) -> np.ndarray:
    """:func:`~.photometric.color_stats` of the face region of an (S, S, 3) crop with its
    (68, 2) crop-px landmarks."""
    region = F.face_region(lms, crop.shape[0], pipeline.backend.forehead)
    return color_stats(crop / np.float32(255), region)


def _plan(pipeline, key, tracks, views, found, doubtful, timings, threads, released, redo
          ) -> dict[int, IdentityPlan]:
    """One :class:`IdentityPlan` per track, from its ``views`` and what gives their occluders
    (``found``; :func:`_colours_and_views`), each judged as the encoder gives it back
    (``released``); the tracks in ``doubtful`` are covered, with no donor tried; those in
    ``redo`` (``{track id: (M,) bool}``) are anonymized again avoiding those donors, to unlink
    them (:func:`anonymize_video`).
    The tracks are planned by ``threads`` threads, each on its own; then, in track order, a
    track whose donor an earlier track shows is planned again without it, so no two faces on
    screen share a donor and the result does not depend on the threads."""
    t0 = time.perf_counter()
    by_id = {tr.id: tr for tr in tracks}
    spent: list[dict[str, float]] = []
    bank = pipeline.backend.bank

    def plan(tid: int, avoid=None) -> IdentityPlan:
        spent.append({})  # one per call: the threads do not add into one dict
        if tid in redo:
            avoid = redo[tid] if avoid is None else avoid | redo[tid]
        done = pipeline.plan_identity(views[tid], key, tid, avoid, spent[-1], VIDEO_MARGIN,
                                      released, found[tid], tid in doubtful, tid in redo)
        if tid in redo:
            done.unlinked = tuple(str(d) for d in bank.ids[redo[tid]])
        return done

    # the tracks with the most views to judge first, those covered or too small to judge last:
    # they fill the threads' ends, and the plans do not depend on the order
    order = sorted(by_id, key=lambda tid: (tid in doubtful, -sum(
        judgeable(judged, image.shape) for image, _, judged, _ in views[tid])))
    with ThreadPoolExecutor(threads) as pool:
        done = dict(zip(order, pool.map(plan, order)))
    plans = {tid: done[tid] for tid in by_id}
    if bank is not None:
        used = np.zeros(len(bank), bool)
        for tid in by_id:
            if _shows_donor(plans[tid]) and used[plans[tid].donor]:
                plans[tid] = plan(tid, used)
            if _shows_donor(plans[tid]):
                used[plans[tid].donor] = True
    timings["plan"] = time.perf_counter() - t0
    for k in ("backend", "postprocess", "judge"):
        timings[f"plan_{k}"] = sum(d.get(k, 0.0) for d in spent)
    return plans


def _shows_donor(plan: IdentityPlan) -> bool:
    """Whether the track's face shows its donor: not when it is covered, so such a track
    takes no donor from the others and is not planned again for one."""
    return plan.donor is not None and not plan.covered


def _render(pipeline, src, dst, key, info, raw, tracks, plans, sizes, colours, occluders,
            settings, timings, progress, threads) -> list[list[FrameFace]]:
    """Render every frame, with each track's smoothed ``colours`` (by ``(track, frame)``) and
    its occluders filtered in time (:class:`_Occluders`), and encode it; the faces of every
    frame. Frames are searched for occluders and rendered by ``threads`` threads (OpenCV,
    numpy and torch release the GIL), each rendered once the next one has been searched, and
    encoded in order."""
    by_id = {tr.id: tr for tr in raw}
    shown = {tr.id for tr in tracks if not plans[tr.id].covered}
    out_faces: list[list[FrameFace]] = []
    spent = {"occluders": 0.0, "backend": 0.0, "postprocess": 0.0, "encode": 0.0}
    searched: dict = {}
    pending: deque = deque()

    def present(t: int) -> list[Track]:
        return [tr for tr in tracks if t in tr.faces]

    def search(t: int, frame: np.ndarray) -> float:
        t0 = time.perf_counter()
        for tr in present(t):
            if tr.id in shown:
                face = _face(tr.faces[t], sizes[tr.id])
                occluders.find(tr.id, t, F.crop_face(frame, face.crop),
                               face.crop.to_crop(face.landmarks), face.crop)
        return time.perf_counter() - t0

    def render(t: int, frame: np.ndarray, on: list[Track]):
        for s in (t - 1, t, t + 1):  # each submitted before this; gone once drained
            if (future := searched.get(s)) is not None:
                future.result()
        return pipeline.render_planned(
            frame, [_face(tr.faces[t], sizes[tr.id]) for tr in on],
            [plans[tr.id] for tr in on], key, [colours[tr.id, t] for tr in on],
            [_face(by_id[tr.id].faces[t], sizes[tr.id]) for tr in on],
            [occluders.steady(tr.id, t) if tr.id in shown else None for tr in on])

    def drain(writer, keep: int) -> None:
        while len(pending) > keep:
            t, on, future = pending.popleft()
            out, moved, used = future.result()
            for k, v in used.items():
                spent[k] += v
            spent["occluders"] += searched[t].result()
            del searched[t]
            occluders.forget(t - 1, [tr.id for tr in present(t - 1)])
            t1 = time.perf_counter()
            writer.write(out)
            spent["encode"] += time.perf_counter() - t1
            out_faces.append([
                FrameFace(tr.id, _face(by_id[tr.id].faces[t], sizes[tr.id]), m,
                          tr.faces[t].source) for tr, m in zip(on, moved)])
            if progress:
                progress("render", t + 1, info.frames)

    t0 = time.perf_counter()
    with (VideoWriter(dst, info, source=src, quality=settings.quality,
                      strip_audio=settings.strip_audio) as writer,
          ThreadPoolExecutor(threads) as pool):
        previous = None
        for t, frame in enumerate(read_frames(src)):
            searched[t] = pool.submit(search, t, frame)
            if previous is not None:
                on = present(t - 1)
                pending.append((t - 1, on, pool.submit(render, t - 1, previous, on)))
            previous = frame
            drain(writer, 2 * threads)
        if previous is not None:
            on = present(t)
            pending.append((t, on, pool.submit(render, t, previous, on)))
        drain(writer, 0)
    timings["render"] = time.perf_counter() - t0  # wall time; the rest add the threads' seconds
    timings.update({f"render_{k}": v for k, v in spent.items()})
    return out_faces
