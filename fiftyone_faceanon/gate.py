"""The privacy gate: do the faces of a dataset still look like people who must not be recognised?

A *gallery* holds, per face of the people to protect and per identity judge
(:mod:`.metrics.identity`), the judge's L2-normalised embedding and the sha256 of the file it came
from (never the image, never its path). :func:`check` takes every face of the files to gate and,
per judge ``j``, its highest cosine similarity against the gallery,

    s_j(f) = max_g  e_j(f) . g_j        (e_j, g_j unit vectors, so the dot product is the cosine)

and blocks the face when ``s_j(f) >= t_j`` for any judge (``t_j`` the judge's threshold, by
default its FAR 1e-3 threshold calibrated on LFW). This is the paper's re-identification risk
(section IV-A-1: cosine similarity of identity embeddings) turned into a decision. A face that
cannot be checked (unreadable image, a judge that fails) blocks too unless unverifiable faces
are allowed. A *baseline* lists reviewed findings ``(file sha256, face index, judge)`` that no
longer block.

Videos (:data:`~.videoio.VIDEO_EXTENSIONS`) are checked by track (:class:`VideoCheck`): faces are
tracked through every frame (:func:`~.tracking.track_faces`, the detector on every ``every``-th
frame) and every face of those sampled frames is embedded and compared as an image's faces are.
A track's *worst face* is its face with the highest similarity to the gallery; when that worst
sampled face comes within a margin below a judge's threshold (by default the gap between the
judge's calibrated FAR 1e-3 and best-accuracy thresholds: the faces a judge could go either way
on), every other frame of the track is checked too, so a pose that the sampled frames missed
cannot slip through; a track clearly below every threshold, or already at or above each, is
decided on its sampled frames. A finding names the file, the track (its ``face`` index, in a
baseline too) and the frame of its worst face.

Embeddings of the gated files are cached by file content hash in the user's cache folder, so an
unchanged image is never detected or embedded twice; torch, dlib and the judges are imported and
loaded only when something is not cached.

The gallery and the cache are biometric data: written atomically with mode 0600 (folders 0700),
and the gallery is refused inside a git work tree.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from . import __version__
from .images import (IMAGE_EXTENSIONS, OTHER_PHOTO_EXTENSIONS, ImageError, atomic_write,
                     load_image)
from .videoio import VIDEO_EXTENSIONS
from .weights import sha256_file

#: Galleries and cached embeddings are only comparable with embeddings of the same judges:
#: both versions go up whenever a judge's embeddings change (2: FaceNet-CASIA's input is the
#: fixed standardisation it was trained with), so an old gallery is refused with its version
#: and old cache entries are never read.
GALLERY_VERSION = 2
BASELINE_VERSION = 1
CACHE_VERSION = 2
#: The threshold kind used when none is configured (``judge_thresholds()[judge][...]``).
DEFAULT_THRESHOLD = "far_1e-3"
#: The threshold kind below it whose distance to it is a judge's default video track margin.
MARGIN_FROM = "accuracy"
#: The track margin of a judge without both calibrated thresholds.
FALLBACK_MARGIN = 0.1
#: Images (or video frames) detected and embedded together.
CHUNK = 16
#: What the gate reads from a folder: images and videos, and the photo formats ``anonymize`` does
#: not write (:data:`~.images.OTHER_PHOTO_EXTENSIONS`): checked where Pillow reads them, else
#: unverifiable.
GATE_EXTENSIONS = IMAGE_EXTENSIONS + VIDEO_EXTENSIONS + OTHER_PHOTO_EXTENSIONS
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
RULES = {
    "identifiable-face": "A face is at or above an identity judge's threshold against the gallery.",
    "unverifiable-face": "A face or image could not be checked against the gallery.",
}


class GateError(Exception):
    """A usage or configuration error (exit code 2); the message is one line."""


# -- paths -------------------------------------------------------------------------------------


def git_work_tree(path: os.PathLike | str) -> Path | None:
    """The root of the git work tree that contains ``path`` (a ``.git`` folder or file in one of
    its parents), or None."""
    p = Path(path).absolute().resolve()
    for parent in [p, *p.parents]:
        if (parent / ".git").exists():
            return parent
    return None


def check_gallery_path(path: os.PathLike | str) -> Path:
    """``path`` as a gallery location; :class:`GateError` when it lies inside a git work tree
    (the gallery is biometric data and must never be committed)."""
    path = Path(path)
    root = git_work_tree(path)
    if root is not None:
        raise GateError(
            f"{path}: the gallery is biometric data and must not be inside the git work tree "
            f"{root}; keep it outside any repository"
        )
    return path


def folder_files(folder: Path) -> list[Path]:
    """The files under ``folder`` (recursively, sorted) with an extension of
    :data:`GATE_EXTENSIONS`: what the gate checks of a folder, and what ``faceanon anonymize``
    takes from one (:func:`~.batch.collect_jobs`)."""
    return [p for p in sorted(folder.rglob("*"))
            if p.suffix.lower() in GATE_EXTENSIONS and p.is_file()]


def expand_inputs(inputs: Iterable[os.PathLike | str]) -> list[Path]:
    """Files as given, folders replaced by their images and videos (:func:`folder_files`)."""
    out: list[Path] = []
    for inp in map(Path, inputs):
        out += folder_files(inp) if inp.is_dir() else [inp]
    return out


def _write_private(path: Path, data: bytes) -> None:
    """Atomic write with mode 0600; missing folders are created 0700."""
    for folder in reversed([p for p in path.parents if not p.exists()]):
        folder.mkdir(mode=0o700)
    atomic_write(path, data, mode=0o600)


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


# -- gallery -----------------------------------------------------------------------------------


@dataclass
class Gallery:
    """Per judge: ``embeddings`` (N, D) float32 unit rows, ``sources`` (N,) sha256 hex of the
    source file, ``faces`` (N,) index of the face in that file."""

    embeddings: dict[str, np.ndarray] = field(default_factory=dict)
    sources: dict[str, np.ndarray] = field(default_factory=dict)
    faces: dict[str, np.ndarray] = field(default_factory=dict)

    def sizes(self) -> dict[str, int]:
        """Number of faces per judge."""
        return {j: len(e) for j, e in sorted(self.embeddings.items())}

    def add(self, sha256: str, embeddings: dict[str, np.ndarray]) -> None:
        """Add the faces of one file, ``{judge: (F, D)}``, replacing that file's earlier ones."""
        for judge, emb in embeddings.items():
            emb = np.asarray(emb, np.float32).reshape(len(emb), -1)
            old = self.embeddings.get(judge, np.zeros((0, emb.shape[1]), np.float32))
            src = self.sources.get(judge, np.zeros(0, "U64"))
            idx = self.faces.get(judge, np.zeros(0, np.int32))
            if old.shape[1] != emb.shape[1]:
                raise GateError(f"judge {judge}: embedding size {emb.shape[1]} differs from the "
                                f"gallery's {old.shape[1]}")
            keep = src != sha256
            self.embeddings[judge] = np.concatenate([old[keep], emb])
            self.sources[judge] = np.concatenate([src[keep], np.full(len(emb), sha256, "U64")])
            self.faces[judge] = np.concatenate([idx[keep], np.arange(len(emb), dtype=np.int32)])


