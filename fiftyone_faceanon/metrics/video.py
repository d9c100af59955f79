"""An (original, anonymized) video pair: the per-frame suite on a subsample of frames and the
temporal metrics (:mod:`.temporal`) on every frame, in one pass over the two videos.

The faces are those of the anonymized video's private record (``OUT.private/REL.json``, written
by ``faceanon anonymize``): per frame, each face's track id, the original's box and 68
landmarks (as tracked) and the geometry it was rendered at (``anonymized``). Per frame of the
two videos, decoded side by side in chunks of :data:`CHUNK` frames:

- the judges embed the original and the output at the original face's place (leaked frames) and
  the output at the anonymized face's place (identity stability), each judge's network run once
  over the chunk's faces (``Judge.embed_many``); faces the judges cannot score
  (``verify.judgeable``: under 32 px, or under 85% of the box in view) are not judged;
  where a judge matches, the original with the face masked out is embedded too
  (``verify.masked``: a match counts only beyond what the judge gives a face that is not
  there);
- MTCNN runs on the original (unreplaced faces), batched over the chunk;
- dlib's predictor places 68 landmarks on the original and on the output, both in the
  original's box (jitter);
- every ``frame_step``-th frame with a face goes through :meth:`.Evaluator.evaluate_batch`, the
  images' suite; its face records carry their ``frame`` and ``track``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np

from .. import faces as F
from ..images import record_path
from ..verify import MARGIN, judgeable, masked
from ..videoio import VideoError, probe, read_frames
from .identity import cosine, same_person_means
from .pairing import faces_from_records
from .summary import frame_summary
from .temporal import (consecutive, inter_ocular_distances, jitter, landmark_motion,
                       leaked_frames, pair_cosine, stability, unreplaced_faces)

if TYPE_CHECKING:
    from .evaluate import Evaluator, PairResult

#: Every how many frames the per-frame suite runs by default: 28 frames of a 275-frame clip.
DEFAULT_FRAME_STEP = 10
#: Frames decoded, detected and embedded together.
CHUNK = 16


@dataclass
class RecordFaces:
    """The N faces of a video's record: ``frames`` (N,) and ``tracks`` (N,) int, the
    ``original`` and ``anonymized`` :class:`~fiftyone_faceanon.faces.Face` of each, and
    ``by_frame[t]``: the indices of frame ``t``'s faces."""

    frames: np.ndarray
    tracks: np.ndarray
    original: list[F.Face]
    anonymized: list[F.Face]
    by_frame: list[list[int]]


def record_faces(record: dict, crop_size: int) -> RecordFaces:
    """The faces of a video's private record (``frames``: per frame, faces with ``track``,
    ``box``, ``score``, ``landmarks`` and ``anonymized`` ``box`` and ``landmarks``); raises
    ``KeyError``, ``TypeError`` or ``ValueError`` for a record of another shape."""
    frames, tracks, original, anonymized, by_frame = [], [], [], [], []
    for t, faces in enumerate(record["frames"]):
        by_frame.append(list(range(len(frames), len(frames) + len(faces))))
        frames += [t] * len(faces)
        tracks += [int(f["track"]) for f in faces]
        original += faces_from_records(faces, crop_size)
        anonymized += faces_from_records([f["anonymized"] for f in faces], crop_size)
    return RecordFaces(np.array(frames, int), np.array(tracks, int), original, anonymized,
                       by_frame)


def paired_frames(orig: Path, anon: Path) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """``(t, original frame, anonymized frame)``, both (H, W, 3) uint8, of two videos decoded
    side by side; raises :class:`~fiftyone_faceanon.videoio.VideoError` when they differ in
    frame count or size (or either cannot be read)."""
    others = read_frames(anon)
    t = -1
    for t, o in enumerate(read_frames(orig)):
        a = next(others, None)
        if a is None:
            raise VideoError(anon, f"{t} frames, fewer than the original's ({orig})")
        if a.shape != o.shape:
            raise VideoError(anon, f"frame size {a.shape[1]}x{a.shape[0]} differs from the "
                                   f"original's {o.shape[1]}x{o.shape[0]}")
        yield t, o, a
    if next(others, None) is not None:
        raise VideoError(anon, f"more frames than the original's {t + 1} ({orig})")


