"""The FiftyOne API: anonymize, evaluate, flag and release the samples of a FiftyOne view.

The operators of the ``@faceanon/faceanon`` plugin (``operators/``) are thin wrappers over these
functions; notebooks and scripts call them directly.

Layout on each sample (one image or video per sample; the dataset stays flat):

- ``filepath``: the original, never written to.
- ``anonymized_filepath``: the anonymized copy in the output folder, listed in
  ``dataset.app_config.media_fields`` so the App's media selector shows it beside the original.
  An alternate media field was chosen over a grouped dataset so that every existing view, label
  field and saved query of the user's dataset keeps working unchanged.
- ``faces``: ``fo.Detections``, one ``face`` per detection, at the *anonymized* face's geometry
  (relative ``[x, y, w, h]`` box, detector score as ``confidence``), with the per-face fields of
  the sidecar: ``donor``, ``geometry``, ``tries``, ``verification`` (``verified``, ``replaced``,
  ``too_small``, ``fail_closed:<how>``, or on a video ``covered:<how>``) and
  ``similarity_<judge>`` (each judge's final cosine to the original); :func:`evaluate_samples`
  puts each face's metrics on it.
- ``face_landmarks``: ``fo.Keypoints``, one per face, the anonymized face's 68 iBUG points in
  relative ``[x, y]``: what a release carries (the original's landmarks stay in the private
  record, ``<output_dir>.private``).
- ``anonymization_error`` + tag ``faceanon_error``: why a sample could not be processed.

A video sample (``media_type == "video"``) gets the same ``anonymized_filepath`` (the anonymized
video) and, on every frame ``sample.frames[t + 1]`` of it, ``faces`` and ``face_landmarks`` as
an image's, built from the video's public sidecar: the detection's ``index`` is the face's track
id (one person, one fake identity, through the video), its ``donor``, ``geometry``, ``tries``,
``verification`` and ``similarity_<judge>`` are its track's, and ``source`` says how the face
was found in that frame (``detected``, ``tracked``, ``interpolated``, ``extrapolated``). A
grouped dataset is processed slice by slice: its image and video slices as above, other media
(3D, point clouds) left alone.

The work is the core's: :func:`anonymize_samples` runs :class:`fiftyone_faceanon.batch.Worker`
jobs (public sidecar ``<output_dir>/<sample id><ext>.json`` beside each output, private record
``<output_dir>.private/<sample id><ext>.json``, which is also what makes a rerun skip unchanged
samples) and :func:`evaluate_samples` runs
:func:`fiftyone_faceanon.metrics.evaluate_files`, both through an engine of
:mod:`fiftyone_faceanon.engines` (``engine="local"``: processes on this machine, ``"ray"``: actors
on a Ray cluster; ``workers``: how many, ``0`` one per core for a large enough view, as in the
CLI). This module, in the calling process, only turns samples into jobs and results into fields.
"""

from __future__ import annotations

import json
import time
from functools import lru_cache
from pathlib import Path
from typing import Callable

import fiftyone as fo
import fiftyone.core.media as fom

from .anonymizers import DEFAULT_BACKEND
from .batch import Job, Worker, run_jobs, unlink_run, video_threads, worker_pool
from .engines import as_engine
from .faces import Face
from .images import IMAGE_EXTENSIONS, MAX_PIXELS, image_size, record_path
from .metrics.video import DEFAULT_FRAME_STEP
from .photometric import MOST_DETAIL, PhotometricSettings
from .pipeline import DEFAULT_GEOMETRY, Settings
from .tracking import TrackSettings
from .video import VideoSettings
from .videoio import VIDEO_EXTENSIONS

MEDIA_FIELD = "anonymized_filepath"
FACES_FIELD = "faces"
LANDMARKS_FIELD = "face_landmarks"
ERROR_FIELD = "anonymization_error"
ERROR_TAG = "faceanon_error"
#: Fields that only make sense next to the originals; never copied into a release.
BOOKKEEPING_FIELDS = (MEDIA_FIELD, ERROR_FIELD)
#: The media types :func:`anonymize_samples` processes (other slices of a grouped dataset are
#: left alone).
MEDIA_TYPES = (fom.IMAGE, fom.VIDEO)