def load_gallery(path: os.PathLike | str) -> Gallery:
    """Read a gallery written by :func:`save_gallery`; an absent file is an empty gallery."""
    path = check_gallery_path(path)
    if not path.exists():
        return Gallery()
    try:
        with np.load(path, allow_pickle=False) as z:
            if int(z["version"]) != GALLERY_VERSION:
                raise GateError(f"{path}: gallery version {int(z['version'])}, expected "
                                f"{GALLERY_VERSION}: its embeddings come from other judges; "
                                "rebuild it with `faceanon gallery add`")
            judges = sorted({k.split(".")[0] for k in z.files if k != "version"})
            return Gallery(
                {j: z[f"{j}.embeddings"].astype(np.float32) for j in judges},
                {j: z[f"{j}.sources"] for j in judges},
                {j: z[f"{j}.faces"] for j in judges},
            )
    except (OSError, ValueError, KeyError) as e:
        raise GateError(f"{path}: not a faceanon gallery ({type(e).__name__}: {e})") from None


def save_gallery(gallery: Gallery, path: os.PathLike | str) -> None:
    """Write the gallery atomically with mode 0600 (never inside a git work tree)."""
    path = check_gallery_path(path)
    arrays: dict[str, np.ndarray] = {"version": np.array(GALLERY_VERSION)}
    for j in gallery.embeddings:
        arrays[f"{j}.embeddings"] = gallery.embeddings[j]
        arrays[f"{j}.sources"] = gallery.sources[j]
        arrays[f"{j}.faces"] = gallery.faces[j]
    _write_private(path, _npz_bytes(arrays))


# -- detection and embedding -------------------------------------------------------------------


@dataclass
class Embedded:
    """One gated file: ``boxes`` (F, 4) x0 y0 x1 y1 in reading order, ``embeddings``
    ``{judge: (F, D)}``, ``failed`` ``{judge: reason}``, or ``error`` when unreadable.

    A video's faces are those of its tracks in every frame (by frame, then track): ``frames``
    and ``tracks`` (F,) say where each one is, ``landmarks`` (F, 68, 2) let any of them be
    embedded later, and the rows of faces not embedded (yet) are NaN; ``frame_count`` is the
    video's. All four are None (0) for an image."""

    path: Path
    sha256: str
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    error: str = ""
    frames: np.ndarray | None = None
    tracks: np.ndarray | None = None
    landmarks: np.ndarray | None = None
    frame_count: int = 0

    @property
    def is_video(self) -> bool:
        return self.frames is not None

    def checked(self) -> np.ndarray:
        """(F,) bool: the faces embedded by every judge that did not fail (all of an image's)."""
        done = np.full(len(self.boxes), bool(self.embeddings))
        for emb in self.embeddings.values():
            done &= np.isfinite(emb).all(1) if emb.size else np.zeros(len(emb), bool)
        return done

    def gallery_embeddings(self) -> dict[str, np.ndarray]:
        """What a gallery takes from this file, ``{judge: (N, D)}``: every face of an image;
        for a video, each track's largest embedded face (as ``anonymize --gallery`` adds it)."""
        if not self.is_video:
            return self.embeddings
        done, size = self.checked(), np.ptp(self.landmarks, axis=1).max(1)
        pick = [max(np.flatnonzero(done & (self.tracks == t)), key=lambda r: size[r])
                for t in np.unique(self.tracks[done])]
        return {j: e[pick] for j, e in self.embeddings.items()}


