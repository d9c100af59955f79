"""Temporal metrics of an anonymized video against its original (docs/metrics.md, "Video").

The faces of a video are N *observations*: face ``n`` is track ``k_n`` in frame ``t_n`` (the
anonymizer's private record lists them per frame). Consecutive observations of a track are the
P pairs ``(i, j)`` with ``k_i = k_j`` and ``t_j = t_i + 1`` (:func:`consecutive`). Frames and
tracks are the record's: frames count from 0.

- **Leaked frames** (:func:`leaked_frames`): a judge ``J`` re-identifies face ``n`` when the
  cosine of its embeddings of the original and of the output frame, both at the original face's
  place, is at or above its FAR 1e-3 threshold: ``s_n = cos(J(O_t, f_n), J(A_t, f_n)) >= tau_J``.
  A frame leaks when one of its judged faces does.
- **Unreplaced faces** (:func:`unreplaced_faces`): faces the detector finds in an original frame
  that no face of the record covers: ``max_m IoU(d, r_m) < 0.3`` over the record's boxes
  ``r_m`` of that frame, and ``d`` is not a part of one (smaller, centred inside it:
  :func:`~..tracking.part_of`, the rule by which tracking takes it for one).
- **Identity stability** (:func:`pair_cosine`, :func:`stability`): per pair ``p = (i, j)``,
  ``c_p = cos(J(A_{t_i}, g_i), J(A_{t_j}, g_j))`` with ``g`` the anonymized face's geometry;
  compared with the judge's mean cosine ``mu_J`` over LFW's same-person pairs (two photos of one
  person): a pair below it changes identity more from one frame to the next than two photos of
  one person differ. The original's ``cos(J(O_{t_i}, f_i), J(O_{t_j}, f_j))`` over the same pairs
  is the reference.
- **Jitter** (:func:`landmark_motion`, :func:`jitter`): per pair, the mean displacement of the
  68 landmarks over the inter-ocular distance ``D_j`` (outer eye corners of the original's
  landmarks at ``t_j``): ``m_p = 1/68 sum_k ||L_{j,k} - L_{i,k}||_2 / D_j``, for the original's
  landmarks and the output's (both dlib's, measured in the original's box); the output should
  move no more than :data:`JITTER_TARGET` times the original.

Each summary is ``{"mean", "worst", "worst_frame", "worst_track", "n", "frames": [frames
concerned], "count": len(frames)}`` plus its own figures (``None`` where nothing was measured).
"""

from __future__ import annotations

import numpy as np

from ..faces import box_iou
from ..tracking import part_of
from .geometry import OUTER_EYE_CORNERS
from .identity import cosine

#: Least IoU at which a face of the record covers a detection (the tracker's linking IoU).
COVER_IOU = 0.3
#: The output's landmarks should move at most this many times as much as the original's.
JITTER_TARGET = 1.5


def consecutive(frames: np.ndarray, tracks: np.ndarray) -> np.ndarray:
    """(P, 2) int indices ``(i, j)`` into the N observations (``frames`` (N,), ``tracks``
    (N,)) with ``tracks[i] == tracks[j]`` and ``frames[j] == frames[i] + 1``, in the order of
    ``j``."""
    index = {(int(t), int(k)): n for n, (t, k) in enumerate(zip(frames, tracks))}
    pairs = [(index[(int(t) - 1, int(k))], n) for n, (t, k) in enumerate(zip(frames, tracks))
             if (int(t) - 1, int(k)) in index]
    return np.array(pairs, int).reshape(-1, 2)


def _summary(values: np.ndarray, frames: np.ndarray, tracks: np.ndarray, larger_is_worse: bool,
             concerned: np.ndarray) -> dict:
    """Mean and worst of (M,) ``values`` measured at ``frames`` / ``tracks`` (M,), and the
    sorted distinct frames where (M,) bool ``concerned``."""
    listed = sorted({int(t) for t in frames[concerned]})
    if not len(values):
        return {"mean": None, "worst": None, "worst_frame": None, "worst_track": None, "n": 0,
                "frames": listed, "count": len(listed)}
    w = int(np.argmax(values) if larger_is_worse else np.argmin(values))
    return {"mean": float(np.mean(values)), "worst": float(values[w]),
            "worst_frame": int(frames[w]), "worst_track": int(tracks[w]), "n": int(len(values)),
            "frames": listed, "count": len(listed)}