#: ``progress(done, total)``: ``done`` of ``total`` samples; :func:`anonymize_samples` also
#: reports the frames of a video in progress as a fraction of a sample.
Progress = Callable[[float, int], None]


def default_output_dir(dataset: fo.Dataset) -> str:
    """``<fo.config.default_dataset_dir>/faceanon/<dataset name>``."""
    return str(Path(fo.config.default_dataset_dir) / "faceanon" / dataset.name)


def _throttled(progress: Progress | None, total: int, every: float = 0.5
               ) -> Callable[[float], None]:
    """``tick(done)`` calls ``progress(done, total)`` at most every ``every`` seconds and at the
    end."""
    last = [0.0]

    def tick(done: float) -> None:
        now = time.monotonic()
        if progress is not None and (done == total or now - last[0] >= every):
            last[0] = now
            progress(done, total)

    return tick


def face_labels(faces: list[Face], width: int, height: int, extra: list[dict] | None = None,
                indices: list[int] | None = None) -> tuple[fo.Detections, fo.Keypoints]:
    """Faces in a ``width`` x ``height`` image -> ``(Detections, Keypoints)`` in relative
    coordinates: box ``[x0/W, y0/H, (x1-x0)/W, (y1-y0)/H]``, landmarks (68, 2) ``/ [W, H]``;
    ``extra[i]`` holds more attributes of detection ``i``, ``indices[i]`` its ``index`` (default
    ``i``)."""
    detections, keypoints = [], []
    for i, f in enumerate(faces):
        index = i if indices is None else indices[i]
        x0, y0, x1, y1 = (float(v) for v in f.box)
        detections.append(fo.Detection(
            label="face", bounding_box=[x0 / width, y0 / height, (x1 - x0) / width,
                                        (y1 - y0) / height],
            confidence=float(f.score), index=index, **(extra[i] if extra else {})))
        points = [[float(x) / width, float(y) / height] for x, y in f.landmarks]
        keypoints.append(fo.Keypoint(label="face", points=points, index=index))
    return fo.Detections(detections=detections), fo.Keypoints(keypoints=keypoints)


