"""Anonymizing files and folders: the tree mirrored, sidecars, resume, errors that never stop a run.

For each input image ``REL`` (its path relative to the input folder, or its name for a file
argument) the run writes, each atomically and in this order:

- ``OUTDIR/REL``: the anonymized image (same format, no metadata);
- ``OUTDIR/REL.json``: the public sidecar, safe to release with the image: the anonymized faces'
  boxes and 68 landmarks, donor ids, geometry strength, tries and verification status, the
  settings and the version; nothing measured on the original;
- ``OUTDIR.private/REL.json``: the private record, kept out of the output tree
  (:func:`~.images.records_dir`): the original's hash, detections and landmarks and each judge's
  final similarity. The metrics suite reads it; a release must not include it.

A rerun skips every image whose private record has the same input hash and settings and whose
output and sidecar exist, so an interrupted run resumes where it stopped.

With verification and a donor bank (``Settings.unlink``), :func:`unlink_run` then anonymizes
again each face that a judge links to another file's face of the same person (:mod:`.unlink`),
in up to :data:`~.unlink.ROUNDS` rounds; the donors such a face avoided are in its private
record (``unlinked``), so a rerun that finds it linked again adds to them. A video's tracks
take part, each by one frame (:func:`track_representatives`); where a photo is linked to a
video, the photo is the one anonymized again.

Videos (:data:`~.videoio.VIDEO_EXTENSIONS`) go through :func:`~.video.anonymize_video` and get
the same three files; their sidecars hold the tracks (each with its donor, geometry, tries and
status) and, per frame, the faces with their track ids.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

import numpy as np

from . import __version__
from .images import (IMAGE_EXTENSIONS, MAX_PIXELS, ImageError, LoadedImage, as_written,
                     atomic_write, decoded, encode_image, load_image, records_dir)
from .gate import DetectSettings, Embedder, folder_files
from .engines import Engine, as_engine
from .faces import CropTransform, Face, crop_size_for, crop_transform
from .pipeline import Pipeline, Result, Settings
from .verify import VerificationError
from .video import VideoResult, VideoSettings, anonymize_video
from .videoio import VIDEO_EXTENSIONS

#: The private folder's record of how many rounds of :func:`unlink_run` a run has done.
UNLINK_STATE = "unlink.json"
#: What a run anonymizes: images and videos.
MEDIA_EXTENSIONS = IMAGE_EXTENSIONS + VIDEO_EXTENSIONS


@dataclass(frozen=True)
class Job:
    """One input file and the output path it mirrors to."""

    src: Path
    rel: str
    #: faces (a video's tracks) to anonymize again apart from other files' faces of their
    #: person (:func:`unlink_run`): ``((face index, (donor index, ...)), ...)``, the donors each
    #: avoids
    unlink: tuple[tuple[int, tuple[int, ...]], ...] = ()
    #: for a job to unlink, the judges' embeddings of its original faces from its first pass
    #: (``{judge: (F, D)}``), which are then not computed again
    original: dict[str, np.ndarray] | None = field(default=None, compare=False)

    @property
    def is_video(self) -> bool:
        """Whether its output is a video (:data:`~.videoio.VIDEO_EXTENSIONS`)."""
        return Path(self.rel).suffix.lower() in VIDEO_EXTENSIONS


@dataclass
class Outcome:
    """What happened to one job: ``status`` is ``ok``, ``no_face``, ``skipped``, ``unverified``
    (written, but a face failed verification and was handled fail-closed) or ``error``."""

    rel: str
    status: str
    faces: int = 0
    message: str = ""
    #: wall seconds per stage, and ``cpu``: the CPU seconds of this process on the image
    timings: dict = field(default_factory=dict)
    #: with a gallery: ``{"sha256", "embeddings": {judge: (F, D)}}`` of the original's faces
    identity: dict = field(default_factory=dict)
    #: faces too small for the judges (``too_small``): replaced, not verified
    unjudged: int = 0
    #: a video's tracks covered with no donor tried (``covered:<how>``: seldom confirmed)
    covered: int = 0
    #: for :func:`unlink_run`: ``{"original", "anonymized": {judge: (F, D)}, "donors": [bank
    #: index or None] * F, "judged": [bool] * F, "avoided": [[bank index, ...]] * F}`` of an
    #: image's faces (verified faces are ``judged``; ``avoided``: the donors each avoided to
    #: unlink it)
    link: dict = field(default_factory=dict)


class _Pending(NamedTuple):
    """An image job between :meth:`Worker.start` and :meth:`Worker.finish`: its paths, input
    hash, the sidecars' common part, the decoded image and its timings so far."""

    job: Job
    dst: Path
    sidecar: Path
    private: Path
    digest: str
    common: dict
    loaded: LoadedImage
    timings: dict
    #: for a job to unlink, the faces its first pass found (its private record)
    faces: list | None = None

    def written(self, rgb: np.ndarray) -> np.ndarray:
        """The anonymized (H, W, 3) uint8 ``rgb`` as its output file gives it back: what the
        judges score."""
        return as_written(LoadedImage(rgb, self.loaded.alpha, self.loaded.gray),
                          self.dst.suffix)