def leaked_frames(similarity: np.ndarray, judged: np.ndarray, frames: np.ndarray,
                  tracks: np.ndarray, threshold: float, floor: np.ndarray,
                  informative: float) -> dict:
    """A judge's leaks: ``similarity`` (N,) its cosine ``s_n`` between the original and the
    output at the original face's place, meaningful where ``judged`` (N,) bool; ``threshold``
    its FAR 1e-3 cosine ``tau``; ``floor`` (N,) its cosine ``f_n`` between the original and the
    original with the face masked out (:func:`~fiftyone_faceanon.verify.masked`), where
    ``informative`` ``tau_v`` is its verification threshold. Face ``n`` leaks when
    ``s_n >= tau`` and ``f_n < tau_v``: a judge that gives the masked face as much cannot tell
    this face from none (a dark, blurred or turned face whose embedding is the judge's generic
    one), and its match is counted apart as ``uninformative``. Mean and worst (largest) ``s_n``
    over the judged faces; the frames with a leaked face, and per leaked face ``{"frame",
    "track", "similarity"}``; ``judged_frames``: the frames with a judged face; ``not_judged``:
    faces not judged."""
    s, t, k = similarity[judged], frames[judged], tracks[judged]
    match = s >= threshold
    counted = floor[judged] < informative
    leak = match & counted
    out = _summary(s, t, k, True, leak)
    out.update(threshold=float(threshold), judged_frames=len(set(t.tolist())),
               not_judged=int((~judged).sum()), uninformative=int((match & ~counted).sum()),
               faces=[{"frame": int(a), "track": int(b), "similarity": round(float(c), 5)}
                      for a, b, c in zip(t[leak], k[leak], s[leak])])
    return out


def unreplaced_faces(detected: list[np.ndarray], covered: list[np.ndarray],
                     min_iou: float = COVER_IOU) -> dict:
    """Detections of the original that no face of the record covers: ``detected[t]`` (B_t, 4)
    and ``covered[t]`` (F_t, 4) boxes (x0, y0, x1, y1) of frame ``t``; a detection ``d`` is
    unreplaced when ``max_m IoU(d, covered[t][m]) < min_iou`` and it is a part of none
    (:func:`~..tracking.part_of`), or the frame has no record face.
    Returns ``{"count", "detected": all detections, "frames": frames with one, "faces":
    [{"frame", "box"}]}``."""
    faces = []
    for t, (d, c) in enumerate(zip(detected, covered)):
        d = np.asarray(d, np.float64).reshape(-1, 4)
        c = np.asarray(c, np.float64).reshape(-1, 4)
        best = box_iou(d, c).max(axis=1) if len(c) else np.zeros(len(d))
        faces += [{"frame": t, "box": [round(float(v), 1) for v in box]}
                  for box, iou in zip(d, best)
                  if iou < min_iou and not any(part_of(box, r) for r in c)]
    frames = sorted({f["frame"] for f in faces})
    return {"count": len(faces), "detected": int(sum(len(d) for d in detected)),
            "frames": frames, "faces": faces}