def anonymize_samples(
    view: fo.core.collections.SampleCollection,
    output_dir: str | Path,
    backend: str = DEFAULT_BACKEND,
    seed: int = 0,
    relight: bool = True,
    pyramid: bool = True,
    color_transfer: bool = True,
    detail_match: bool = True,
    detector: str = "mtcnn",
    device: str = "auto",
    any_roll: bool = True,
    overwrite: bool = False,
    workers: int = 0,
    progress: Progress | None = None,
    geometry: float = DEFAULT_GEOMETRY,
    donors: str | Path | None = None,
    verify: bool = True,
    on_fail: str = "blur",
    engine: str = "local",
    ray_address: str | None = None,
    unlink: bool = True,
    same_group: bool = False,
    detect_every: int = TrackSettings().detect_every,
    video_quality: int = VideoSettings().quality,
    strip_audio: bool = False,
) -> dict:
    """Anonymize each sample's image or video into ``output_dir/<sample id><ext>`` (never over
    the original) and store ``anonymized_filepath``, and ``faces`` and ``face_landmarks`` on it
    (on each of its frames for a video; module docstring).

    One :class:`fiftyone_faceanon.batch.Job` per sample, run by a
    :class:`~fiftyone_faceanon.batch.Worker` as ``faceanon anonymize`` runs files, with the same
    options (``any_roll``, ``geometry``, ``donors``, ``verify``, ``on_fail``, ``unlink``,
    ``same_group``; for videos ``detect_every``, ``video_quality`` and ``strip_audio``: see
    ``faceanon anonymize --help``), then :func:`~fiftyone_faceanon.batch.unlink_run` over
    them: the output's public sidecar ``<output>.json`` and private record
    ``<output_dir>.private/<output name>.json``; a rerun skips every sample whose record
    matches (its fields are set again from them) unless ``overwrite``. ``workers``: processes,
    ``0`` one per core when each gets 32 samples or more. ``engine``: ``local``, ``ray`` (the
    Ray cluster at ``ray_address``, else
    ``RAY_ADDRESS``, else a Ray instance started here) or ``auto`` (ray when an address is
    known); the fields are written here either way. An unreadable image or video, or one whose
    face failed verification with ``on_fail="error"``, gets ``anonymization_error`` and the
    ``faceanon_error`` tag, and the run goes on; a face (or video track) handled fail-closed is
    written, counted as ``unverified`` and its line added to ``errors``. ``progress(done,
    total)`` is called as samples finish and, while a video is processed in this process (one
    worker), per frame, with the fraction of it done added to ``done`` (its tracking pass the
    first half, its rendering the second). Returns ``{"ok", "no_face", "skipped", "unverified",
    "error": counts, "errors": [one line each]}``.
    """
    settings = Settings(backend=backend, seed=seed, detector=detector, device=device,
                        any_roll=any_roll,
                        photometric=PhotometricSettings(
                            relight, pyramid, color_transfer,
                            most_detail=MOST_DETAIL if detail_match else None),
                        geometry=geometry, donors=str(donors) if donors else None,
                        verify=verify, on_fail=on_fail, unlink=unlink,
                        same_group=same_group)
    video = VideoSettings(tracking=TrackSettings(detect_every=detect_every),
                          quality=video_quality, strip_audio=strip_audio)
    out = Path(output_dir).expanduser().resolve()
    dataset = view._dataset
    if MEDIA_FIELD not in dataset.app_config.media_fields:
        dataset.app_config.media_fields = [*dataset.app_config.media_fields, MEDIA_FIELD]
        dataset.save()
    for name in (MEDIA_FIELD, ERROR_FIELD):
        if not dataset.has_sample_field(name):
            dataset.add_sample_field(name, fo.StringField)
    parts = [(part, *part.values(["id", "filepath"])) for part in _media_views(view)]
    jobs = [Job(Path(path), f"{sample_id}{_output_suffix(path, part.media_type)}")
            for part, ids, paths in parts for sample_id, path in zip(ids, paths)]
    run_on = as_engine(engine, ray_address)
    worker = Worker(settings, out, overwrite, MAX_PIXELS, video=video,
                    threads=video_threads(run_on, workers, len(jobs)))
    summary = {"ok": 0, "no_face": 0, "skipped": 0, "unverified": 0, "error": 0, "errors": []}
    tick = _throttled(progress, len(jobs))
    finished = [0]

    def on_frame(stage: str, done: int, frames: int) -> None:
        tick(finished[0] + 0.5 * (stage != "track") + 0.5 * done / max(frames, 1))

    worker.progress = on_frame
    outcomes = []
    with worker_pool(run_on, worker, jobs, workers) as run:
        for outcome in run_jobs(run, jobs):
            outcomes.append(outcome)
            finished[0] += 1
            tick(finished[0])
        done = iter(unlink_run(run, worker, jobs, outcomes))
    for part, ids, _ in parts:
        with part.save_context() as saver:
            for sample, outcome in zip(_samples(part, ids), done):
                _set_fields(sample, outcome, out, summary)
                saver.save(sample)
    return summary


def _set_fields(sample: fo.Sample, outcome, out: Path, summary: dict) -> None:
    """Count ``outcome`` in ``summary`` and put it on ``sample``: its error, or its output and
    labels (per frame for a video)."""
    summary[outcome.status] += 1
    if outcome.status == "error":
        sample[ERROR_FIELD] = outcome.message
        if ERROR_TAG not in sample.tags:
            sample.tags.append(ERROR_TAG)
        summary["errors"].append(outcome.message)
        return
    if outcome.status == "unverified":
        summary["errors"].append(outcome.message)
    dst = out / outcome.rel
    if sample.media_type == fom.VIDEO:
        for number, (detections, keypoints) in enumerate(video_face_labels(dst, outcome.rel), 1):
            frame = sample.frames[number]
            frame[FACES_FIELD], frame[LANDMARKS_FIELD] = detections, keypoints
    else:
        sample[FACES_FIELD], sample[LANDMARKS_FIELD] = face_labels(
            *anonymized_faces(dst, outcome.rel))
    sample[MEDIA_FIELD], sample[ERROR_FIELD] = str(dst), None
    if ERROR_TAG in sample.tags:
        sample.tags.remove(ERROR_TAG)