#: Images a worker anonymizes together (:meth:`Worker.__call__`). Fixed, so that a job list is
#: detected and judged in the same batches, to the last bit of each score, hence gives the same
#: bytes, on any engine and any worker count.
CHUNK = 8
#: A worker anonymizes a chunk's images together up to this many pixels at a time (eight LFW
#: images are 0.5 million), so that a chunk of large photos is not held in memory at once.
PIXELS_TOGETHER = 4_000_000


def chunks(jobs: list[Job], size: int = CHUNK) -> list[list[Job]]:
    """``jobs`` cut into consecutive chunks of ``size`` (the last one shorter)."""
    return [jobs[i:i + size] for i in range(0, len(jobs), size)]


@contextmanager
def worker_pool(engine: Engine, worker: "Worker", jobs: list[Job], workers: int
                ) -> Iterator[Callable[..., Iterator[list[Outcome]]]]:
    """:meth:`.Engine.pool` of ``worker`` for a run of ``jobs`` and its rounds of
    :func:`unlink_run`: ``workers`` processes or actors (``0``: :meth:`.Engine.auto_workers`
    over the jobs), no more than the jobs have chunks, so a pool process loads the models once
    for the whole run."""
    workers = min(workers or engine.auto_workers(len(jobs)), len(chunks(jobs)))
    with engine.pool(worker, workers) as run:
        yield run


def run_jobs(run: Callable[..., Iterator[list[Outcome]]], jobs: list[Job]) -> Iterator[Outcome]:
    """The outcome of each job, in job order, as the worker of ``run`` (:func:`worker_pool`)
    gives them chunk by chunk."""
    if not jobs:
        return
    for outcomes in run(chunks(jobs)):
        yield from outcomes


