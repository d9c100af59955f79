"""The FiftyOne API: anonymize, evaluate, flag and release the samples of a FiftyOne view.

The operators of the ``@faceanon/faceanon`` plugin (``operators/``) are thin wrappers over these
functions; notebooks and scripts call them directly.

Layout on each sample (one image per sample; the dataset stays flat):

- ``filepath``: the original, never written to.
- ``anonymized_filepath``: the anonymized copy in the output folder, listed in
  ``dataset.app_config.media_fields`` so the App's media selector shows it beside the original.
  An alternate media field was chosen over a grouped dataset so that every existing view, label
  field and saved query of the user's dataset keeps working unchanged.
- ``faces``: ``fo.Detections``, one ``face`` per detection (relative ``[x, y, w, h]`` box,
  detector score as ``confidence``); :func:`evaluate_samples` puts each face's metrics on it.
- ``face_landmarks``: ``fo.Keypoints``, one per face, the 68 iBUG points in relative ``[x, y]``.
- ``anonymization_key``: hash of the original's bytes and the settings; a rerun with the same key
  and an existing output skips the sample, so an interrupted run resumes.
- ``anonymization_error`` + tag ``faceanon_error``: why a sample could not be processed.
"""

from __future__ import annotations

import hashlib
import json
import time
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Callable

import fiftyone as fo

from .anonymizers import DEFAULT_BACKEND
from .weights import sha256_file
from .faces import Face
from .images import IMAGE_EXTENSIONS, ImageError, LoadedImage, atomic_write, encode_image, load_image
from .photometric import PhotometricSettings
from .pipeline import Pipeline, Settings

MEDIA_FIELD = "anonymized_filepath"
FACES_FIELD = "faces"
LANDMARKS_FIELD = "face_landmarks"
KEY_FIELD = "anonymization_key"
ERROR_FIELD = "anonymization_error"
ERROR_TAG = "faceanon_error"
#: Fields that only make sense next to the originals; never copied into a release.
BOOKKEEPING_FIELDS = (MEDIA_FIELD, KEY_FIELD, ERROR_FIELD)

Progress = Callable[[int, int], None]


def default_output_dir(dataset: fo.Dataset) -> str:
    """``<fo.config.default_dataset_dir>/faceanon/<dataset name>``."""
    return str(Path(fo.config.default_dataset_dir) / "faceanon" / dataset.name)


@lru_cache(maxsize=2)
def _pipeline(settings: Settings) -> Pipeline:
    return Pipeline(settings)


def _throttled(progress: Progress | None, total: int, every: float = 0.5) -> Callable[[int], None]:
    """``tick(done)`` calls ``progress(done, total)`` at most every ``every`` seconds and at the
    end."""
    last = [0.0]

    def tick(done: int) -> None:
        now = time.monotonic()
        if progress is not None and (done == total or now - last[0] >= every):
            last[0] = now
            progress(done, total)

    return tick