def evaluate_video(ev: Evaluator, orig: Path, anon: Path, rel: str, record: dict,
                   frame_step: int = DEFAULT_FRAME_STEP,
                   progress: Callable[[int, int], None] | None = None) -> PairResult:
    """The :class:`~.evaluate.PairResult` of the video ``anon`` (``OUT/REL``) against ``orig``
    with ``anon``'s private ``record``, by the :class:`~.evaluate.Evaluator` ``ev``: ``faces``
    the records of every ``frame_step``-th frame's faces (with ``frame`` and ``track``) and
    ``video``: ``{"frames", "frame_step", "evaluated_frames", "per_frame"
    (:func:`.summary.frame_summary`), "temporal": {"leaked_frames": {judge: ...},
    "unreplaced_faces", "stability": {judge: ...}, "jitter"}}`` (:mod:`.temporal`).
    ``progress(done, total)`` after each frame. Raises
    :class:`~fiftyone_faceanon.videoio.VideoError` for a video that cannot be read or that
    does not match the original or its record, ``ValueError`` for a record that cannot be read.
    """
    try:
        faces = record_faces(record, ev.crop_size)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{record_path(anon, rel)}: unreadable video record "
                         f"({type(e).__name__}: {e})") from None
    total = len(faces.by_frame)
    info = probe(anon)
    if info.frames != total:
        raise VideoError(anon, f"{info.frames} frames, its record {total}")
    n = len(faces.frames)
    judged = np.array([judgeable(f, (info.height, info.width)) for f in faces.original],
                      bool).reshape(n)
    # per judge: the original, the output at the original's place, the output at its own, and
    # (where a judge matches) the original with the face masked out
    emb = {j: np.zeros((4, n, judge.dim), np.float32) for j, judge in ev.judges.items()}
    marks = np.zeros((2, n, 68, 2))  # dlib on the original and on the output, original's box
    detected: list[np.ndarray] = []
    sampled: list = []
    frames = paired_frames(orig, anon)
    done = 0
    while chunk := list(islice(frames, CHUNK)):
        if chunk[-1][0] >= total:
            raise VideoError(anon, f"more frames than its record's {total}")
        tick = (time.perf_counter(), time.process_time())
        found = F.detect_boxes([o for _, o, _ in chunk], "mtcnn", ev.threshold,
                               ev.min_face_size, ev.device)
        detected += [boxes for boxes, _ in found]
        tick = ev._clock("video_detection", tick)
        chosen = [[i for i in faces.by_frame[t] if judged[i]] for t, _, _ in chunk]
        items = []
        for (_, o, a), sel in zip(chunk, chosen):
            at_orig = [faces.original[i] for i in sel]
            items += [(o, at_orig), (a, at_orig), (a, [faces.anonymized[i] for i in sel])]
        for name, judge in ev.judges.items():
            rows = judge.embed_many(items)
            for c, sel in enumerate(chosen):
                for k in range(3):
                    emb[name][k, sel] = rows[3 * c + k]
            tick = ev._clock(f"video_reid_{name}", tick)
        hits = [(o, i) for (_, o, _), sel in zip(chunk, chosen) for i in sel
                if any(float(emb[j][0, i] @ emb[j][1, i]) >= ev.far_thresholds[j]
                       for j in ev.far_thresholds)]
        if hits:
            blank = [(masked(o, faces.original[i]), [faces.original[i]]) for o, i in hits]
            for name, judge in ev.judges.items():
                for (_, i), row in zip(hits, judge.embed_many(blank)):
                    emb[name][3, i] = row[0]
            tick = ev._clock("video_reid_floor", tick)
        for t, o, a in chunk:
            for i in faces.by_frame[t]:
                marks[0, i] = F.landmarks_68(o, faces.original[i].box)
                marks[1, i] = F.landmarks_68(a, faces.original[i].box)
        ev._clock("video_landmarks", tick)
        todo = [(t, o, a) for t, o, a in chunk if t % frame_step == 0 and faces.by_frame[t]]
        results = ev.evaluate_batch([(o, a, [faces.original[i] for i in faces.by_frame[t]])
                                     for t, o, a in todo])
        for (t, _, _), res in zip(todo, results):
            for rec, i in zip(res.faces, faces.by_frame[t]):
                rec.update(frame=t, track=int(faces.tracks[i]))
            sampled.append(res)
        for t, _, _ in chunk:
            done = t + 1
            if progress:
                progress(done, total)
    if done != total:
        raise VideoError(anon, f"{done} frames, its record {total}")
    from .evaluate import PairResult

    result = PairResult.concat(sampled)
    result.video = {
        "frames": total, "frame_step": frame_step,
        "evaluated_frames": sorted({r["frame"] for r in result.faces}),
        "per_frame": frame_summary(result.faces),
        "temporal": temporal_metrics(ev, faces, judged, emb, marks, detected),
    }
    return result


def temporal_metrics(ev: Evaluator, faces: RecordFaces, judged: np.ndarray,
                     emb: dict[str, np.ndarray], marks: np.ndarray,
                     detected: list[np.ndarray]) -> dict:
    """:mod:`.temporal`'s metrics from what :func:`evaluate_video` measured: ``judged`` (N,)
    bool, ``emb[judge]`` (4, N, D) (the original, the output at the original's place, the
    output at the anonymized face's place, the original with the face masked out where a judge
    matched, else zeros), ``marks`` (2, N, 68, 2) (dlib's landmarks on the
    original and on the output, in the original's box), ``detected[t]`` (B_t, 4) MTCNN's boxes
    on the original."""
    pairs = consecutive(faces.frames, faces.tracks)
    later_t, later_k = faces.frames[pairs[:, 1]], faces.tracks[pairs[:, 1]]
    both = judged[pairs[:, 0]] & judged[pairs[:, 1]]
    mu = same_person_means()
    scale = inter_ocular_distances(marks[0])[pairs[:, 1]]
    covered = [np.array([faces.original[i].box for i in idx]).reshape(-1, 4)
               for idx in faces.by_frame]
    return {
        "leaked_frames": {
            j: leaked_frames(cosine(e[0], e[1]).reshape(-1), judged, faces.frames, faces.tracks,
                             ev.far_thresholds[j], cosine(e[0], e[3]).reshape(-1),
                             ev.far_thresholds[j] - MARGIN.get(j, 0.0))
            for j, e in emb.items() if j in ev.far_thresholds},
        "unreplaced_faces": unreplaced_faces(detected, covered),
        "stability": {j: stability(pair_cosine(e[2], pairs[both]), later_t[both],
                                   later_k[both], mu.get(j), pair_cosine(e[0], pairs[both]))
                      for j, e in emb.items()},
        "jitter": jitter(landmark_motion(marks[0], pairs, scale),
                         landmark_motion(marks[1], pairs, scale), later_t, later_k),
    }