def unlink_run(run: Callable[..., Iterator[list[Outcome]]], worker: "Worker", jobs: list[Job],
               outcomes: list[Outcome], on_outcome: Callable[[Outcome], None] | None = None,
               on_progress: Callable[[str, int, int], None] | None = None) -> list[Outcome]:
    """``outcomes`` (one per job, in order) after up to :data:`~.unlink.ROUNDS` rounds of
    anonymizing again, with ``worker`` through ``run`` (the run's :func:`worker_pool`, or
    another of ``worker``), each image holding a verified face that
    a judge links to another image's face of the same person (:mod:`.unlink`): the later face
    of each linked pair starts at try :data:`~.unlink.FROM_TRY` and avoids its own donor, the
    donors of its look-alikes (:func:`~.unlink.look_alikes`) and the donors a judge finds close
    to its partners' anonymized faces, on top of what it avoided before. An image that a
    redone face leaves unverified (a face failed closed, or an error) where it was verified
    keeps its files as they were and is not redone again; the earlier face of its pairs is
    redone instead (:func:`~.unlink.redo_plan`).
    ``on_outcome`` gets each new outcome; ``on_progress("unlink", done, total)`` is called
    before each round (``done`` 0) and after each image redone."""
    from dataclasses import replace

    from .unlink import ROUNDS, avoided, linked_pairs, look_alikes, redo_plan

    if not worker.unlinks or not any(o.link or o.faces for o in outcomes):
        return outcomes
    panel, bank = worker.pipeline.panel, worker.pipeline.backend.bank
    outcomes = list(outcomes)
    state = worker.records / UNLINK_STATE
    # a rerun that anonymized nothing new goes on from the round it stopped at, if any
    fresh = any(o.timings for o in outcomes) or not state.is_file()
    first = 0 if fresh else json.loads(state.read_text())["rounds"]
    if first < ROUNDS:
        for k, o in enumerate(outcomes):
            if not o.link and o.faces and o.status in ("skipped", "unverified"):
                try:
                    o.link = worker.link_again(jobs[k])
                except (ImageError, OSError, ValueError, KeyError):  # it takes no part
                    o.link = {}
    settled: set[int] = set()  # images whose faces could not be verified again: left as they were
    videos = {k for k, job in enumerate(jobs) if job.is_video}
    for round_ in range(first, ROUNDS):
        # videos' tracks first: the later face of a linked pair is redone, and a photo costs
        # far less to redo than a video
        faces = sorted(((k, f) for k, o in enumerate(outcomes) if o.link
                        for f, judged in enumerate(o.link["judged"]) if judged),
                       key=lambda face: face[0] not in videos)
        if len(faces) < 2:
            break
        embedded = {part: {j: np.stack([outcomes[k].link[part][j][f] for k, f in faces])
                           for j in panel.judges} for part in ("original", "anonymized")}
        image = np.array([k for k, _ in faces])
        plan = redo_plan(linked_pairs(embedded["original"], embedded["anonymized"], image,
                                      panel.limits, panel.written),
                         {face for face, (k, _) in enumerate(faces) if k in settled})
        if not plan:
            break
        alike = look_alikes(embedded["original"], image, panel.limits, list(plan))
        redo: dict[int, dict[int, set[int]]] = {}
        for face, partners in plan.items():
            k, f = faces[face]
            mask = avoided({j: e[partners] for j, e in embedded["anonymized"].items()},
                           [outcomes[faces[p][0]].link["donors"][faces[p][1]]
                            for p in [face, *alike[face]]], bank.embeddings, panel.close)
            redo.setdefault(k, {})[f] = set(np.flatnonzero(mask).tolist())
        if not redo:
            break
        again = []
        for k in sorted(redo):
            before = outcomes[k].link["avoided"]
            for f, donors in enumerate(before):  # what the image's faces avoided so far stays
                if donors or f in redo[k]:
                    redo[k][f] = redo[k].get(f, set()) | set(donors)
            again.append(replace(jobs[k], unlink=tuple((f, tuple(sorted(d)))
                                                       for f, d in sorted(redo[k].items())),
                                 original=outcomes[k].link["original"]))
        where = {jobs[k].rel: k for k in redo}
        if on_progress:
            on_progress("unlink", 0, len(again))
        with tempfile.TemporaryDirectory(dir=worker.records, prefix=".unlink-") as kept:
            written = {k: worker.keep(jobs[k], Path(kept) / str(k)) for k in redo}
            for done, outcome in enumerate(run_jobs(run, again), 1):
                k = where[outcome.rel]
                failed = ("unverified", "error")
                if outcome.status in failed and outcomes[k].status not in failed:
                    # not verified again: its verified files stay
                    for path, (copy, mode) in written[k].items():
                        atomic_write(path, copy.read_bytes(), mode)
                    settled.add(k)
                else:
                    outcomes[k] = outcome
                    if on_outcome:
                        on_outcome(outcome)
                if on_progress:
                    on_progress("unlink", done, len(again))
        _rounds_done(state, round_ + 1)
    _rounds_done(state, ROUNDS)
    return outcomes


def _rounds_done(state: Path, rounds: int) -> None:
    atomic_write(state, (json.dumps({"rounds": rounds}) + "\n").encode(), mode=0o600)


def error_outcome(job: Job, error: Exception) -> Outcome:
    """The ``error`` outcome of a job that raised ``error``: its one-line message, naming the
    file."""
    if isinstance(error, ImageError):
        return Outcome(job.rel, "error", message=str(error))
    if isinstance(error, VerificationError):
        return Outcome(job.rel, "error", message=str(ImageError(job.src, str(error))))
    return Outcome(job.rel, "error", message=f"{job.src}: {type(error).__name__}: {error}")


class UsageError(Exception):
    """Inputs and output that must not be combined (e.g. OUTDIR inside an input tree), or an
    output that cannot be written."""


def make_writable(outdir: Path) -> None:
    """Create ``outdir`` and its private records' folder (:func:`~.images.records_dir`) and
    make a file in each, so that an output that cannot be written stops a run before its
    first image, with one :class:`UsageError` naming the folder, instead of failing every
    file after anonymizing it."""
    for folder in (outdir, records_dir(outdir)):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as e:
            raise UsageError(f"{folder}: cannot write there: {e.strerror or e}") from None