@contextmanager
def _one_torch_thread():
    """Run torch single-threaded inside, as ``batch`` does for the CLI: the per-image networks
    gain nothing from intra-op threads and lose several times over on a busy machine."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def face_labels(faces: list[Face], width: int, height: int) -> tuple[fo.Detections, fo.Keypoints]:
    """Faces found in a ``width`` x ``height`` image -> ``(Detections, Keypoints)`` in relative
    coordinates: box ``[x0/W, y0/H, (x1-x0)/W, (y1-y0)/H]``, landmarks (68, 2) ``/ [W, H]``."""
    detections, keypoints = [], []
    for i, f in enumerate(faces):
        x0, y0, x1, y1 = (float(v) for v in f.box)
        detections.append(fo.Detection(
            label="face", bounding_box=[x0 / width, y0 / height, (x1 - x0) / width,
                                        (y1 - y0) / height],
            confidence=float(f.score), index=i))
        points = [[float(x) / width, float(y) / height] for x, y in f.landmarks]
        keypoints.append(fo.Keypoint(label="face", points=points, index=i))
    return fo.Detections(detections=detections), fo.Keypoints(keypoints=keypoints)


def anonymize_samples(
    view: fo.core.collections.SampleCollection,
    output_dir: str | Path,
    backend: str = DEFAULT_BACKEND,
    seed: int = 0,
    relight: bool = True,
    pyramid: bool = True,
    color_transfer: bool = True,
    detector: str = "mtcnn",
    device: str = "auto",
    overwrite: bool = False,
    progress: Progress | None = None,
) -> dict:
    """Anonymize each sample's image into ``output_dir/<sample id><ext>`` (never over the
    original) and store ``anonymized_filepath``, ``faces`` and ``face_landmarks`` on it.

    Samples whose ``anonymization_key`` (original's SHA-256 + settings) matches and whose output
    exists are skipped unless ``overwrite``. An unreadable image gets ``anonymization_error`` and
    the ``faceanon_error`` tag, and the run goes on. ``progress(done, total)`` is called as samples
    finish. Returns ``{"ok", "no_face", "skipped", "error": counts, "errors": [one line each]}``.
    """
    settings = Settings(backend=backend, seed=seed, detector=detector, device=device,
                        photometric=PhotometricSettings(relight, pyramid, color_transfer))
    settings_json = json.dumps(settings.as_dict(), sort_keys=True)
    out = Path(output_dir).expanduser().resolve()
    dataset = view._dataset
    if MEDIA_FIELD not in dataset.app_config.media_fields:
        dataset.app_config.media_fields = [*dataset.app_config.media_fields, MEDIA_FIELD]
        dataset.save()
    for name in (MEDIA_FIELD, KEY_FIELD, ERROR_FIELD):
        if not dataset.has_sample_field(name):
            dataset.add_sample_field(name, fo.StringField)
    pipeline = _pipeline(settings)
    summary = {"ok": 0, "no_face": 0, "skipped": 0, "error": 0, "errors": []}
    total = len(view)
    tick = _throttled(progress, total)
    with _one_torch_thread():
        for done, sample in enumerate(view.iter_samples(autosave=True), 1):
            _anonymize_sample(sample, pipeline, settings_json, out, overwrite, summary)
            tick(done)
    return summary


def _anonymize_sample(sample: fo.Sample, pipeline: Pipeline, settings_json: str, out: Path,
                      overwrite: bool, summary: dict) -> None:
    """One sample of :func:`anonymize_samples`; counts what happened in ``summary``."""
    src = Path(sample.filepath)
    suffix = src.suffix.lower() if src.suffix.lower() in IMAGE_EXTENSIONS else ".png"
    dst = out / f"{sample.id}{suffix}"
    try:
        if dst == src.resolve():
            raise ImageError(src, "output would overwrite the input")
        key = hashlib.sha256(f"{sha256_file(src)}\n{settings_json}".encode()).hexdigest()
        if (not overwrite and sample[KEY_FIELD] == key and sample[MEDIA_FIELD] == str(dst)
                and dst.is_file()):
            summary["skipped"] += 1
            return
        loaded = load_image(src)
        result = pipeline.anonymize(loaded.rgb, key=src.name)
        atomic_write(dst, encode_image(LoadedImage(result.image, loaded.alpha, loaded.gray),
                                       suffix))
        height, width = loaded.rgb.shape[:2]
        sample[FACES_FIELD], sample[LANDMARKS_FIELD] = face_labels(result.faces, width, height)
        sample[MEDIA_FIELD], sample[KEY_FIELD], sample[ERROR_FIELD] = str(dst), key, None
        if ERROR_TAG in sample.tags:
            sample.tags.remove(ERROR_TAG)
        summary["ok" if result.faces else "no_face"] += 1
    except FileNotFoundError:
        _fail(sample, summary, f"{src}: no such file")
    except ImageError as e:
        _fail(sample, summary, str(e))
    except Exception as e:  # one bad sample must not stop the run
        _fail(sample, summary, f"{src}: {type(e).__name__}: {e}")


def _fail(sample: fo.Sample, summary: dict, message: str) -> None:
    sample[ERROR_FIELD] = message
    if ERROR_TAG not in sample.tags:
        sample.tags.append(ERROR_TAG)
    summary["error"] += 1
    summary["errors"].append(message)


def _release_fields(dataset: fo.Dataset) -> list[str]:
    """The sample fields a release keeps: labels and scalar metrics; not the bookkeeping, not
    strings (paths), not vectors or arrays (embeddings)."""
    keep = []
    for name, field in dataset.get_field_schema().items():
        if name in ("id", "filepath", "tags", "metadata", "created_at", "last_modified_at",
                    *BOOKKEEPING_FIELDS):
            continue
        if isinstance(field, fo.EmbeddedDocumentField) and issubclass(field.document_type,
                                                                      fo.Label):
            keep.append(name)
        elif isinstance(field, (fo.FloatField, fo.IntField, fo.BooleanField)):
            keep.append(name)
    return keep


def export_anonymized_release(
    view: fo.core.collections.SampleCollection,
    name: str,
    export_dir: str | Path | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> fo.Dataset:
    """A new dataset ``name`` whose samples are the anonymized images of ``view`` (samples not
    anonymized yet are left out) with every label field, scalar metric field and tag copied.

    Nothing points back to the originals: no original path, no string or vector field
    (embeddings), no bookkeeping, no runs. With ``export_dir`` the release is also written there
    as a ``fo.types.FiftyOneDataset`` (media copied). Returns the new dataset.
    """
    if not view._dataset.has_sample_field(MEDIA_FIELD):
        raise ValueError(f"{view._dataset.name}: nothing anonymized yet; run anonymize_samples")
    if fo.dataset_exists(name):
        if not overwrite:
            raise ValueError(f"{name}: a dataset of that name exists; pass overwrite=True")
        fo.delete_dataset(name)
    done = view.exists(MEDIA_FIELD).exists(ERROR_FIELD, False)
    fields = _release_fields(view._dataset)
    release = fo.Dataset(name, persistent=True)
    for field_name in fields:
        field = view._dataset.get_field(field_name)
        kwargs = {"embedded_doc_type": field.document_type} if isinstance(
            field, fo.EmbeddedDocumentField) else {}
        release.add_sample_field(field_name, type(field), **kwargs)
    total = len(done)
    tick = _throttled(progress, total)
    samples = []
    for i, values in enumerate(zip(*done.values([MEDIA_FIELD, "tags", *fields])), 1):
        sample = fo.Sample(filepath=values[0], tags=list(values[1]))
        for field_name, value in zip(fields, values[2:]):
            sample[field_name] = value.copy() if isinstance(value, fo.Label) else value
        samples.append(sample)
        tick(i)
    release.add_samples(samples, progress=False)
    if export_dir is not None:
        release.export(str(export_dir), dataset_type=fo.types.FiftyOneDataset, export_media=True,
                       overwrite=overwrite, progress=False)
    return release


#: The per-sample metric fields :func:`evaluate_samples` writes (the worst face's value).
METRIC_FIELDS = ("detected", "reid_facenet_casia", "reid_dlib", "landmark_nme_68",
                 "landmark_nme_51", "emotion_match", "si_mse", "si_l2", "delta_l", "delta_c",
                 "delta_e2000")
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
            if dataset.has_field(path):
                dataset.delete_sample_field(path)


@lru_cache(maxsize=2)
def _evaluator(judges: tuple[str, ...] | None, device: str):
    from .metrics import Evaluator

    return Evaluator(judges, device)


def _faces_of(sample: fo.Sample, width: int, height: int, crop_size: int) -> list[Face]:
    """The original's faces as :func:`anonymize_samples` stored them, back in pixels."""
    from .metrics.pairing import faces_from_records

    records = []
    for det, kp in zip(sample[FACES_FIELD].detections, sample[LANDMARKS_FIELD].keypoints):
        x, y, w, h = det.bounding_box
        records.append({"box": [x * width, y * height, (x + w) * width, (y + h) * height],
                        "score": det.confidence,
                        "landmarks": [[px * width, py * height] for px, py in kp.points]})
    return faces_from_records(records, crop_size)


def _evaluate_chunk(ev, chunk: list[fo.Sample], attrs: list[str], saver, errors: list[str],
                    records: list[dict], results: list) -> None:
    """Evaluate a few samples in one batch; write each face's metrics on its detection and the
    worst face's on the sample, and save it through ``saver``."""
    from .metrics import worst_face

    loaded = []
    for sample in chunk:
        try:
            orig = load_image(sample.filepath).rgb
            anon = load_image(sample[MEDIA_FIELD]).rgb
            h, w = orig.shape[:2]
            loaded.append((sample, orig, anon, _faces_of(sample, w, h, ev.crop_size)))
        except ImageError as e:
            errors.append(str(e))
    for (sample, *_), res in zip(loaded, ev.evaluate_batch([p[1:] for p in loaded])):
        for det, rec in zip(sample[FACES_FIELD].detections, res.faces):
            for name in attrs:
                det[name] = rec.get(name)
        worst = worst_face(res.faces)
        for name in METRIC_FIELDS:
            sample[name] = worst.get(name)
        saver.save(sample)
        records += res.faces
        results.append(res)


def evaluate_samples(
    view: fo.core.collections.SampleCollection,
    run_key: str = "faceanon_metrics",
    judges: list[str] | None = None,
    device: str = "auto",
    batch: int = 8,
    overwrite: bool = True,
    progress: Progress | None = None,
) -> dict:
    """Compare each anonymized sample of ``view`` with its original over the faces
    :func:`anonymize_samples` found (:class:`fiftyone_faceanon.metrics.Evaluator`).

    Every face's metrics go on its detection in ``faces``; each sample gets the
    :data:`METRIC_FIELDS`, set by its worst face (``metrics.worst_face``; None without a face).
    The dataset summary (``metrics.summarize`` mean/std/n per metric, plus ``fid_facenet`` and
    ``kid_facenet``) is saved as the run ``run_key``: ``dataset.list_runs()``,
    ``dataset.load_run_results(run_key).summary``, ``dataset.delete_run(run_key)`` (which also
    removes the fields). Returns ``{"evaluated", "errors": [one line each], "summary"}``.
    """
    from .metrics import PER_FACE, summarize

    dataset = view._dataset
    ev = _evaluator(tuple(judges) if judges else None, device)
    attrs = [n for n in PER_FACE if n not in ev.unavailable]
    fields = [*METRIC_FIELDS, *(f"{FACES_FIELD}.detections.{n}" for n in attrs)]
    config = AnonymizationMetricsConfig(fields=fields, judges=judges, device=device)
    dataset.register_run(run_key, config, overwrite=overwrite)
    for name in METRIC_FIELDS:
        if not dataset.has_sample_field(name):
            dataset.add_sample_field(name, fo.FloatField)
    todo = view.exists(MEDIA_FIELD).exists(ERROR_FIELD, False)
    total, done, errors, records, results = len(todo), 0, [], [], []
    tick = _throttled(progress, total)
    samples = iter(todo)
    with todo.save_context() as saver:
        while chunk := [s for _, s in zip(range(batch), samples)]:
            done += len(chunk)
            _evaluate_chunk(ev, chunk, attrs, saver, errors, records, results)
            tick(done)
    summary = {**summarize(records), **ev.dataset_metrics(results)}
    results_doc = dataset.init_run_results(run_key, summary=summary, errors=errors,
                                           unavailable=dict(ev.unavailable), evaluated=len(results))
    dataset.save_run_results(run_key, results_doc, overwrite=True)
    return {"evaluated": len(results), "errors": errors, "summary": summary}


def flag_reidentifiable(
    view: fo.core.collections.SampleCollection,
    operating_point: str = "far_1e-3",
    thresholds: dict[str, float] | None = None,
    tag: str = "reidentifiable",
    progress: Progress | None = None,
) -> dict:
    """Tag every sample of ``view`` whose ``reid_<judge>`` (its worst face's cosine between the
    original and anonymized embeddings, from :func:`evaluate_samples`) is at or above the judge's
    threshold: the pre-commit gate's rule ``s_j >= t_j`` for any judge ``j``. ``thresholds``
    ``{judge: t}`` override the calibrated ``operating_point`` ones
    (``metrics.identity.judge_thresholds()``). Earlier ``tag``s in the view are replaced.
    Returns ``{"flagged": samples tagged, "<judge>": samples at or above its threshold}``."""
    from .metrics.identity import judge_thresholds

    if operating_point not in OPERATING_POINTS:
        raise ValueError(f"operating point {operating_point!r}: choose one of {OPERATING_POINTS}")
    calibrated = {j: t[operating_point] for j, t in judge_thresholds().items()
                  if operating_point in t}
    limits = {**calibrated, **(thresholds or {})}
    limits = {j: t for j, t in limits.items() if view._dataset.has_sample_field(f"reid_{j}")}
    if not limits:
        raise ValueError(f"{view._dataset.name}: no judge with both a reid_<judge> field "
                         "(run evaluate_samples) and a threshold (calibrate or pass thresholds)")
    view.untag_samples(tag)
    counts = {}
    flagged = set()
    for judge, t in sorted(limits.items()):
        ids = view.match(fo.ViewField(f"reid_{judge}") >= t).values("id")
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
