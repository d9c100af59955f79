"""Running the whole suite: per face, per image pair, per folder.

For each face of the original (from the anonymizer's private record, or detected), the anonymized image
is compared with the original over the ORIGINAL face's place:

- ``detected``: MTCNN finds a box in the anonymized image overlapping the original's box
  (:mod:`.detection`);
- ``reid_<judge>``: cosine of the judge's embeddings of the original and anonymized image, both
  cropped with the original ``Face``; ``reid_rate_<judge>``: 1 when it is at or above the judge's
  accuracy-optimal LFW threshold (:mod:`.identity`); ``reid_far_<judge>``: at or above its
  FAR 1e-3 one;
- ``reid_found_<judge>`` / ``reid_far_found_<judge>``: the same with the anonymized image cropped
  where a re-identifier finds the face in it (:func:`.detection.found_again`: the matched MTCNN
  box, the original box when none matched, and dlib's landmarks found there);
- ``landmark_nme_68`` / ``landmark_nme_51``: the original's landmarks against those dlib's
  landmarks on the anonymized image (:mod:`.geometry`);
- ``emotion_match`` / ``emotion_l1``: the emotion model on both (:mod:`.emotion`);
- ``group_match``: the apparent group (UTKFace's race code) that a softmax head reads in the
  FaceNet-CASIA and dlib embeddings of both is the same
  (:func:`~fiftyone_faceanon.anonymizers.donor.groups`);
- lighting and colour metrics on the two crops taken with the original face's crop transform at
  ``crop_size`` (:mod:`.lighting`, :mod:`.colour`);
- per dataset, ``fid_facenet`` / ``kid_facenet`` between the FaceNet-CASIA embeddings of the
  original and anonymized faces (:mod:`.realism`).

Models load once per :class:`Evaluator`; MTCNN runs batched over the images of a batch.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .. import faces as F
from ..engines import Engine, as_engine
from ..images import IMAGE_EXTENSIONS, ImageError, load_image, record_path
from ..photometric import shading
from ..videoio import VIDEO_EXTENSIONS
from .colour import colour_metrics, skin_mask
from .detection import MIN_IOU, found_again
from .geometry import landmark_nme_51, landmark_nme_68
from .lighting import lighting_metrics, sharpness_ratio
from .pairing import CROP_SIZE, faces_from_record, read_record
from .realism import (frechet_distance, inception_features, inception_fid_unavailable,
                      kernel_distance)
from .summary import describe, group_label, summarize
from .temporal import video_scalars
from .video import DEFAULT_FRAME_STEP, evaluate_video

#: The judge whose embeddings give ``fid_facenet`` and ``kid_facenet``.
REALISM_JUDGE = "facenet_casia"


@dataclass
class PairResult:
    """One image pair: ``faces`` per-face metric records (JSON-ready), the original ``Face``s,
    and for the dataset metrics the realism judge's (F, D) embeddings of the original and
    anonymized faces (and their uint8 crops when the Inception FID can run)."""

    faces: list[dict]
    originals: list[F.Face]
    embeddings: tuple[np.ndarray, np.ndarray] | None = None
    crops: tuple[list[np.ndarray], list[np.ndarray]] | None = None
    #: every judge's (F, D) embeddings of the anonymized faces (linkability)
    anonymized: dict[str, np.ndarray] = field(default_factory=dict)
    #: for a video: its frame count, the frames evaluated, the per-frame metrics per video and
    #: the temporal metrics (:func:`.video.evaluate_video`); ``faces`` then hold the evaluated
    #: frames' faces, each with its ``frame`` and ``track``
    video: dict | None = None

    @classmethod
    def concat(cls, results: list[PairResult]) -> PairResult:
        """One result holding the faces of ``results`` (e.g. a video's frames), in order."""
        def joined(parts: list[np.ndarray]) -> np.ndarray | None:
            return np.concatenate(parts) if parts else None

        out = cls([f for r in results for f in r.faces],
                  [f for r in results for f in r.originals])
        emb = [r.embeddings for r in results if r.embeddings is not None]
        if emb:
            out.embeddings = (joined([e[0] for e in emb]), joined([e[1] for e in emb]))
        crops = [r.crops for r in results if r.crops is not None]
        if crops:
            out.crops = ([c for pair in crops for c in pair[0]],
                         [c for pair in crops for c in pair[1]])
        for name in {n for r in results for n in r.anonymized}:
            out.anonymized[name] = joined([r.anonymized[name] for r in results
                                           if name in r.anonymized])
        return out


class Evaluator:
    """Holds the detector settings, the identity judges and the emotion model for a run.

    ``unavailable`` maps every metric that cannot run here to the reason; ``timings`` and
    ``cpu_timings`` add up the wall-clock and CPU seconds spent per metric group (benchmark).
    """

    def __init__(
        self,
        judges: tuple[str, ...] | None = None,
        device: str = "auto",
        threshold: float = 0.9,
        min_iou: float = MIN_IOU,
        crop_size: int = CROP_SIZE,
        min_face_size: int = 20,
    ):
        from .identity import judge_thresholds, load_judges

        self._args = (judges, device, threshold, min_iou, crop_size, min_face_size)
        self.device, self.threshold, self.min_iou = device, threshold, min_iou
        self.crop_size, self.min_face_size = crop_size, min_face_size
        self.judges, missing = load_judges(judges, device)
        self.unavailable: dict[str, str] = {}
        for name, reason in missing.items():
            for metric in ("reid", "reid_rate", "reid_far", "reid_found", "reid_far_found"):
                self.unavailable[f"{metric}_{name}"] = reason
        from ..anonymizers.donor import DEMOGRAPHIC_JUDGES

        if not set(DEMOGRAPHIC_JUDGES) <= set(self.judges):
            self.unavailable["group_match"] = (
                f"the group head reads the {' and '.join(DEMOGRAPHIC_JUDGES)} judges' embeddings")
        if REALISM_JUDGE not in self.judges:
            reason = f"the {REALISM_JUDGE} judge is unavailable"
            self.unavailable["fid_facenet"] = self.unavailable["kid_facenet"] = reason
        calibrated = judge_thresholds()
        self.thresholds = {n: calibrated[n]["accuracy"] for n in self.judges if n in calibrated}
        self.far_thresholds = {n: calibrated[n]["far_1e-3"] for n in self.thresholds}
        for name in self.judges:
            if name not in self.thresholds:
                for metric in ("reid_rate", "reid_far", "reid_far_found"):
                    self.unavailable[f"{metric}_{name}"] = (
                        f"no calibrated threshold for {name} in models/manifest.json "
                        "(run scripts/calibrate_judges.py)")
        try:
            from .emotion import load_emotion_model

            self.emotion = load_emotion_model(device)
        except (RuntimeError, OSError, ImportError) as e:
            self.emotion = None
            self.unavailable["emotion_match"] = self.unavailable["emotion_l1"] = str(e)
        reason = inception_fid_unavailable()
        if reason:
            self.unavailable["fid_inception"] = reason
        self.timings: dict[str, float] = defaultdict(float)
        self.cpu_timings: dict[str, float] = defaultdict(float)

    def __reduce__(self):
        """Pickled by its arguments: a pool process loads its own models."""
        return Evaluator, self._args

    def _clock(self, name: str, since: tuple[float, float]) -> tuple[float, float]:
        """Add the time since ``since`` (wall, cpu) to metric group ``name``; return now."""
        now = (time.perf_counter(), time.process_time())
        self.timings[name] += now[0] - since[0]
        self.cpu_timings[name] += now[1] - since[1]
        return now

    def evaluate_pair(
        self, orig: np.ndarray, anon: np.ndarray, faces: list[F.Face] | None = None
    ) -> PairResult:
        """Metrics of every face of ``orig`` (RGB (H, W, 3) uint8) against ``anon`` (same size).
        ``faces``: the original's faces (e.g. from a private record); detected when None."""
        return self.evaluate_batch([(orig, anon, faces)])[0]

    def evaluate_batch(
        self, pairs: list[tuple[np.ndarray, np.ndarray, list[F.Face] | None]]
    ) -> list[PairResult]:
        """:meth:`evaluate_pair` over several pairs, MTCNN and each identity judge batched over
        the images."""
        for orig, anon, _ in pairs:
            if orig.shape != anon.shape:
                raise ValueError(f"original {orig.shape} and anonymized {anon.shape} differ in size")
        t0 = (time.perf_counter(), time.process_time())
        todo = [i for i, (_, _, f) in enumerate(pairs) if f is None]
        found = F.find_faces_batch([pairs[i][0] for i in todo], self.crop_size, "mtcnn",
                                   self.threshold, self.min_face_size, self.device)
        originals = [f for _, _, f in pairs]
        for i, f in zip(todo, found):
            originals[i] = f
        detections = F.detect_boxes([a for _, a, _ in pairs], "mtcnn", self.threshold,
                                    self.min_face_size, self.device)
        t0 = self._clock("detection", t0)
        found = [found_again(a, fs, boxes, self.min_iou) if fs else ([], [])
                 for (_, a, _), fs, (boxes, _) in zip(pairs, originals, detections)]
        t0 = self._clock("landmarks", t0)
        n = len(pairs)
        embeddings: list[dict[str, tuple[np.ndarray, ...]]] = [{} for _ in pairs]
        for name, judge in self.judges.items():
            rows = judge.embed_many([(o, fs) for (o, _, _), fs in zip(pairs, originals)]
                                    + [(a, fs) for (_, a, _), fs in zip(pairs, originals)]
                                    + [(a, again) for (_, a, _), (again, _) in zip(pairs, found)])
            for i, e in enumerate(embeddings):
                e[name] = (rows[i], rows[n + i], rows[2 * n + i])
            t0 = self._clock(f"reid_{name}", t0)
        return [self._evaluate(o, a, fs, det, e, f)
                for (o, a, _), fs, det, e, f in zip(pairs, originals, detections, embeddings,
                                                     found)]

    def _evaluate(self, orig, anon, faces, detection, embeddings, found) -> PairResult:
        records = [{"face": i, "box": [round(float(v), 2) for v in f.box]}
                   for i, f in enumerate(faces)]
        result = PairResult(records, faces)
        if not faces:
            return result
        tick = (time.perf_counter(), time.process_time())

        def lap(name: str) -> None:
            nonlocal tick
            tick = self._clock(name, tick)

        _, scores = detection
        for rec, face, again, j in zip(records, faces, *found):
            rec["detected"] = float(j is not None)
            rec["detection_score"] = None if j is None else round(float(scores[j]), 5)
            rec["landmark_nme_68"] = landmark_nme_68(face.landmarks, again.landmarks)
            rec["landmark_nme_51"] = landmark_nme_51(face.landmarks, again.landmarks)
        lap("landmarks")
        for name, (e_o, e_a, e_found) in embeddings.items():
            for where, e in (("", e_a), ("found_", e_found)):
                cos = np.sum(e_o.astype(np.float64) * e, axis=1)  # unit rows: the cosine
                for rec, c in zip(records, cos):
                    rec[f"reid_{where}{name}"] = float(c)
                    if name in self.thresholds:
                        rec[f"reid_far_{where}{name}"] = float(c >= self.far_thresholds[name])
                        if not where:
                            rec[f"reid_rate_{name}"] = float(c >= self.thresholds[name])
            if name == REALISM_JUDGE:
                result.embeddings = (e_o, e_a)
            result.anonymized[name] = e_a
        if "group_match" not in self.unavailable:
            from ..anonymizers.donor import DEMOGRAPHIC_JUDGES, groups
            from ..donors import RACES

            g_o, g_a = (groups({j: embeddings[j][k] for j in DEMOGRAPHIC_JUDGES}).argmax(1)
                        for k in (0, 1))
            for rec, go, ga in zip(records, g_o, g_a):
                rec["group_orig"], rec["group_anon"] = RACES[go], RACES[ga]
                rec["group_match"] = float(go == ga)
        if self.emotion is not None:
            from .emotion import EMOTIONS

            p_o, p_a = self.emotion.predict(orig, faces), self.emotion.predict(anon, faces)
            for rec, po, pa in zip(records, p_o, p_a):
                rec["emotion_orig"] = EMOTIONS[po.argmax()]
                rec["emotion_anon"] = EMOTIONS[pa.argmax()]
                rec["emotion_match"] = float(po.argmax() == pa.argmax())
                rec["emotion_l1"] = float(np.abs(po - pa).sum())
            lap("emotion")
        crops_o, crops_a = [], []
        for rec, face in zip(records, faces):
            crop = F.crop_transform(face.landmarks, self.crop_size)
            c_o, c_a = F.crop_face(orig, crop), F.crop_face(anon, crop)
            crops_o.append(c_o)
            crops_a.append(c_a)
            lm = crop.to_crop(face.landmarks)
            o, a = c_o.astype(np.float32) / 255.0, c_a.astype(np.float32) / 255.0
            s_o, s_a = shading(o), shading(a)
            rec.update(lighting_metrics(o, a, F.face_region(lm, self.crop_size), s_o, s_a))
            lap("lighting")
            rec.update(colour_metrics(o, a, skin_mask(lm, self.crop_size), s_o, s_a))
            lap("colour")
            rec["sharpness"] = sharpness_ratio(orig, anon, face.landmarks)
            lap("sharpness")
        if "fid_inception" not in self.unavailable:
            result.crops = (crops_o, crops_a)
        return result

    def dataset_metrics(self, results: list[PairResult]) -> dict[str, dict]:
        """``fid_facenet``, ``kid_facenet`` (and ``fid_inception`` when it can run) over the
        faces of ``results``, as ``{metric: {"mean", "std", "n"}}``; needs two faces or more."""
        t0 = (time.perf_counter(), time.process_time())
        out: dict[str, dict] = {}
        emb = [r.embeddings for r in results if r.embeddings is not None and len(r.embeddings[0])]
        if emb:
            x = np.concatenate([e[0] for e in emb])
            y = np.concatenate([e[1] for e in emb])
            if len(x) >= 2:
                out["fid_facenet"] = {"mean": frechet_distance(x, y), "std": None, "n": len(x)}
                kid, kid_std = kernel_distance(x, y)
                out["kid_facenet"] = {"mean": kid, "std": kid_std, "n": len(x)}
        crops = [r.crops for r in results if r.crops is not None and r.crops[0]]
        if crops:
            device = F.resolve_device(self.device)
            x = inception_features([c for pair in crops for c in pair[0]], device)
            y = inception_features([c for pair in crops for c in pair[1]], device)
            if len(x) >= 2:
                out["fid_inception"] = {"mean": frechet_distance(x, y), "std": None, "n": len(x)}
        self._clock("realism", t0)
        return out


@lru_cache(maxsize=1)
def default_evaluator() -> Evaluator:
    """An :class:`Evaluator` with the default settings, created once per process."""
    return Evaluator()


def evaluate_pair(
    orig: np.ndarray,
    anon: np.ndarray,
    faces: list[F.Face] | None = None,
    evaluator: Evaluator | None = None,
) -> tuple[list[dict], dict[str, str]]:
    """Per-face metric records of an (original, anonymized) pair of RGB (H, W, 3) uint8 images,
    and the metrics that could not run ``{metric: reason}``. ``faces``: the original's faces;
    detected when None."""
    ev = evaluator or default_evaluator()
    return ev.evaluate_pair(orig, anon, faces).faces, dict(ev.unavailable)


def media_files(folder: Path, extensions: tuple[str, ...] = IMAGE_EXTENSIONS + VIDEO_EXTENSIONS
                ) -> dict[str, Path]:
    """``{relative posix path: path}`` of every image and video (``extensions``) under
    ``folder``."""
    return {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*"))
            if p.suffix.lower() in extensions and p.is_file()}


def image_files(folder: Path) -> dict[str, Path]:
    """``{relative posix path: path}`` of every image under ``folder``."""
    return media_files(folder, IMAGE_EXTENSIONS)


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


@dataclass
class _Batch:
    """Evaluates a batch of (relative path, original path, anonymized path) in a process that
    may be a pool's; returns per file, in order, ``(rel, faces_from, PairResult | None,
    error | None)`` and the seconds (wall, CPU) spent per metric group, leaving the evaluator's
    own counters as they were (the caller adds the seconds, whichever process spent them).
    Images are evaluated together, each video by itself (:func:`.video.evaluate_video`, every
    ``frame_step``-th frame through the suite)."""

    evaluator: Evaluator
    frame_step: int = DEFAULT_FRAME_STEP
    #: ``progress(rel, done, total)`` per video frame; only in the process that set it
    progress: Callable[[str, int, int], None] | None = None

    def __reduce__(self):
        return _Batch, (self.evaluator, self.frame_step)

    def __call__(self, files: list[tuple[str, Path, Path]]):
        ev = self.evaluator
        before = dict(ev.timings), dict(ev.cpu_timings)
        out: list[tuple | None] = []
        loaded = []
        for rel, orig_path, anon_path in files:
            if is_video(anon_path):
                out.append(self._video(rel, orig_path, anon_path))
                continue
            try:
                orig, anon = load_image(orig_path).rgb, load_image(anon_path).rgb
                if orig.shape != anon.shape:
                    raise ImageError(anon_path,
                                     f"size {anon.shape[1]}x{anon.shape[0]} differs from the "
                                     f"original's {orig.shape[1]}x{orig.shape[0]}")
                faces = faces_from_record(anon_path, rel, ev.crop_size)
            except (ImageError, ValueError) as e:
                out.append((rel, None, None, str(e)))
                continue
            loaded.append((len(out), orig, anon, faces))
            out.append(None)
        results = ev.evaluate_batch([(o, a, f) for _, o, a, f in loaded])
        for (i, _, _, faces), res in zip(loaded, results):
            out[i] = (files[i][0], "detection" if faces is None else "record", res, None)
        spent = ({k: v - before[0].get(k, 0.0) for k, v in ev.timings.items()},
                 {k: v - before[1].get(k, 0.0) for k, v in ev.cpu_timings.items()})
        for counters, previous in zip((ev.timings, ev.cpu_timings), before):
            counters.clear()
            counters.update(previous)
        return out, spent

    def _video(self, rel: str, orig: Path, anon: Path) -> tuple:
        """``(rel, "record", PairResult, None)`` of a video pair, or ``(rel, None, None,
        error)``: the video needs its private record (the tracks)."""
        progress = self.progress
        try:
            record = read_record(anon, rel)
            if record is None:
                raise ValueError(f"{anon}: no private record at {record_path(anon, rel)}; a "
                                 "video is evaluated over the tracks faceanon anonymize records")
            res = evaluate_video(self.evaluator, orig, anon, rel, record, self.frame_step,
                                 (lambda done, total: progress(rel, done, total))
                                 if progress else None)
        except (ImageError, ValueError) as e:
            return rel, None, None, str(e)
        return rel, "record", res, None


def evaluate_files(
    files: list[tuple[str, Path, Path]],
    evaluator: Evaluator | None = None,
    batch: int = 8,
    workers: int = 1,
    engine: Engine | str = "local",
    frame_step: int = DEFAULT_FRAME_STEP,
    progress: Callable[[str, int, int], None] | None = None,
) -> Iterator[tuple[str, str | None, PairResult | None, str | None]]:
    """``(rel, faces_from, PairResult | None, error | None)`` for each ``(rel, original path,
    anonymized path)`` of ``files``, in their order, as the batches finish.

    The original's faces come from the anonymized image's private record (``faces_from`` is
    ``"record"``, :func:`.pairing.faces_from_record`), else from detection (``"detection"``);
    an unreadable file, a record that
    cannot be read or two sizes that differ give ``error`` (one line) and no result. Pairs are
    evaluated in batches of ``batch``; ``workers > 1`` runs the batches in that many processes
    (``0``: ``parallel.auto_workers`` over the pairs), each loading its own models with
    the evaluator's settings. The seconds spent in every process are added to ``evaluator``'s
    ``timings`` and ``cpu_timings``. ``engine``: where the batches run (:mod:`..engines`:
    ``local`` processes or ``ray`` actors, ``workers`` of them).

    A video (:data:`~fiftyone_faceanon.videoio.VIDEO_EXTENSIONS`) is a batch of its own and
    needs its private record (:func:`.video.evaluate_video`: the suite on every
    ``frame_step``-th frame, the temporal metrics on all); ``progress(rel, done, total)`` is
    called after each of its frames when it is evaluated in this process (one worker).
    """
    ev = evaluator or default_evaluator()
    engine = as_engine(engine)
    batches: list[list[tuple[str, Path, Path]]] = []
    for item in files:
        if is_video(item[2]) or not batches or len(batches[-1]) >= batch or is_video(
                batches[-1][0][2]):
            batches.append([item])
        else:
            batches[-1].append(item)
    run = _Batch(ev, frame_step, progress)
    for done, (wall, cpu) in engine.imap(run, batches,
                                         workers or engine.auto_workers(len(files))):
        for name in wall:
            ev.timings[name] += wall[name]
            ev.cpu_timings[name] += cpu[name]
        yield from done


def linkability_summary(results: dict[str, PairResult], identities: str,
                        thresholds: dict[str, float]) -> dict[str, dict]:
    """``link_same_<judge>``, ``link_diff_<judge>`` (match rates at the judge's threshold between
    anonymized faces of two photos of the same person / of two different people) and
    ``sim_diff_<judge>`` (their mean cosine between different people) as ``{"mean", "std", "n"}``,
    over the largest face of each file whose relative path ``identities`` labels."""
    from .identity import linkability

    out: dict[str, dict] = {}
    for judge, threshold in thresholds.items():
        rows, people = [], []
        for rel, res in results.items():
            person = group_label(rel, identities)
            if person is None or judge not in res.anonymized or not len(res.originals):
                continue
            largest = int(np.argmax([(f.box[2] - f.box[0]) * (f.box[3] - f.box[1])
                                     for f in res.originals]))
            rows.append(res.anonymized[judge][largest])
            people.append(person)
        if len(rows) >= 2:
            link = linkability(np.stack(rows), np.array(people), threshold)
            out[f"link_same_{judge}"] = link["same"]
            out[f"link_diff_{judge}"] = link["different"]
            out[f"sim_diff_{judge}"] = link["similarity_different"]
    return out


def video_summary(videos: list[dict]) -> dict[str, dict]:
    """``{metric: {"mean", "std", "median", "n"}}`` over videos of each of their
    :func:`.temporal.video_scalars` (``videos``: :attr:`PairResult.video` of each)."""
    rows = [video_scalars(v["temporal"]) for v in videos]
    names = dict.fromkeys(name for row in rows for name in row)
    return {name: describe(row.get(name) for row in rows) for name in names}


def evaluate_dirs(
    orig_dir: Path,
    anon_dir: Path,
    groups: str | None = None,
    evaluator: Evaluator | None = None,
    batch: int = 8,
    on_pair: Callable[[str, str | None], None] | None = None,
    workers: int = 1,
    engine: Engine | str = "local",
    identities: str | None = None,
    frame_step: int = DEFAULT_FRAME_STEP,
    on_frame: Callable[[str, int, int], None] | None = None,
) -> dict:
    """The report of ``faceanon evaluate``: every image and video of ``anon_dir`` against the
    file at the same relative path in ``orig_dir``.

    A video's faces are those of every ``frame_step``-th frame, each record with its ``frame``
    and ``track``; its pair also gets ``video`` (:func:`.video.evaluate_video`: the per-frame
    metrics per video, mean and worst frame, and the temporal metrics), and the summary the
    videos' :func:`.temporal.video_scalars` (:func:`video_summary`). ``on_frame(rel, done,
    total)`` follows a video's frames when it is evaluated in this process.

    With ``identities`` (a regex whose first group names the person of a file, e.g. LFW's
    ``'^([^/]+)/'``) the summary also gets the linkability of the anonymized faces
    (:func:`.identity.linkability`, the largest face of each image).

    Returns ``{"summary": {metric: {"mean", "std", "n"}}, "groups": {label: summary}`` (when
    ``groups``, a regex whose first group labels a file's relative path), ``"pairs": [{"file",
    "faces_from", "faces": [per-face records]}], "unavailable": {metric: reason}, "errors":
    [one line per unpaired or unreadable file]}``. ``on_pair(rel, error)`` is called once per
    file (error None when it was evaluated). ``workers > 1`` evaluates batches of ``batch``
    pairs in that many processes (``0``: one per core for a large enough folder), each with
    the evaluator's settings; the report is the same, and ``evaluator``'s timings add up the
    time spent in every process. ``engine``: where the batches run (:func:`evaluate_files`).
    """
    ev = evaluator or default_evaluator()
    orig_dir, anon_dir = Path(orig_dir), Path(anon_dir)
    originals, anonymized = media_files(orig_dir), media_files(anon_dir)
    errors: list[str] = []

    def fail(rel: str, message: str) -> None:
        errors.append(message)
        if on_pair:
            on_pair(rel, message)

    for rel in sorted(set(originals) - set(anonymized)):
        fail(rel, f"{originals[rel]}: no anonymized file at {anon_dir / rel}")
    for rel in sorted(set(anonymized) - set(originals)):
        fail(rel, f"{anonymized[rel]}: no original file at {orig_dir / rel}")
    paired = [(rel, originals[rel], anonymized[rel])
              for rel in sorted(set(originals) & set(anonymized))]
    pairs: list[dict] = []
    results: dict[str, PairResult] = {}
    for rel, faces_from, res, error in evaluate_files(paired, ev, batch, workers, engine,
                                                      frame_step, on_frame):
        if error:
            fail(rel, error)
            continue
        results[rel] = res
        pairs.append({"file": rel, "faces_from": faces_from, "faces": res.faces,
                      **({"video": res.video} if res.video is not None else {})})
        if on_pair:
            on_pair(rel, None)
    linked = linkability_summary(results, identities, ev.far_thresholds) if identities else {}
    report = {
        "orig": str(orig_dir),
        "anon": str(anon_dir),
        "summary": {**summarize([f for p in pairs for f in p["faces"]]),
                    **ev.dataset_metrics(list(results.values())), **linked,
                    **video_summary([p["video"] for p in pairs if "video" in p])},
        "pairs": pairs,
        "unavailable": dict(ev.unavailable),
        "errors": errors,
    }
    if groups:
        labels: dict[str, list[str]] = {}
        for p in pairs:
            labels.setdefault(group_label(p["file"], groups) or "(no match)", []).append(p["file"])
        report["groups"] = {
            label: {**summarize([f for rel in rels for f in results[rel].faces]),
                    **ev.dataset_metrics([results[rel] for rel in rels])}
            for label, rels in sorted(labels.items())
        }
    return report