def collect_jobs(inputs: list[Path], outdir: Path, allow_inside: bool = False) -> list[Job]:
    """Mirror plan for files and folders: a folder's images keep their relative paths, a file
    argument keeps its name. Refuses an ``outdir`` inside an input folder unless
    ``allow_inside`` (then that folder's outputs are not read back as inputs)."""
    out = outdir.resolve()
    jobs: list[Job] = []
    for inp in inputs:
        root = inp.resolve()
        if inp.is_dir():
            if out == root:
                raise UsageError(f"{outdir}: output folder is the input folder {inp}")
            if root in out.parents and not allow_inside:
                raise UsageError(
                    f"{outdir}: output folder is inside the input folder {inp}; "
                    "pass --allow-inside to write there anyway"
                )
            # the photos not anonymized here too (gate.GATE_EXTENSIONS): each gets an error
            # line rather than being left out without a word
            jobs += [Job(path, path.relative_to(inp).as_posix()) for path in folder_files(inp)
                     if out not in path.resolve().parents]
        else:
            jobs.append(Job(inp, inp.name))
    seen: set[str] = set()
    for job in jobs:
        if job.rel in seen:
            raise UsageError(f"{job.src}: two inputs map to the same output {job.rel}")
        seen.add(job.rel)
    return jobs


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def unverified_message(src: Path, records: list[dict], what: str = "face") -> str:
    """One line naming the file and each face (or video ``track``) that failed verification;
    ``records``: the private record's ``faces`` (or ``tracks``)."""
    faces = "; ".join(
        f"{what} {i} {r['anonymized']['status']} after {r['anonymized']['tries']} tries ("
        + ", ".join(f"{j} {v:.3f}" for j, v in r["similarity"].items()) + ")"
        for i, r in enumerate(records) if r["anonymized"]["status"].startswith("fail_closed"))
    return f"{src}: still matched by a judge: {faces}"


