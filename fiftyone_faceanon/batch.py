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
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import __version__
from .images import (IMAGE_EXTENSIONS, MAX_PIXELS, ImageError, LoadedImage, atomic_write,
                     encode_image, load_image, records_dir)
from .gate import DetectSettings, Embedder
from .engines import Engine, as_engine
from .pipeline import Pipeline, Settings
from .verify import VerificationError


@dataclass(frozen=True)
class Job:
    """One input file and the output path it mirrors to."""

    src: Path
    rel: str


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


class UsageError(Exception):
    """Inputs and output that must not be combined (e.g. OUTDIR inside an input tree)."""


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
            for path in sorted(inp.rglob("*")):
                if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file():
                    if out in path.resolve().parents:
                        continue
                    jobs.append(Job(path, path.relative_to(inp).as_posix()))
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


def unverified_message(src: Path, records: list[dict]) -> str:
    """One line naming the file and each face that failed verification."""
    faces = "; ".join(
        f"face {i} {r['anonymized']['status']} after {r['anonymized']['tries']} tries ("
        + ", ".join(f"{j} {v:.3f}" for j, v in r["similarity"].items()) + ")"
        for i, r in enumerate(records) if r["anonymized"]["status"].startswith("fail_closed"))
    return f"{src}: still matched by a judge: {faces}"


class Worker:
    """Runs jobs with one :class:`Pipeline`. Built once before any job, so a backend that
    cannot run here (:class:`~.anonymizers.BackendUnavailable`) stops the run with one error
    instead of failing every file; pickled by its arguments, so each process of a pool builds
    its own."""

    def __init__(self, settings: Settings, outdir: Path, overwrite: bool, max_pixels: int,
                 gallery: bool = False):
        self.settings, self.outdir = settings, outdir
        self.records = records_dir(outdir)
        self.overwrite, self.max_pixels, self.gallery = overwrite, max_pixels, gallery
        self.pipeline = Pipeline(settings)
        self.embedder = (Embedder(settings=DetectSettings(device=settings.device)) if gallery
                         else None)

    def __reduce__(self):
        return Worker, (self.settings, self.outdir, self.overwrite, self.max_pixels, self.gallery)

    def __call__(self, job: Job) -> Outcome:
        try:
            return self.run(job)
        except ImageError as e:
            return Outcome(job.rel, "error", message=str(e))
        except Exception as e:  # one bad file must not stop the run
            return Outcome(job.rel, "error", message=f"{job.src}: {type(e).__name__}: {e}")

    def run(self, job: Job) -> Outcome:
        dst = self.outdir / job.rel
        sidecar = dst.with_name(dst.name + ".json")
        private = self.records / f"{job.rel}.json"
        if dst.suffix.lower() not in IMAGE_EXTENSIONS:
            raise ImageError(job.src, f"unsupported extension {dst.suffix!r}")
        if dst.resolve() == job.src.resolve():
            raise ImageError(job.src, "output would overwrite the input")
        digest = file_sha256(job.src)
        settings = self.settings.as_dict()
        if not self.overwrite and private.is_file() and sidecar.is_file() and dst.is_file():
            done = json.loads(private.read_text())
            if done.get("input_sha256") == digest and done.get("settings") == settings:
                if done["status"] == "unverified":
                    return Outcome(job.rel, "unverified", len(done["faces"]),
                                   unverified_message(job.src, done["faces"]))
                return Outcome(job.rel, "skipped", faces=len(done.get("faces", [])))
        t0, cpu0 = time.perf_counter(), time.process_time()
        loaded = load_image(job.src, self.max_pixels)
        t1 = time.perf_counter()
        try:
            result = self.pipeline.anonymize(loaded.rgb, key=job.rel)
        except VerificationError as e:
            raise ImageError(job.src, str(e)) from None
        t2 = time.perf_counter()
        data = encode_image(LoadedImage(result.image, loaded.alpha, loaded.gray), dst.suffix)
        atomic_write(dst, data)
        timings = {"decode": t1 - t0, **result.timings, "encode": time.perf_counter() - t2,
                   "cpu": time.process_time() - cpu0}
        status = ("unverified" if result.unverified else "ok") if result.faces else "no_face"
        common = {"backend": self.settings.backend, "settings": settings,
                  "version": __version__}
        public = {"input": job.rel, "status": status,
                  "faces": [r.public() for r in result.records], **common}
        record = {"input": job.rel, "input_sha256": digest, "status": status,
                  "faces": [r.private() for r in result.records], **common}
        atomic_write(sidecar, (json.dumps(public, indent=1) + "\n").encode())
        atomic_write(private, (json.dumps(record, indent=1) + "\n").encode(), mode=0o600)
        message = unverified_message(job.src, record["faces"]) if result.unverified else ""
        identity = {}
        if self.embedder is not None and result.faces:
            embeddings, failed = self.embedder.embed_faces(loaded.rgb, result.faces)
            if failed:
                raise ImageError(job.src, f"gallery: judge(s) failed: {failed}")
            identity = {"sha256": digest, "embeddings": embeddings}
        return Outcome(job.rel, status, len(result.faces), message, timings=timings,
                       identity=identity)


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
) -> list[Outcome]:
    """Anonymize every image under ``inputs`` into ``outdir``; one :class:`Outcome` per image.

    ``workers > 1`` runs that many processes, each loading the models once; ``0`` picks
    :func:`.parallel.auto_workers`. ``on_outcome`` is
    called as each image finishes (the CLI's progress bar). With ``gallery`` each outcome's
    ``identity`` holds every judge's embeddings of the original faces (:mod:`.gate`).
    ``engine``: where the jobs run (:mod:`.engines`: ``local`` processes or ``ray`` actors,
    ``workers`` of them); the same :class:`Worker` writes the same bytes on either.
    """
    jobs = collect_jobs(inputs, outdir, allow_inside)
    worker = Worker(settings, outdir, overwrite, max_pixels, gallery)
    outcomes = []
    for outcome in as_engine(engine).imap(worker, jobs, workers, chunksize=4):
        outcomes.append(outcome)
        if on_outcome:
            on_outcome(outcome)
    return outcomes