def _face_fields(public: dict, private: dict) -> dict:
    """The label attributes of one anonymized face (or video track) from its public sidecar
    entry and private record entry: ``donor``, ``geometry``, ``tries``, ``verification`` and
    each judge's final ``similarity_<judge>``."""
    return {"donor": public["donor"], "geometry": public["geometry"], "tries": public["tries"],
            "verification": public["status"],
            **{f"similarity_{j}": v for j, v in private["similarity"].items()}}


def anonymized_faces(dst: Path, rel: str) -> tuple[list[Face], int, int, list[dict]]:
    """The anonymized faces of the output ``dst`` (``output_dir/rel``) from its public sidecar,
    the image's width and height, and each face's sidecar fields with each judge's final
    similarity from the private record, as :func:`face_labels` takes them."""
    from .metrics.pairing import faces_from_records

    public = json.loads(dst.with_name(dst.name + ".json").read_text())["faces"]
    private = json.loads(record_path(dst, rel).read_text())["faces"]
    extra = [_face_fields(p, r) for p, r in zip(public, private)]
    return faces_from_records(public), *image_size(dst), extra


def video_face_labels(dst: Path, rel: str) -> list[tuple[fo.Detections, fo.Keypoints]]:
    """Per frame of the anonymized video ``dst`` (``output_dir/rel``), its faces as
    :func:`face_labels` makes them, from the public sidecar (the anonymized geometry): each
    detection's ``index`` is its track id, its attributes its track's (:func:`_face_fields`,
    the similarities from the private record) and its ``source`` in that frame."""
    from .metrics.pairing import faces_from_records

    public = json.loads(dst.with_name(dst.name + ".json").read_text())
    private = {t["track"]: t for t in json.loads(record_path(dst, rel).read_text())["tracks"]}
    tracks = {t["track"]: _face_fields(t, private[t["track"]]) for t in public["tracks"]}
    width, height = public["video"]["width"], public["video"]["height"]
    return [face_labels(faces_from_records(faces), width, height,
                        [{**tracks[f["track"]], "source": f["source"]} for f in faces],
                        [f["track"] for f in faces])
            for faces in public["frames"]]


def _media_views(view: fo.core.collections.SampleCollection
                 ) -> list[fo.core.collections.SampleCollection]:
    """``view`` itself, or for a grouped collection its image and video samples, one view per
    media type (:data:`MEDIA_TYPES`)."""
    if view.media_type != fom.GROUP:
        return [view]
    present = set(view.group_media_types.values())
    return [view.select_group_slices(media_type=m) for m in MEDIA_TYPES if m in present]


def _samples(view: fo.core.collections.SampleCollection, ids: list[str]):
    """``view``'s samples, checked to come in the order of ``ids`` (those the jobs were made
    from)."""
    for sample_id, sample in zip(ids, view.iter_samples()):
        if sample.id != sample_id:
            raise RuntimeError(f"{view._dataset.name}: the view changed during the run; "
                               "run it again")
        yield sample


def _output_suffix(path: str, media_type: str) -> str:
    """The original's extension when the core can write it, else ``.png`` for an image and
    ``.mp4`` for a video."""
    suffix = Path(path).suffix.lower()
    if media_type == fom.VIDEO:
        return suffix if suffix in VIDEO_EXTENSIONS else ".mp4"
    return suffix if suffix in IMAGE_EXTENSIONS else ".png"