class Worker:
    """Runs chunks of jobs with one :class:`Pipeline`. Built once before any job, so a backend
    that cannot run here (:class:`~.anonymizers.BackendUnavailable`) or an output that cannot
    be written (:func:`make_writable`) stops the run with one error instead of failing every
    file; pickled by its arguments, so each process of a pool
    builds its own."""

    def __init__(self, settings: Settings, outdir: Path, overwrite: bool, max_pixels: int,
                 gallery: bool = False, video: VideoSettings = VideoSettings(), threads: int = 1):
        self.settings, self.outdir = settings, outdir
        self.records = records_dir(outdir)
        make_writable(outdir)
        self.overwrite, self.max_pixels, self.gallery = overwrite, max_pixels, gallery
        self.video, self.threads = video, threads
        self.pipeline = Pipeline(settings)
        #: whether :func:`unlink_run` follows the run: each image's outcome then has its ``link``
        self.unlinks = bool(settings.unlink and settings.verify
                            and self.pipeline.backend.bank is not None)
        self.embedder = (Embedder(settings=DetectSettings(device=settings.device,
                                                          any_roll=settings.any_roll))
                         if gallery else None)
        #: ``progress(stage, done, total)`` per video frame; only in the process that set it
        self.progress = None

    def __reduce__(self):
        return Worker, (self.settings, self.outdir, self.overwrite, self.max_pixels, self.gallery,
                        self.video, self.threads)

    def __call__(self, jobs: list[Job]) -> list[Outcome]:
        """The outcomes of a chunk of jobs (:func:`chunks`), in order. Its images are
        anonymized together, up to :data:`PIXELS_TOGETHER` at a time
        (:meth:`~.pipeline.Pipeline.anonymize_many`: one detector pass per image size, one
        judging pass per try), its videos one by one. A bad file gets its error outcome and the
        others go on."""
        outcomes: list[Outcome | None] = [None] * len(jobs)
        pending: list[tuple[int, _Pending]] = []
        pixels = 0
        for k, job in enumerate(jobs):
            try:
                started = self.start(job)
            except Exception as e:  # one bad file must not stop the run
                outcomes[k] = error_outcome(job, e)
                continue
            if isinstance(started, Outcome):
                outcomes[k] = started
                continue
            pending.append((k, started))
            pixels += started.loaded.rgb.shape[0] * started.loaded.rgb.shape[1]
            if pixels >= PIXELS_TOGETHER:
                self._anonymize(pending, outcomes)
                pending, pixels = [], 0
        self._anonymize(pending, outcomes)
        return outcomes

    def _anonymize(self, pending: list[tuple[int, _Pending]],
                   outcomes: list[Outcome | None]) -> None:
        """Anonymize the decoded images ``pending`` together and put each one's outcome at its
        place in ``outcomes``."""
        if not pending:
            return
        cpu0 = time.process_time()
        try:
            found = [p.faces for _, p in pending]
            results = self.pipeline.anonymize_many(
                [p.loaded.rgb for _, p in pending], [p.job.rel for _, p in pending],
                [p.written for _, p in pending], [self._avoid(p.job) for _, p in pending],
                found if all(f is not None for f in found) else None,
                [p.job.original if p.faces is not None else None for _, p in pending])
        except Exception as e:  # every image of the batch gets the error
            results = [e] * len(pending)
        cpu = (time.process_time() - cpu0) / len(pending)
        linking: list[tuple[int, _Pending, Result, bytes]] = []
        for (k, p), result in zip(pending, results):
            p.timings["cpu"] += cpu
            if isinstance(result, Exception):
                outcomes[k] = error_outcome(p.job, result)
                continue
            try:
                outcomes[k], data = self.finish(p, result)
            except Exception as e:
                outcomes[k] = error_outcome(p.job, e)
                continue
            if self.unlinks and result.faces:
                linking.append((k, p, result, data))
        if linking:
            self._embed_links(linking, outcomes)

    def _avoid(self, job: Job) -> dict[int, np.ndarray]:
        """``{face: (M,) bool}``: the donors each face of ``job.unlink`` avoids."""
        size = len(self.pipeline.backend.bank) if self.unlinks else 0
        out = {}
        for face, donors in job.unlink:
            out[face] = np.zeros(size, bool)
            out[face][list(donors)] = True
        return out

    def start(self, job: Job) -> Outcome | _Pending:
        """Everything before the faces: the job's checks and resume (an :class:`Outcome` when
        the job is done: skipped, or a video anonymized), else its image decoded."""
        dst = self.outdir / job.rel
        sidecar = dst.with_name(dst.name + ".json")
        private = self.records / f"{job.rel}.json"
        if dst.suffix.lower() not in MEDIA_EXTENSIONS:
            raise ImageError(job.src, f"unsupported extension {dst.suffix!r}: images "
                             f"{' '.join(IMAGE_EXTENSIONS)} and videos "
                             f"{' '.join(VIDEO_EXTENSIONS)} are anonymized; convert it to one")
        if dst.resolve() == job.src.resolve():
            raise ImageError(job.src, "output would overwrite the input")
        digest = file_sha256(job.src)
        is_video = job.is_video
        settings = self.settings.as_dict()
        if is_video:
            settings["video"] = json.loads(json.dumps(asdict(self.video)))
        if (not self.overwrite and not job.unlink and private.is_file() and sidecar.is_file()
                and dst.is_file()):
            done = json.loads(private.read_text())
            if done.get("input_sha256") == digest and done.get("settings") == settings:
                parts = "tracks" if is_video else "faces"
                if done["status"] == "unverified":
                    return Outcome(job.rel, "unverified", len(done[parts]),
                                   unverified_message(job.src, done[parts], parts[:-1]))
                return Outcome(job.rel, "skipped", faces=len(done.get(parts, [])))
        common = {"backend": self.settings.backend, "settings": settings,
                  "version": __version__}
        if is_video:
            return self.run_video(job, dst, sidecar, private, digest, common)
        t0, cpu0 = time.perf_counter(), time.process_time()
        loaded = load_image(job.src, self.max_pixels)
        faces = None
        if job.unlink and private.is_file():
            faces = record_faces(json.loads(private.read_text())["faces"])
        return _Pending(job, dst, sidecar, private, digest, common, loaded,
                        {"decode": time.perf_counter() - t0,
                         "cpu": time.process_time() - cpu0}, faces)

    def finish(self, p: _Pending, result: Result) -> tuple[Outcome, bytes]:
        """The anonymized image of ``p`` written, then its sidecar and private record; its
        outcome and the bytes written."""
        t0, cpu0 = time.perf_counter(), time.process_time()
        data = encode_image(LoadedImage(result.image, p.loaded.alpha, p.loaded.gray),
                            p.dst.suffix)
        atomic_write(p.dst, data)
        timings = {**p.timings, **result.timings, "encode": time.perf_counter() - t0}
        status = ("unverified" if result.unverified else "ok") if result.faces else "no_face"
        public = {"input": p.job.rel, "status": status,
                  "faces": [r.public() for r in result.records], **p.common}
        record = {"input": p.job.rel, "input_sha256": p.digest, "status": status,
                  "faces": [r.private() for r in result.records], **p.common}
        atomic_write(p.sidecar, (json.dumps(public, indent=1) + "\n").encode())
        atomic_write(p.private, (json.dumps(record, indent=1) + "\n").encode(), mode=0o600)
        message = (unverified_message(p.job.src, record["faces"]) if result.unverified
                   else "")
        identity = {}
        if self.embedder is not None and result.faces:
            embeddings, failed = self.embedder.embed_faces(p.loaded.rgb, result.faces)
            if failed:
                raise ImageError(p.job.src, f"gallery: judge(s) failed: {failed}")
            identity = {"sha256": p.digest, "embeddings": embeddings}
        timings["cpu"] += time.process_time() - cpu0
        outcome = Outcome(p.job.rel, status, len(result.faces), message, timings=timings,
                          identity=identity,
                          unjudged=sum(r.status == "too_small" for r in result.records))
        return outcome, data

    def _embed_links(self, done: list[tuple[int, "_Pending", Result, bytes]],
                     outcomes: list[Outcome | None]) -> None:
        """Each finished image's :attr:`Outcome.link` (``done``: its place in ``outcomes``,
        job, result and the bytes of its file): its verified faces' embeddings at the
        original faces' places as the file gives them back, each judge's from the judging
        that verified them (:attr:`~.pipeline.Result.anonymized`), where that judge embedded
        them at full precision, else embedded here, by each judge in one pass over the images;
        the judges' seconds are charged to each image by its faces."""
        t0, cpu0 = time.perf_counter(), time.process_time()
        panel = self.pipeline.panel
        results = [result for _, _, result, _ in done]
        try:
            missing = {j: [[f for f, r in enumerate(result.records) if r.status == "verified"
                            and np.isnan(result.anonymized[j][f, 0])] for result in results]
                       for j in panel.judges}
            images = [decoded(data) if any(rows[n] for rows in missing.values()) else None
                      for n, (_, _, _, data) in enumerate(done)]
            for j, rows in missing.items():
                todo = [n for n, r in enumerate(rows) if r]
                embedded = panel.embed_each(
                    [(images[n], [results[n].faces[f] for f in rows[n]]) for n in todo], (j,))
                for n, e in zip(todo, embedded):
                    results[n].anonymized[j][rows[n]] = e[j]
        except Exception as e:  # every image of the pass gets the error
            for k, p, _, _ in done:
                outcomes[k] = error_outcome(p.job, e)
            return
        faces = sum(len(result.faces) for _, _, result, _ in done)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        for k, _, result, _ in done:
            share = len(result.faces) / faces
            outcomes[k].timings["judge"] += seconds * share
            outcomes[k].timings["cpu"] += cpu * share
            outcomes[k].link = self.link(result.original, result.anonymized,
                                         [r.private() for r in result.records])

    def link(self, original: dict[str, np.ndarray], anonymized: dict[str, np.ndarray],
             records: list[dict]) -> dict:
        """An image's :attr:`Outcome.link`: ``original`` and ``anonymized``, the judges'
        embeddings of its original faces and of its anonymized image's at the original faces'
        places (only its verified faces' are read); ``records``, the faces' private records."""
        index = self.pipeline.backend.bank.position
        return {"original": original, "anonymized": anonymized,
                "donors": [index.get(r["anonymized"]["donor"]) for r in records],
                "judged": [r["anonymized"]["status"] == "verified" for r in records],
                "avoided": [[index[d] for d in r.get("unlinked", []) if d in index]
                            for r in records]}

    def keep(self, job: Job, folder: Path) -> dict[Path, tuple[Path, int | None]]:
        """Copies in ``folder`` of the output, public sidecar and private record that ``job``
        has written: ``{path: (copy, mode to write it back with)}``."""
        dst = self.outdir / job.rel
        paths = {dst: None, dst.with_name(dst.name + ".json"): None,
                 self.records / f"{job.rel}.json": 0o600}
        folder.mkdir()
        kept = {}
        for n, (path, mode) in enumerate(paths.items()):
            if path.is_file():
                kept[path] = (Path(shutil.copyfile(path, folder / str(n))), mode)
        return kept

    def link_again(self, job: Job) -> dict:
        """:meth:`link` of a file done before (a resumed run): its original and output read
        again, its faces (a video's tracks: :meth:`video_link`) from its private record; ``{}``
        for a file without a face. Raises what reading them raises (the file then takes no
        part)."""
        dst = self.outdir / job.rel
        record = json.loads((self.records / f"{job.rel}.json").read_text())
        if job.is_video:
            return self.video_link(job.src, dst, record) if record["tracks"] else {}
        records = record["faces"]
        if not records:
            return {}
        faces = record_faces(records)
        original, anonymized = self.pipeline.panel.embed_each(
            [(load_image(path, self.max_pixels).rgb, faces) for path in (job.src, dst)])
        return self.link(original, anonymized, records)

    def run_video(self, job: Job, dst: Path, sidecar: Path, private: Path, digest: str,
                  common: dict) -> Outcome:
        """A video job: :func:`~.video.anonymize_video`, then its sidecar and private record
        (:func:`video_records`); the outcome counts tracks as faces."""
        cpu0 = time.process_time()
        result = anonymize_video(self.pipeline, job.src, dst, job.rel, self.video,
                                 self.progress, self.threads, self._avoid(job))
        status = ("unverified" if result.unverified else "ok") if result.tracks else "no_face"
        public, record = video_records(result, self.pipeline)
        atomic_write(sidecar, (json.dumps({"input": job.rel, "status": status, **public,
                                           **common}) + "\n").encode())
        atomic_write(private, (json.dumps({"input": job.rel, "input_sha256": digest,
                                           "status": status, **record, **common}) + "\n"
                               ).encode(), mode=0o600)
        message = (unverified_message(job.src, record["tracks"], "track") if result.unverified
                   else "")
        identity = {}
        if self.embedder is not None and result.tracks:
            identity = {"sha256": digest,
                        "embeddings": self._track_embeddings(job.src, record)}
        timings = {**result.timings}
        link = {}
        if self.unlinks and result.tracks:
            t0 = time.perf_counter()
            link = self.video_link(job.src, dst, record)
            timings["link"] = time.perf_counter() - t0
        return Outcome(job.rel, status, len(result.tracks), message,
                       timings={**timings, "cpu": time.process_time() - cpu0},
                       identity=identity, covered=sum(plan.status.startswith("covered:")
                                                      for plan in result.plans.values()),
                       link=link)

    def video_link(self, src: Path, dst: Path, record: dict) -> dict:
        """:meth:`link` of a video from its private ``record``: each track by its face at
        :func:`track_representatives`, each judge's embedding of the original's in ``src`` and of
        the anonymized one's in ``dst`` as written, at the original face's place."""
        views = track_representatives(record)

        def embed(frame: np.ndarray, faces: list[Face]) -> dict[str, np.ndarray]:
            return self.pipeline.panel.embed_each([(frame, faces)])[0]

        return self.link(embed_track_views(src, views, embed),
                         embed_track_views(dst, views, embed), record["tracks"])

    def _track_embeddings(self, src: Path, record: dict) -> dict:
        """Every judge's embedding of each track's original face at
        :func:`track_representatives` (``record``: the video's private record), ``{judge: (T,
        D)}``, for the identity gallery."""
        def embed(frame: np.ndarray, faces: list[Face]) -> dict[str, np.ndarray]:
            embeddings, failed = self.embedder.embed_faces(frame, faces)
            if failed:
                raise ImageError(src, f"gallery: judge(s) failed: {failed}")
            return embeddings

        return embed_track_views(src, track_representatives(record), embed)