def pair_cosine(embeddings: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """(P,) cosine ``c_p`` between the (N, D) ``embeddings`` of each pair ``(i, j)`` of (P, 2)
    ``pairs``."""
    return cosine(embeddings[pairs[:, 0]], embeddings[pairs[:, 1]]).reshape(-1)


def stability(similarity: np.ndarray, frames: np.ndarray, tracks: np.ndarray,
              same_person_mean: float | None, original: np.ndarray | None = None) -> dict:
    """A judge's identity stability: ``similarity`` (P,) the pairs' cosines ``c_p`` of the
    anonymized face, ``frames`` / ``tracks`` (P,) the later frame ``t_j`` and the track of each.
    Mean and worst (smallest) ``c_p``; the frames where ``c_p < same_person_mean`` (``mu``;
    none when it is unknown). With ``original`` (P,), the same pairs' cosines of the original
    face (at its own place), as the reference: ``original_mean``, ``original_worst`` and
    ``original_frames``, where the original itself is below ``mu`` (a face turning away or
    hidden changes between frames before any anonymizer touches it)."""
    def summary(cosines: np.ndarray) -> dict:
        below = (cosines < same_person_mean if same_person_mean is not None
                 else np.zeros(len(cosines), bool))
        return _summary(cosines, frames, tracks, False, below)

    out = summary(similarity)
    out["same_person_mean"] = same_person_mean
    if original is not None:
        ref = summary(original)
        out.update(original_mean=ref["mean"], original_worst=ref["worst"],
                   original_frames=ref["frames"])
    return out


def landmark_motion(landmarks: np.ndarray, pairs: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """(P,) mean landmark displacement per pair over ``scale``: ``m_p = 1/68 sum_k
    ||L_{j,k} - L_{i,k}||_2 / s_p`` for (N, 68, 2) ``landmarks``, (P, 2) ``pairs`` and (P,)
    ``scale`` (e.g. :func:`inter_ocular_distances` at ``j``)."""
    step = landmarks[pairs[:, 1]] - landmarks[pairs[:, 0]]
    return np.linalg.norm(step, axis=-1).mean(axis=-1) / np.maximum(scale, 1e-6)


def inter_ocular_distances(landmarks: np.ndarray) -> np.ndarray:
    """(N,) distance between the outer eye corners (points 36 and 45) of (N, 68, 2)
    ``landmarks``."""
    a, b = OUTER_EYE_CORNERS
    return np.linalg.norm(landmarks[:, a] - landmarks[:, b], axis=-1)


def jitter(original: np.ndarray, output: np.ndarray, frames: np.ndarray, tracks: np.ndarray,
           target: float = JITTER_TARGET) -> dict:
    """Jitter from the pairs' landmark motion (:func:`landmark_motion`) of the ``original``
    (P,) and of the ``output`` (P,), at the later frames ``frames`` and ``tracks`` (P,).
    ``original_mean`` and ``output_mean`` (``m`` averaged over the pairs) and ``ratio``
    ``output_mean / original_mean`` (the target: at most ``target``); mean and worst (largest)
    excess ``m_out - m_orig``; the frames where ``m_out > target * m_orig``."""
    excess = output - original
    out = _summary(excess, frames, tracks, True, output > target * original)
    mean_o = float(original.mean()) if len(original) else None
    mean_a = float(output.mean()) if len(output) else None
    out.update(original_mean=mean_o, output_mean=mean_a, target=target,
               ratio=mean_a / mean_o if mean_o else None)
    return out


def video_scalars(temporal: dict) -> dict[str, float | None]:
    """One number per temporal metric of a video, from its ``temporal`` summaries
    (:func:`.video.temporal_metrics`): ``leaked_frames_<judge>`` (frames) and
    ``leak_similarity_<judge>`` (the worst ``s_n``), ``unreplaced_faces``, ``stability_<judge>``
    and ``stability_worst_<judge>`` (mean and smallest ``c_p``), ``stability_original_<judge>``
    (the original's mean over the same pairs), ``jitter_original``,
    ``jitter_output`` and ``jitter_ratio``. None where nothing was measured."""
    out: dict[str, float | None] = {}
    for judge, leaks in temporal["leaked_frames"].items():
        out[f"leaked_frames_{judge}"] = leaks["count"]
        out[f"leak_similarity_{judge}"] = leaks["worst"]
    out["unreplaced_faces"] = temporal["unreplaced_faces"]["count"]
    for judge, s in temporal["stability"].items():
        out[f"stability_{judge}"] = s["mean"]
        out[f"stability_worst_{judge}"] = s["worst"]
        out[f"stability_original_{judge}"] = s.get("original_mean")
    j = temporal["jitter"]
    out.update(jitter_original=j["original_mean"], jitter_output=j["output_mean"],
               jitter_ratio=j["ratio"])
    return out