def _release_fields(schema: dict) -> list[str]:
    """The fields of a sample (or frame) ``schema`` that a release keeps: labels and scalar
    metrics; not the bookkeeping, not strings (paths), not vectors or arrays (embeddings)."""
    keep = []
    for name, field in schema.items():
        if name in ("id", "filepath", "tags", "metadata", "created_at", "last_modified_at",
                    "frame_number", *BOOKKEEPING_FIELDS):
            continue
        if isinstance(field, fo.EmbeddedDocumentField) and issubclass(field.document_type,
                                                                      fo.Label):
            keep.append(name)
        elif isinstance(field, (fo.FloatField, fo.IntField, fo.BooleanField)):
            keep.append(name)
    return keep


def _add_field_like(add: Callable, name: str, field: fo.Field) -> None:
    """``add(name, ...)`` (a dataset's ``add_sample_field`` or ``add_frame_field``) a field of
    ``field``'s type."""
    kwargs = {"embedded_doc_type": field.document_type} if isinstance(
        field, fo.EmbeddedDocumentField) else {}
    add(name, type(field), **kwargs)


def _copy_value(value):
    """A release's copy of a field value: labels copied (new ids), scalars as they are."""
    return value.copy() if isinstance(value, fo.Label) else value


def export_anonymized_release(
    view: fo.core.collections.SampleCollection,
    name: str,
    export_dir: str | Path | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> fo.Dataset:
    """A new dataset ``name`` whose samples are the anonymized images or videos of ``view``
    (samples not anonymized yet are left out) with every label field, scalar metric field and
    tag copied, and for videos every such frame field of every frame.

    Nothing points back to the originals: no original path, no string or vector field
    (embeddings), no bookkeeping, no runs. With ``export_dir`` the release is also written there
    as a ``fo.types.FiftyOneDataset`` (media copied). A grouped ``view`` is refused: release
    each media type (``view.select_group_slices(media_type=...)``). Returns the new dataset.
    """
    dataset = view._dataset
    if view.media_type == fom.GROUP:
        raise ValueError(f"{dataset.name}: a grouped view; release each media type on its own "
                         "(view.select_group_slices(media_type='image' or 'video'))")
    if not dataset.has_sample_field(MEDIA_FIELD):
        raise ValueError(f"{dataset.name}: nothing anonymized yet; run anonymize_samples")
    if fo.dataset_exists(name):
        if not overwrite:
            raise ValueError(f"{name}: a dataset of that name exists; pass overwrite=True")
        fo.delete_dataset(name)
    done = view.exists(MEDIA_FIELD).exists(ERROR_FIELD, False)
    video = view.media_type == fom.VIDEO
    schema = dataset.get_field_schema()
    frame_schema = dataset.get_frame_field_schema() if video else {}
    fields, frame_fields = _release_fields(schema), _release_fields(frame_schema)
    release = fo.Dataset(name, persistent=True)
    if video:
        release.media_type = fom.VIDEO
    for field_name in fields:
        _add_field_like(release.add_sample_field, field_name, schema[field_name])
    for field_name in frame_fields:
        _add_field_like(release.add_frame_field, field_name, frame_schema[field_name])
    paths = [MEDIA_FIELD, "tags", *fields]
    if frame_fields:
        paths += ["frames.frame_number", *(f"frames.{f}" for f in frame_fields)]
    tick = _throttled(progress, len(done))
    samples = []
    for i, values in enumerate(zip(*done.values(paths)), 1):
        sample = fo.Sample(filepath=values[0], tags=list(values[1]))
        for field_name, value in zip(fields, values[2:]):
            sample[field_name] = _copy_value(value)
        if frame_fields:
            numbers, *per_field = values[2 + len(fields):]
            for number, *frame_values in zip(numbers, *per_field):
                for field_name, value in zip(frame_fields, frame_values):
                    if value is not None:
                        sample.frames[number][field_name] = _copy_value(value)
        samples.append(sample)
        tick(i)
    release.add_samples(samples, progress=False)
    if export_dir is not None:
        release.export(str(export_dir), dataset_type=fo.types.FiftyOneDataset, export_media=True,
                       overwrite=overwrite, progress=False)
    return release


#: The per-sample metric fields :func:`evaluate_samples` writes (the worst face's value).
METRIC_FIELDS = ("detected", "reid_facenet_casia", "reid_dlib", "reid_found_facenet_casia",
                 "reid_found_dlib", "landmark_nme_68", "landmark_nme_51", "emotion_match",
                 "si_mse", "si_l2", "delta_l", "delta_c", "delta_e2000")
#: Which calibrated threshold of a judge :func:`flag_reidentifiable` applies.
OPERATING_POINTS = ("far_1e-3", "accuracy")


class AnonymizationMetricsConfig(fo.core.runs.RunConfig):
    """The run :func:`evaluate_samples` registers; ``fields`` are the sample fields and detection
    attributes it wrote, removed with it by ``dataset.delete_run(key)``."""

    def __init__(self, fields=None, judges=None, device="auto", **kwargs):
        kwargs.setdefault("method", "faceanon_metrics")
        super().__init__(fields=list(fields or []), judges=judges, device=device, **kwargs)


class AnonymizationMetrics(fo.core.runs.Run):
    """Run class of :class:`AnonymizationMetricsConfig` (found by FiftyOne from its name)."""

    def get_fields(self, samples, key):
        return list(self.config.fields)

    def cleanup(self, samples, key):
        dataset = samples._root_dataset
        for path in self.config.fields:
            if path.startswith("frames.") and dataset.has_frame_field(path[len("frames."):]):
                dataset.delete_frame_field(path[len("frames."):])
            elif dataset.has_field(path):
                dataset.delete_sample_field(path)


@lru_cache(maxsize=2)
def _evaluator(judges: tuple[str, ...] | None, device: str):
    from .metrics import Evaluator

    return Evaluator(judges, device)


def _video_fields(res, sample: fo.Sample, attrs: list[str]) -> dict:
    """Put a video's :class:`~fiftyone_faceanon.metrics.PairResult` on its ``sample``: each
    evaluated face's metrics on its frame's detection (the one whose ``index`` is its track),
    and per :data:`METRIC_FIELDS` metric the worst value over the evaluated faces, its
    ``_mean`` and ``_worst_frame`` (a FiftyOne frame number, from 1). Returns the sample fields
    of the temporal metrics (:func:`fiftyone_faceanon.metrics.temporal.video_scalars`) to set."""
    from .metrics.temporal import video_scalars

    for rec in res.faces:
        frame = sample.frames[rec["frame"] + 1]
        faces = frame.get_field(FACES_FIELD) if frame.has_field(FACES_FIELD) else None
        for det in faces.detections if faces is not None else []:
            if det.index == rec["track"]:
                for name in attrs:
                    det[name] = rec.get(name)
    per_frame = res.video["per_frame"]
    for name in METRIC_FIELDS:
        m = per_frame.get(name)
        sample[name] = m and m["worst"]
        sample[f"{name}_mean"] = m and m["mean"]
        sample[f"{name}_worst_frame"] = m and m["worst_frame"] + 1
    return video_scalars(res.video["temporal"])


def evaluate_samples(
    view: fo.core.collections.SampleCollection,
    run_key: str = "faceanon_metrics",
    judges: list[str] | None = None,
    device: str = "auto",
    batch: int = 8,
    overwrite: bool = True,
    workers: int = 0,
    progress: Progress | None = None,
    engine: str = "local",
    ray_address: str | None = None,
    frame_step: int = DEFAULT_FRAME_STEP,
) -> dict:
    """Compare each anonymized sample of ``view`` with its original over the faces
    :func:`anonymize_samples` found (read from the output's private record), with the core's
    :func:`fiftyone_faceanon.metrics.evaluate_files` as ``faceanon evaluate`` runs it: batches
    of ``batch`` pairs, ``workers`` processes (``0``: one per core when each gets 32 batches or
    more), on the ``engine`` of :func:`anonymize_samples`.

    Every face's metrics go on its detection in ``faces``; each sample gets the
    :data:`METRIC_FIELDS`, set by its worst face (``metrics.worst_face``; None without a face).
    A video sample (``media_type == "video"``, its faces on its frames, each detection's
    ``index`` its track) is evaluated as ``faceanon evaluate`` evaluates a video
    (``metrics.video.evaluate_video``): the faces of every ``frame_step``-th frame get their
    metrics on their frame's detections; the
    sample gets the worst of them as :data:`METRIC_FIELDS`, their mean as ``<metric>_mean`` and
    the frame number of the worst as ``<metric>_worst_frame``, and the temporal metrics
    (``metrics.temporal.video_scalars``: ``leaked_frames_<judge>``, ``leak_similarity_<judge>``,
    ``unreplaced_faces``, ``stability_<judge>``, ``stability_worst_<judge>``,
    ``stability_original_<judge>``, ``jitter_original``, ``jitter_output``, ``jitter_ratio``);
    their frames are in the run's
    results (``videos``). ``progress(done, total)`` counts samples, a video's frames as
    fractions of it while it is evaluated in this process (one worker).

    The dataset summary (``metrics.summarize`` mean/std/n per metric, plus ``fid_facenet`` and
    ``kid_facenet``, and the videos' temporal metrics) is saved as the run ``run_key``:
    ``dataset.list_runs()``, ``dataset.load_run_results(run_key).summary``,
    ``dataset.delete_run(run_key)`` (which also removes the fields). Returns ``{"evaluated",
    "errors": [one line each], "summary"}``.
    """
    from .metrics import PER_FACE, evaluate_files, summarize, worst_face
    from .metrics.evaluate import video_summary

    dataset = view._dataset
    video = view.media_type == fom.VIDEO
    ev = _evaluator(tuple(judges) if judges else None, device)
    attrs = [n for n in PER_FACE if n not in ev.unavailable]
    labels = f"frames.{FACES_FIELD}" if video else FACES_FIELD
    fields = [*METRIC_FIELDS, *(f"{labels}.detections.{n}" for n in attrs)]
    types = dict.fromkeys(METRIC_FIELDS, fo.FloatField)
    if video:
        types.update({f"{n}_mean": fo.FloatField for n in METRIC_FIELDS})
        types.update({f"{n}_worst_frame": fo.IntField for n in METRIC_FIELDS})
        fields += [n for n in types if n not in fields]
    config = AnonymizationMetricsConfig(fields=fields, judges=judges, device=device)
    dataset.register_run(run_key, config, overwrite=overwrite)
    for name, kind in types.items():
        if not dataset.has_sample_field(name):
            dataset.add_sample_field(name, kind)
    todo = view.exists(MEDIA_FIELD).exists(ERROR_FIELD, False)
    ids, originals, anonymized = todo.values(["id", "filepath", MEDIA_FIELD])
    # rel: the output's name under output_dir, which locates its private record
    files = [(Path(a).name, Path(o), Path(a)) for o, a in zip(originals, anonymized)]
    errors, records, results, videos = [], [], [], {}
    tick = _throttled(progress, len(files))
    finished = [0]
    evaluated = evaluate_files(files, ev, batch, workers, as_engine(engine, ray_address),
                               frame_step,
                               lambda rel, done, total: tick(finished[0] + done / total))
    with todo.save_context() as saver:
        for (rel, _, res, error), sample in zip(evaluated, _samples(todo, ids)):
            if error:
                errors.append(error)
            elif res.video is not None:
                for name, value in _video_fields(res, sample, attrs).items():
                    if name not in fields:
                        fields.append(name)
                        dataset.add_sample_field(name, fo.IntField if isinstance(value, int)
                                                 else fo.FloatField)
                    sample[name] = value
                saver.save(sample)
                records += res.faces
                results.append(res)
                videos[sample.id] = res.video
            else:
                for det, rec in zip(sample[FACES_FIELD].detections, res.faces):
                    for name in attrs:
                        det[name] = rec.get(name)
                worst = worst_face(res.faces)
                for name in METRIC_FIELDS:
                    sample[name] = worst.get(name)
                saver.save(sample)
                records += res.faces
                results.append(res)
            finished[0] += 1
            tick(finished[0])
    if len(fields) > len(config.fields):
        config.fields = list(fields)
        dataset.update_run_config(run_key, config)
    summary = {**summarize(records), **ev.dataset_metrics(results),
               **video_summary(list(videos.values()))}
    results_doc = dataset.init_run_results(run_key, summary=summary, errors=errors,
                                           unavailable=dict(ev.unavailable), evaluated=len(results),
                                           videos=videos)
    dataset.save_run_results(run_key, results_doc, overwrite=True)
    return {"evaluated": len(results), "errors": errors, "summary": summary}


def flag_reidentifiable(
    view: fo.core.collections.SampleCollection,
    operating_point: str = "far_1e-3",
    thresholds: dict[str, float] | None = None,
    tag: str = "reidentifiable",
    progress: Progress | None = None,
) -> dict:
    """Tag every sample of ``view`` whose ``reid_<judge>`` or ``reid_found_<judge>`` (its worst
    face's cosine between the original and anonymized embeddings, at the original face's place
    or where the face is found again in the output, from :func:`evaluate_samples`) is at or above
    the judge's threshold: the pre-commit gate's rule ``s_j >= t_j`` for any judge ``j``.
    ``thresholds`` ``{judge: t}`` override the calibrated ``operating_point`` ones
    (``metrics.identity.judge_thresholds()``). Earlier ``tag``s in the view are replaced.
    Returns ``{"flagged": samples tagged, "<judge>": samples at or above its threshold}``."""
    from .metrics.identity import judge_thresholds

    if operating_point not in OPERATING_POINTS:
        raise ValueError(f"operating point {operating_point!r}: choose one of {OPERATING_POINTS}")
    calibrated = {j: t[operating_point] for j, t in judge_thresholds().items()
                  if operating_point in t}
    limits = {**calibrated, **(thresholds or {})}
    limits = {j: t for j, t in limits.items() if view.has_sample_field(f"reid_{j}")}
    if not limits:
        raise ValueError(f"{view._dataset.name}: no judge with both a reid_<judge> field "
                         "(run evaluate_samples) and a threshold (calibrate or pass thresholds)")
    view.untag_samples(tag)
    counts = {}
    flagged = set()
    for judge, t in sorted(limits.items()):
        fields = [f for f in (f"reid_{judge}", f"reid_found_{judge}")
                  if view.has_sample_field(f)]
        ids = view.match(fo.ViewExpression.any([fo.ViewField(f) >= t for f in fields])
                         ).values("id")
        counts[judge] = len(ids)
        flagged.update(ids)
    view.select(list(flagged)).tag_samples(tag)
    if progress is not None:
        progress(len(view), len(view))
    return {"flagged": len(flagged), **counts}


PLUGIN_NAME = "@faceanon/faceanon"


def plugin_source() -> Path:
    """The installed plugin folder (``operators/`` in a checkout, ``fiftyone_faceanon/plugin`` in
    a wheel), found without importing it."""
    import importlib.util

    spec = importlib.util.find_spec("fiftyone_faceanon.plugin")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("fiftyone_faceanon.plugin is not installed; reinstall the package")
    return Path(next(iter(spec.submodule_search_locations)))


def install_plugin(plugins_dir: str | Path | None = None, copy: bool = False) -> Path:
    """Make the plugin visible to FiftyOne: link (or ``copy``) :func:`plugin_source` to
    ``<plugins_dir>/faceanon`` (default ``fo.config.plugins_dir``), replacing an earlier install.
    Returns the installed path."""
    import shutil

    root = Path(plugins_dir or fo.config.plugins_dir).expanduser()
    dst = root / "faceanon"
    root.mkdir(parents=True, exist_ok=True)
    if dst.is_symlink() or dst.is_file():
        dst.unlink()
    elif dst.is_dir():
        shutil.rmtree(dst)
    src = plugin_source()
    if copy:
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
    else:
        dst.symlink_to(src, target_is_directory=True)
    return dst