def embed_track_views(path: Path, views: list[tuple[int, Face]],
                      embed: Callable[[np.ndarray, list[Face]], dict[str, np.ndarray]]
                      ) -> dict[str, np.ndarray]:
    """``{judge: (T, D)}``: the faces ``views`` (per track, ``(frame index, face)``:
    :func:`track_representatives`) of the video ``path`` embedded by ``embed(frame, faces) ->
    {judge: (F, D)}``, the faces of one frame together, decoding the video once. Raises
    :class:`~.images.ImageError` when the video ends before one of those frames."""
    from .videoio import read_some_frames

    by_frame: dict[int, list[int]] = {}
    for place, (t, _) in enumerate(views):
        by_frame.setdefault(t, []).append(place)
    out: dict[str, np.ndarray] = {}
    unread = set(by_frame)
    for t, frame in read_some_frames(path, by_frame):
        for j, e in embed(frame, [views[p][1] for p in by_frame[t]]).items():
            out.setdefault(j, np.zeros((len(views), e.shape[1]), e.dtype))[by_frame[t]] = e
        unread.discard(t)
    if unread:
        raise ImageError(path, f"the video ends before frame {min(unread)}")
    return out


def record_faces(records: list[dict]) -> list[Face]:
    """The original faces of an image's private record (its ``faces``), as found."""
    return [Face(np.asarray(r["box"], np.float64), float(r["score"]),
                 np.asarray(r["landmarks"], np.float64), CropTransform(**r["crop"]))
            for r in records]