@dataclass(frozen=True)
class VideoCheck:
    """How videos are gated (module docstring): the detector runs, and every face is embedded,
    on every ``every``-th frame; a track whose worst sampled face comes within ``margin`` below
    a judge's threshold gets every frame checked (``margin`` 2: every track not already blocked
    by every judge; None: :func:`track_margin`'s calibrated one per judge)."""

    every: int = 5
    margin: float | None = None

    def margin_for(self, judge: str) -> float:
        """The cosine margin that applies to ``judge``."""
        return track_margin(judge) if self.margin is None else self.margin


def track_margin(judge: str) -> float:
    """A judge's default video track margin: its calibrated :data:`DEFAULT_THRESHOLD` minus its
    :data:`MARGIN_FROM` threshold (``models/manifest.json``), the similarities where the judge
    is unsure; :data:`FALLBACK_MARGIN` when it lacks either."""
    from .metrics.identity import judge_thresholds

    calibrated = judge_thresholds().get(judge, {})
    if DEFAULT_THRESHOLD in calibrated and MARGIN_FROM in calibrated:
        return max(0.0, calibrated[DEFAULT_THRESHOLD] - calibrated[MARGIN_FROM])
    return FALLBACK_MARGIN


@dataclass(frozen=True)
class DetectSettings:
    """What decides the faces found; part of the cache key."""

    detector: str = "mtcnn"
    threshold: float = 0.9
    min_face_size: int = 20
    device: str = "auto"
    #: images: faces turned sideways or upside down too (:func:`~.faces.detect_faces`)
    any_roll: bool = True

    def key(self) -> str:
        text = (f"v{CACHE_VERSION}:{self.detector}:{self.threshold}:{self.min_face_size}"
                f":{'any_roll' if self.any_roll else 'upright'}")
        return hashlib.sha256(text.encode()).hexdigest()[:16]