def track_representatives(record: dict) -> list[tuple[int, Face]]:
    """Per track of a video's private ``record`` (in its order), the frame and original face
    that stand for it in unlinking and in the identity gallery: its largest detected face
    (largest landmark extent, the earliest of equals), or its largest face when none was
    detected, as :func:`~.video.largest_face` picks the face its donor is matched to; read from
    the record (landmarks to 0.1 px), so a resumed run finds the same."""
    best: dict[int, tuple] = {}
    for t, faces in enumerate(record["frames"]):
        for f in faces:
            landmarks = np.asarray(f["landmarks"], np.float64)
            rank = (f["source"] == "detected", float(np.ptp(landmarks, 0).max()), -t)
            if f["track"] not in best or rank > best[f["track"]][0]:
                best[f["track"]] = (rank, t, f, landmarks)
    views = []
    for track in record["tracks"]:
        _, t, f, landmarks = best[track["track"]]
        views.append((t, Face(np.asarray(f["box"], np.float64), float(f["score"]), landmarks,
                              crop_transform(landmarks, crop_size_for(landmarks)))))
    return views


def _rounded(points, digits: int = 1) -> list:
    import numpy as np

    return np.round(np.asarray(points, float), digits).tolist()


def video_records(result: VideoResult, pipeline: Pipeline) -> tuple[dict, dict]:
    """The public sidecar's and the private record's video parts: ``video`` (width, height,
    fps, frames), ``tracks`` (per track: id, first and last frame, and as for an image's face
    the donor, geometry, tries, status; the private one adds each judge's highest similarity
    over the judged frames and how many of them it matches with the face masked out) and
    ``frames`` (per frame, per face: track id, source, and the anonymized box and landmarks; the
    private one adds the original's box, score and landmarks)."""
    info = result.info
    video = {"width": info.width, "height": info.height, "fps": str(info.fps),
             "frames": info.frames}
    step = pipeline.settings.geometry
    public_tracks, private_tracks = [], []
    for tr in result.tracks:
        plan = result.plans[tr.id]
        donor = None if plan.donor is None else pipeline.backend.donor_id(plan.donor)
        geometry = (min(1.0, step + 0.25 * plan.attempt) if pipeline.shape is not None
                    else 0.0)
        anonymized = {"donor": donor, "geometry": geometry, "tries": plan.tries,
                      "status": plan.status}
        public_tracks.append({"track": tr.id, "first": tr.first, "last": tr.last, **anonymized})
        private_tracks.append({"track": tr.id, "first": tr.first, "last": tr.last,
                               "anonymized": anonymized,
                               "similarity": {j: round(v, 5)
                                              for j, v in plan.similarity.items()},
                               "uninformative": plan.uninformative,
                               "unlinked": list(plan.unlinked)})
    public_frames, private_frames = [], []
    for faces in result.frames:
        public_frames.append([{"track": f.track, "source": f.source,
                               "box": _rounded(f.anonymized.box),
                               "landmarks": _rounded(f.anonymized.landmarks)} for f in faces])
        private_frames.append([{"track": f.track, "source": f.source,
                                "box": _rounded(f.original.box),
                                "score": round(float(f.original.score), 5),
                                "landmarks": _rounded(f.original.landmarks),
                                "anonymized": {"box": _rounded(f.anonymized.box),
                                               "landmarks": _rounded(f.anonymized.landmarks)}}
                               for f in faces])
    return ({"video": video, "tracks": public_tracks, "frames": public_frames},
            {"video": video, "tracks": private_tracks, "frames": private_frames})


def video_threads(engine: Engine, workers: int, jobs: int) -> int:
    """The threads each worker renders a video with: this machine's cores shared by the local
    workers (``workers``, ``0`` as :func:`.parallel.auto_workers` picks for ``jobs``), or the
    CPUs a Ray worker reserves."""
    from .parallel import auto_workers

    if engine.kind != "local":
        return max(1, int(engine.num_cpus))
    share = workers or auto_workers(jobs)
    return max(1, (os.cpu_count() or 1) // max(1, min(share, jobs)))


def anonymize_files(
    inputs: list[Path],
    outdir: Path,
    settings: Settings = Settings(),
    workers: int = 0,
    overwrite: bool = False,
    allow_inside: bool = False,
    max_pixels: int = MAX_PIXELS,
    on_outcome: Callable[[Outcome], None] | None = None,
    gallery: bool = False,
    engine: Engine | str = "local",
    video: VideoSettings = VideoSettings(),
    on_progress: Callable[[str, int, int], None] | None = None,
) -> list[Outcome]:
    """Anonymize every image under ``inputs`` into ``outdir``; one :class:`Outcome` per image.

    ``workers > 1`` runs that many processes, each loading the models once; ``0`` picks
    :func:`.parallel.auto_workers`. ``on_outcome`` is
    called as each image finishes (the CLI's progress bar). With ``gallery`` each outcome's
    ``identity`` holds every judge's embeddings of the original faces (:mod:`.gate`).
    ``engine``: where the jobs run (:mod:`.engines`: ``local`` processes or ``ray`` actors,
    ``workers`` of them); the same :class:`Worker` writes the same bytes on either.
    ``video``: how videos are tracked and encoded; each video job renders with the CPU cores
    its worker has to itself. ``on_progress(stage, done, total)`` reports video frames when the
    jobs run in this process (one worker), and the images of each round of :func:`unlink_run`
    (stage ``unlink``), whose new outcomes go to ``on_outcome`` again and replace the first
    ones in the list returned.
    """
    jobs = collect_jobs(inputs, outdir, allow_inside)
    engine = as_engine(engine)
    worker = Worker(settings, outdir, overwrite, max_pixels, gallery, video,
                    video_threads(engine, workers, len(jobs)))
    worker.progress = on_progress
    outcomes = []
    with worker_pool(engine, worker, jobs, workers) as run:
        for outcome in run_jobs(run, jobs):
            outcomes.append(outcome)
            if on_outcome:
                on_outcome(outcome)
        return unlink_run(run, worker, jobs, outcomes, on_outcome, on_progress)