class Embedder:
    """Finds and embeds faces with the judges ``judges`` (all available when None), loading the
    detector and judges at most once, and only when a file is not in the cache. ``cache`` (a
    folder) is used only with explicit ``judges``: an entry must hold each of them. ``video``:
    how videos are sampled and tracked."""

    def __init__(self, judges: list[str] | None = None, settings: DetectSettings = DetectSettings(),
                 cache: Path | None = None, video: VideoCheck = VideoCheck()):
        self.names, self.settings, self.video = judges, settings, video
        self.cache = cache / "gate" / settings.key() if cache is not None else None
        self._judges: dict | None = None
        self.unavailable: dict[str, str] = {}

    @property
    def judges(self) -> dict:
        """``{name: Judge}`` of :func:`metrics.identity.load_judges`, loaded on first use."""
        if self._judges is None:
            from .metrics.identity import load_judges

            try:
                self._judges, self.unavailable = load_judges(self.names, self.settings.device)
            except ValueError as e:  # a judge this version does not know
                raise GateError(str(e)) from None
        return self._judges

    def wanted(self) -> list[str]:
        """The judges the embeddings must have."""
        return sorted(self.names) if self.names is not None else sorted(self.judges)

    def embed_faces(self, image: np.ndarray, faces: list) -> tuple[dict[str, np.ndarray],
                                                                     dict[str, str]]:
        """``({judge: (F, D)}, {judge: reason})`` for the given faces of an RGB image."""
        return self.embed_many([(image, faces)])[0]

    def embed_many(self, items: list[tuple[np.ndarray, list]]
                   ) -> list[tuple[dict[str, np.ndarray], dict[str, str]]]:
        """:meth:`embed_faces` of each (image, faces), each judge run once over all the faces.
        A judge that fails on the batch is retried image by image, so its failure makes only
        that image's faces unverifiable, never the run fail."""
        out: list[tuple[dict, dict]] = [({}, {}) for _ in items]
        for name in self.wanted():
            judge = self.judges.get(name)
            if judge is None:
                for _, failed in out:
                    failed[name] = self.unavailable.get(name, "judge not available")
                continue
            try:
                rows = judge.embed_many(items)
            except Exception:
                rows = [None] * len(items)
            for (embedded, failed), (image, faces), row in zip(out, items, rows):
                try:
                    row = judge.embed(image, faces) if row is None else row
                    embedded[name] = np.asarray(row, np.float32).reshape(len(faces), -1)
                except Exception as e:
                    failed[name] = f"{type(e).__name__}: " + (str(e).strip().splitlines()
                                                             or [""])[0]
        return out

    def embed_files(self, paths: list[Path],
                    on_file: Callable[[Embedded], None] | None = None,
                    gallery: Gallery | None = None,
                    thresholds: dict[str, float] | None = None) -> list[Embedded]:
        """Detect and embed every face of every file, in the order given, cached by content
        hash, detection batched over :data:`CHUNK` images at a time. A video's sampled frames
        are embedded, and with a ``gallery`` and its ``thresholds``, every frame of the tracks
        that :func:`tracks_to_complete` names."""
        results: list[Embedded] = []
        todo: list[Embedded] = []
        for path in paths:
            try:
                item = Embedded(path, sha256_file(path))
            except OSError as e:
                item = Embedded(path, "", error=f"{path}: cannot read ({e.strerror or e})")
            results.append(item)
            if not item.error and path.suffix.lower() in VIDEO_EXTENSIONS:
                self._embed_video(item, gallery, thresholds)
                if on_file:
                    on_file(item)
            elif item.error or self._from_cache(item):
                if on_file:
                    on_file(item)
            else:
                todo.append(item)
        for start in range(0, len(todo), CHUNK):
            for item in self._embed_chunk(todo[start:start + CHUNK]):
                if on_file:
                    on_file(item)
        return results

    def _embed_chunk(self, items: list[Embedded]) -> list[Embedded]:
        from .faces import find_faces_batch

        images, readable = [], []
        for item in items:
            try:
                images.append(load_image(item.path).rgb)
                readable.append(item)
            except ImageError as e:
                item.error = str(e)
        s = self.settings
        found = find_faces_batch(images, detector=s.detector, threshold=s.threshold,
                                 min_face_size=s.min_face_size, device=s.device,
                                 any_roll=s.any_roll) if images else []
        found = [sorted(faces, key=lambda f: (float(f.box[0]), float(f.box[1])))
                 for faces in found]
        with_faces = [i for i, faces in enumerate(found) if faces]
        embedded = dict(zip(with_faces,
                            self.embed_many([(images[i], found[i]) for i in with_faces])))
        for i, (item, faces) in enumerate(zip(readable, found)):
            item.boxes = np.array([f.box for f in faces], float).reshape(-1, 4)
            item.embeddings, item.failed = embedded.get(
                i, ({j: np.zeros((0, 0), np.float32) for j in self.wanted()}, {}))
            self._to_cache(item)
        return items

    def _embed_video(self, item: Embedded, gallery: Gallery | None,
                     thresholds: dict[str, float] | None) -> None:
        """Track the video's faces and embed those of its sampled frames (or read both from the
        cache), then every frame of the tracks :func:`tracks_to_complete` names; a video that
        cannot be read gets its ``error``."""
        try:
            if not self._from_cache(item):
                self._track(item)
                self._embed_rows(item, np.flatnonzero(item.frames % self.video.every == 0))
                self._to_cache(item)
            if gallery is not None and thresholds:
                todo = tracks_to_complete(item, gallery, thresholds, self.video)
                rows = np.flatnonzero(np.isin(item.tracks, todo) & ~item.checked())
                if len(rows):
                    self._embed_rows(item, rows)
                    self._to_cache(item)
        except ImageError as e:
            item.error = str(e)

    def _track(self, item: Embedded) -> None:
        """Every face of every frame of the video, by track (:func:`~.tracking.track_faces` with
        the detector on every ``video.every``-th frame), into ``item``; nothing embedded yet.
        A followed face whose box has left the frame (no whole pixel of it inside) is left out:
        nothing of it is on screen."""
        from . import faces as F
        from .tracking import TrackSettings, track_faces
        from .videoio import probe, read_frames

        s = self.settings
        info = probe(item.path)
        counted = [0]

        def detect(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return F.detect_boxes([frame], s.detector, s.threshold, s.min_face_size, s.device)[0]

        def count(t: int) -> None:
            counted[0] = t + 1

        tracks = track_faces(read_frames(item.path), detect,
                             TrackSettings(detect_every=self.video.every), count)
        faces = sorted((t, tr.id, f) for tr in tracks for t, f in tr.faces.items()
                       if _on_screen(f.box, info.width, info.height))
        item.frame_count = counted[0]
        item.frames = np.array([t for t, _, _ in faces], np.int64)
        item.tracks = np.array([tid for _, tid, _ in faces], np.int64)
        item.boxes = np.array([f.box for _, _, f in faces], float).reshape(-1, 4)
        item.landmarks = np.array([f.landmarks for _, _, f in faces], float).reshape(-1, 68, 2)
        item.embeddings = {} if faces else {j: np.zeros((0, 0), np.float32)
                                            for j in self.wanted()}

    def _embed_rows(self, item: Embedded, rows: np.ndarray) -> None:
        """Embed the video faces ``rows`` of ``item`` with every judge, decoding the video once
        more and embedding :data:`CHUNK` frames at a time."""
        from .faces import Face, crop_transform
        from .videoio import read_some_frames

        by_frame: dict[int, list[int]] = {}
        for r in rows:
            by_frame.setdefault(int(item.frames[r]), []).append(int(r))
        pending: list[tuple[np.ndarray, list[Face], list[int]]] = []

        def flush() -> None:
            if not pending:
                return
            embedded = self.embed_many([(frame, faces) for frame, faces, _ in pending])
            for (_, _, where), (embeddings, failed) in zip(pending, embedded):
                item.failed.update(failed)
                for judge, emb in embeddings.items():
                    if judge not in item.embeddings:
                        item.embeddings[judge] = np.full((len(item.boxes), emb.shape[1]), np.nan,
                                                         np.float32)
                    item.embeddings[judge][where] = emb
            pending.clear()

        for t, frame in read_some_frames(item.path, by_frame):
            faces = [Face(item.boxes[r], 1.0, item.landmarks[r],
                          crop_transform(item.landmarks[r], 128)) for r in by_frame[t]]
            pending.append((frame, faces, by_frame[t]))
            if len(pending) == CHUNK:
                flush()
        flush()

    def _cache_file(self, item: Embedded) -> Path | None:
        if self.cache is None:
            return None
        name = (f"{item.sha256}.every{self.video.every}.npz"
                if item.path.suffix.lower() in VIDEO_EXTENSIONS else f"{item.sha256}.npz")
        return self.cache / item.sha256[:2] / name

    def _from_cache(self, item: Embedded) -> bool:
        path = self._cache_file(item)
        if path is None or self.names is None or not path.is_file():
            return False
        try:
            with np.load(path, allow_pickle=False) as z:
                if any(f"emb.{j}" not in z.files for j in self.names):
                    return False
                item.boxes = z["boxes"]
                item.embeddings = {j: z[f"emb.{j}"] for j in self.names}
                if "frames" in z.files:
                    item.frames, item.tracks = z["frames"], z["tracks"]
                    item.landmarks, item.frame_count = z["landmarks"], int(z["frame_count"])
                return True
        except (OSError, ValueError, KeyError):
            return False

    def _to_cache(self, item: Embedded) -> None:
        path = self._cache_file(item)
        if path is None or self.names is None or item.failed:
            return
        arrays = {"boxes": item.boxes, **{f"emb.{j}": e for j, e in item.embeddings.items()}}
        if item.is_video:
            arrays.update(frames=item.frames, tracks=item.tracks, landmarks=item.landmarks,
                          frame_count=np.array(item.frame_count))
        _write_private(path, _npz_bytes(arrays))


def _on_screen(box: np.ndarray, width: int, height: int) -> bool:
    """Whether a whole pixel of ``box`` (x0, y0, x1, y1) lies inside a ``width`` x ``height``
    frame."""
    x0, y0, x1, y1 = box
    return min(x1, width) - max(x0, 0) >= 1 and min(y1, height) - max(y0, 0) >= 1


# -- thresholds and configuration --------------------------------------------------------------


def parse_threshold_overrides(pairs: Iterable[str], option: str = "--threshold"
                              ) -> dict[str, float]:
    """``["judge=value", ...]`` from the command line ``option`` -> ``{judge: value}``."""
    out = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise GateError(f"{option} {pair!r}: expected JUDGE=VALUE, e.g. dlib=0.9") from None
    return out


def read_config(start: os.PathLike | str = ".") -> dict:
    """``[tool.faceanon.gate]`` of the ``pyproject.toml`` in ``start`` or the nearest parent up to
    the git work tree's root; ``{}`` when there is none."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    here = Path(start).absolute()
    root = git_work_tree(here)
    for folder in [here, *here.parents]:
        path = folder / "pyproject.toml"
        if path.is_file():
            try:
                data = tomllib.loads(path.read_text())
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
                raise GateError(f"{path}: invalid TOML ({e})") from None
            config = data.get("tool", {}).get("faceanon", {}).get("gate", {})
            if not isinstance(config, dict):
                raise GateError(f"{path}: [tool.faceanon.gate] must be a table")
            return config
        if root is not None and folder == root:
            break
    return {}


def resolve_thresholds(judges: Iterable[str], defaults: dict[str, dict[str, float]],
                       config: dict[str, float], cli: dict[str, float]) -> dict[str, float]:
    """Per judge: the command line's value, else the config's, else ``defaults[judge]
    [DEFAULT_THRESHOLD]`` (from ``judge_thresholds()``). An unknown judge in an override, a value
    outside [-1, 1] or a judge with no threshold at all is a :class:`GateError`."""
    judges = sorted(judges)
    if not isinstance(config, dict):
        raise GateError("[tool.faceanon.gate] thresholds must be a table {judge = value}")
    for origin, values in (("[tool.faceanon.gate] thresholds", config), ("--threshold", cli)):
        for name, value in values.items():
            if name not in judges:
                raise GateError(f"{origin}: unknown judge {name!r}; the gallery has "
                                f"{', '.join(judges) or 'no judges'}")
            if not isinstance(value, (int, float)) or not -1.0 <= float(value) <= 1.0:
                raise GateError(f"{origin}: {name}={value!r} is not a cosine threshold in [-1, 1]")
    out = {}
    for name in judges:
        value = cli.get(name, config.get(name, defaults.get(name, {}).get(DEFAULT_THRESHOLD)))
        if value is None:
            raise GateError(f"judge {name}: no calibrated {DEFAULT_THRESHOLD} threshold in "
                            "models/manifest.json; give one with --threshold "
                            f"{name}=VALUE or in [tool.faceanon.gate] thresholds")
        out[name] = float(value)
    return out


# -- baseline ----------------------------------------------------------------------------------


def load_baseline(path: os.PathLike | str | None) -> list[dict]:
    """The reviewed findings of a baseline file: ``[{"file", "sha256", "face", "judge",
    "similarity"}]``; an absent file is an empty baseline."""
    if path is None or not Path(path).exists():
        return []
    try:
        data = json.loads(Path(path).read_text())
        if data.get("version") != BASELINE_VERSION:
            raise ValueError(f"version {data.get('version')!r}, expected {BASELINE_VERSION}")
        findings = data["findings"]
        for f in findings:
            f["sha256"], f["face"], f["judge"]  # noqa: B018  (required keys)
        return findings
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise GateError(f"{path}: not a faceanon gate baseline ({type(e).__name__}: {e})") from None


def baseline_keys(findings: list[dict]) -> set[tuple[str, int, str]]:
    return {(f["sha256"], int(f["face"]), f["judge"]) for f in findings}


# -- videos ------------------------------------------------------------------------------------


def worst_faces(item: Embedded, gallery: Gallery, judge: str) -> dict[int, tuple[float, int]]:
    """Per track of a video, ``{track: (s, row)}``: the highest similarity ``s`` to the gallery
    under ``judge`` among the track's embedded faces, and that face's row (its worst face)."""
    emb = item.embeddings[judge]
    done = np.flatnonzero(item.checked())
    sims = (emb[done] @ gallery.embeddings[judge].T).max(1) if len(done) else np.zeros(0)
    worst: dict[int, tuple[float, int]] = {}
    for row, s in zip(done, sims):
        track = int(item.tracks[row])
        if track not in worst or s > worst[track][0]:
            worst[track] = (float(s), int(row))
    return worst


def tracks_to_complete(item: Embedded, gallery: Gallery, thresholds: dict[str, float],
                       video: VideoCheck) -> list[int]:
    """The tracks of a video to check on every frame: those whose worst face so far is within
    the judge's margin (:meth:`VideoCheck.margin_for`) below some judge's threshold
    (``t - margin <= s < t``); one at or above it blocks already, one further below passes on
    its sampled frames."""
    todo = set()
    for judge, t in thresholds.items():
        if judge in item.embeddings and judge in gallery.embeddings:
            margin = video.margin_for(judge)
            todo |= {track for track, (s, _) in worst_faces(item, gallery, judge).items()
                     if t - margin <= s < t}
    return sorted(todo)


# -- the check ---------------------------------------------------------------------------------


@dataclass
class Row:
    """One (file, face, judge) decision. ``face`` is None for an unreadable file; ``verdict`` is
    ``pass``, ``block``, ``baselined``, ``unverifiable`` or ``allowed`` (unverifiable, allowed).
    In a ``video`` ``face`` is a track, decided on its worst face: ``frame`` is that face's
    frame, ``box`` its box and ``similarity`` its similarity."""

    file: str
    sha256: str
    face: int | None
    box: list[float] | None
    judge: str | None
    similarity: float | None
    threshold: float | None
    verdict: str
    reason: str = ""
    frame: int | None = None
    video: bool = False

    @property
    def blocks(self) -> bool:
        return self.verdict in ("block", "unverifiable")


@dataclass
class Report:
    """All rows of a run plus what it was run with."""

    rows: list[Row]
    files: list[Embedded]
    thresholds: dict[str, float]
    gallery_sizes: dict[str, int]

    @property
    def blocked(self) -> bool:
        return any(r.blocks for r in self.rows)

    def exit_code(self) -> int:
        return 1 if self.blocked else 0


def check(files: list[Embedded], gallery: Gallery, thresholds: dict[str, float],
          baseline: set[tuple[str, int, str]] = frozenset(),
          allow_unverifiable: bool = False) -> Report:
    """Decide every face: per judge ``j`` in ``thresholds``, ``s = max(E_j @ G_j.T)`` with
    ``E_j`` (F, D) the file's embeddings and ``G_j`` (N, D) the gallery's; ``block`` when
    ``s >= thresholds[j]`` unless ``(sha256, face, j)`` is in ``baseline``."""
    unverifiable = "allowed" if allow_unverifiable else "unverifiable"
    rows: list[Row] = []
    for item in files:
        name = str(item.path)
        if item.error:
            rows.append(Row(name, item.sha256, None, None, None, None, None, unverifiable,
                            item.error))
            continue
        if not len(item.boxes):
            rows.append(Row(name, item.sha256, None, None, None, None, None, "pass", "no face"))
        if item.is_video:
            rows += _video_rows(item, gallery, thresholds, baseline, unverifiable)
            continue
        for judge, threshold in sorted(thresholds.items()):
            emb = item.embeddings.get(judge)
            if emb is None:
                reason = item.failed.get(judge, "no embedding")
                rows += [Row(name, item.sha256, i, _box(b), judge, None, threshold, unverifiable,
                             f"{name}: judge {judge} failed ({reason})")
                         for i, b in enumerate(item.boxes)]
                continue
            sims = (emb @ gallery.embeddings[judge].T).max(1) if len(emb) else np.zeros(0)
            for i, (box, s) in enumerate(zip(item.boxes, sims)):
                verdict = "pass"
                if s >= threshold:
                    verdict = "baselined" if (item.sha256, i, judge) in baseline else "block"
                rows.append(Row(name, item.sha256, i, _box(box), judge, round(float(s), 4),
                                threshold, verdict))
    return Report(rows, files, thresholds, gallery.sizes())


def _video_rows(item: Embedded, gallery: Gallery, thresholds: dict[str, float],
                baseline: set[tuple[str, int, str]], unverifiable: str) -> list[Row]:
    """:func:`check`'s rows of a video: per track and judge, its worst face's."""
    name, rows = str(item.path), []
    tracks = sorted({int(t) for t in item.tracks})
    for judge, threshold in sorted(thresholds.items()):
        if judge not in item.embeddings or judge in item.failed:
            reason = item.failed.get(judge, "no embedding")
            rows += [Row(name, item.sha256, t, None, judge, None, threshold, unverifiable,
                         f"{name}: judge {judge} failed ({reason})", video=True)
                     for t in tracks]
            continue
        for track, (s, row) in sorted(worst_faces(item, gallery, judge).items()):
            verdict = "pass"
            if s >= threshold:
                verdict = "baselined" if (item.sha256, track, judge) in baseline else "block"
            rows.append(Row(name, item.sha256, track, _box(item.boxes[row]), judge,
                            round(s, 4), threshold, verdict, frame=int(item.frames[row]),
                            video=True))
    return rows


def _box(box: np.ndarray) -> list[float]:
    return [round(float(v), 1) for v in box]


def updated_baseline(previous: list[dict], report: Report) -> dict:
    """The baseline after review: the previous findings plus every finding at or above its
    threshold in ``report`` (blocking or already baselined)."""
    found = {(f["sha256"], int(f["face"]), f["judge"]): f for f in previous}
    for r in report.rows:
        if r.verdict in ("block", "baselined"):
            found[(r.sha256, r.face, r.judge)] = {
                "file": r.file, "sha256": r.sha256, "face": r.face, "judge": r.judge,
                "similarity": r.similarity, **({} if r.frame is None else {"frame": r.frame}),
            }
    findings = [found[k] for k in sorted(found)]
    return {"version": BASELINE_VERSION, "generated_by": f"faceanon gate {__version__}",
            "findings": findings}


# -- reports -----------------------------------------------------------------------------------


def _face(row: Row) -> str:
    """``face 2``, or ``track 2`` in a video."""
    return f"{'track' if row.video else 'face'} {row.face}"


def table(report: Report, only_findings: bool = False) -> str:
    """The readable table: file, face (``track N`` in a video), frame (of a track's worst face),
    judge, similarity, threshold, verdict; then a summary."""
    rows = [r for r in report.rows if not only_findings or r.verdict != "pass"]
    head = ("file", "face", "frame", "judge", "similarity", "threshold", "verdict")
    cells = [head] + [(
        r.file, "-" if r.face is None else f"track {r.face}" if r.video else str(r.face),
        "-" if r.frame is None else str(r.frame), r.judge or "-",
        "-" if r.similarity is None else f"{r.similarity:.3f}",
        "-" if r.threshold is None else f"{r.threshold:.3f}",
        r.verdict.upper() if r.blocks else r.verdict,
    ) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    lines = ["  ".join(c[i].ljust(widths[i]) for i in range(len(head))).rstrip() for c in cells]
    lines += [f"  {reason}" for reason in dict.fromkeys(r.reason for r in rows
                                                        if r.reason and r.blocks)]
    faces = {(r.file, r.face, r.video) for r in report.rows if r.face is not None}
    n_tracks = sum(video for _, _, video in faces)
    blocked_files = sorted({r.file for r in report.rows if r.blocks})
    lines.append(
        f"{len(report.files)} files, {len(faces) - n_tracks} faces"
        + (f", {n_tracks} video tracks" if n_tracks else "") + ", gallery "
        + ", ".join(f"{j}: {n}" for j, n in report.gallery_sizes.items())
        + (f"; BLOCKED: {', '.join(blocked_files)}" if blocked_files else "; nothing blocks")
    )
    return "\n".join(lines)


def to_json(report: Report) -> dict:
    """The JSON report: thresholds, gallery sizes, and per file its faces and rows; a video has
    ``frames`` (its frame count) and ``tracks`` instead of ``faces``: per track its first and
    last frame, its faces and how many of them were checked."""
    files = []
    for item in report.files:
        name = str(item.path)
        entry: dict = {"file": name, "sha256": item.sha256, "error": item.error or None}
        if item.is_video:
            checked = item.checked()
            entry["frames"] = item.frame_count
            entry["tracks"] = [{
                "track": int(t), "first": int(item.frames[mine].min()),
                "last": int(item.frames[mine].max()), "faces": int(mine.sum()),
                "checked": int((mine & checked).sum()),
            } for t in np.unique(item.tracks) for mine in [item.tracks == t]]
        else:
            entry["faces"] = [{"face": i, "box": _box(b)} for i, b in enumerate(item.boxes)]
        entry["rows"] = [{k: v for k, v in r.__dict__.items() if k not in ("file", "sha256")}
                         for r in report.rows if r.file == name]
        files.append(entry)
    return {"tool": "faceanon gate", "version": __version__, "blocked": report.blocked,
            "thresholds": report.thresholds, "gallery_sizes": report.gallery_sizes,
            "files": files}


def fingerprint(sha256: str, face: int | None) -> str:
    """Stable identity of a finding: the same file content and face index give the same one."""
    return hashlib.sha256(f"{sha256}:{face}".encode()).hexdigest()[:32]


def to_sarif(report: Report) -> dict:
    """SARIF 2.1.0: one result per blocking face (a video's: per track), or unreadable file,
    level ``error``. The face box is the region's ``properties.box`` (x0, y0, x1, y1 px) and,
    SARIF's own way to mark an area of an image, an attachment rectangle; ``startLine`` 1 is
    there for viewers that need a line. A track's result is located at the worst face of its
    most exceeded judge: its ``frame`` (in ``properties``, the message and the rectangle's
    text) and box. ``partialFingerprints["faceanonFace/v1"]`` is :func:`fingerprint` of the
    face index, or track id."""
    rule_ids = list(RULES)
    blocking: dict[tuple[str, int | None], list[Row]] = {}
    for r in report.rows:
        if r.blocks:
            blocking.setdefault((r.file, r.face), []).append(r)
    results = []
    for (name, face), rows in blocking.items():
        rule = "identifiable-face" if any(r.verdict == "block" for r in rows) else "unverifiable-face"
        what = "; ".join(
            f"{r.judge} similarity {r.similarity:.3f} >= {r.threshold:.3f}"
            + ("" if r.frame is None else f" at frame {r.frame}") if r.verdict == "block"
            else (r.reason or "unverifiable") for r in rows)
        worst = max(rows, key=lambda r: -np.inf if r.similarity is None
                    else r.similarity - r.threshold)
        label = _face(worst) + ("" if worst.frame is None else f", frame {worst.frame}")
        uri = Path(name).as_uri() if Path(name).is_absolute() else Path(name).as_posix()
        region: dict = {"startLine": 1}
        result: dict = {
            "ruleId": rule, "ruleIndex": rule_ids.index(rule), "level": "error",
            "message": {"text": f"{name}: " + ("file" if face is None else _face(worst))
                        + f" blocked: {what}"},
            "partialFingerprints": {"faceanonFace/v1": fingerprint(rows[0].sha256, face)},
            "properties": {"sha256": rows[0].sha256, "face": face,
                           "judges": {r.judge: r.similarity for r in rows if r.judge},
                           **({"track": face, "frame": worst.frame,
                               "frames": {r.judge: r.frame for r in rows if r.judge}}
                              if worst.video else {})},
        }
        if worst.box is not None:
            x0, y0, x1, y1 = worst.box
            region["properties"] = {"box": worst.box}
            result["attachments"] = [{
                "description": {"text": label},
                "artifactLocation": {"uri": uri},
                "rectangles": [{"left": x0, "top": y0, "right": x1, "bottom": y1,
                                "message": {"text": label}}],
            }]
        result["locations"] = [{"physicalLocation": {"artifactLocation": {"uri": uri},
                                                     "region": region}}]
        results.append(result)
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "faceanon-gate", "version": __version__,
                "rules": [{"id": k, "shortDescription": {"text": v},
                           "defaultConfiguration": {"level": "error"}} for k, v in RULES.items()],
            }},
            "results": results,
        }],
    }


def write_json(path: os.PathLike | str, data: dict) -> None:
    """Write a report or baseline atomically, pretty-printed."""
    atomic_write(path, (json.dumps(data, indent=1) + "\n").encode())
