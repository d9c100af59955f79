"""``faceanon prepare-data``: training shards from the training split (see :mod:`.shards`).

The training split is LFW ``peopleDevTrain.txt`` (every image of those 4,038 people) plus all of
UTKFace; LFW ``peopleDevTest.txt`` is never read, so evaluation identities stay unseen. Each photo
goes through the project's detector and 68-point landmarks (:func:`faces.find_faces_batch`); its
most confident face is cropped by :func:`faces.crop_face` with the face's ``crop_transform`` at
``size`` px (context 2x the landmarks' extent, as the pipeline crops) and stored as WebP with its
landmarks and detector box in crop pixels. WebP at quality 70 takes about 2.2 kB a 128 px crop
(JPEG needs about 3.8 kB for the same look), so the whole split fits in about 40 MiB.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from .. import faces as F
from ..images import ImageError, atomic_write, load_image

SPLIT = "train: LFW peopleDevTrain.txt identities (all their images) + UTKFace crop_part1 (all)"


def training_files(data: Path) -> list[Path]:
    """Every photo of the training split, in a fixed pseudo-random order (seed 0) that mixes LFW
    and UTKFace, so that a ``--limit`` prefix samples both."""
    lines = (data / "lfw/peopleDevTrain.txt").read_text().split("\n")[1:]
    lfw = [
        data / f"lfw/images_deepfunneled/{name}/{name}_{i:04d}.jpg"
        for name, count in (line.split("\t") for line in lines if line.strip())
        for i in range(1, int(count) + 1)
    ]
    files = lfw + sorted((data / "utkface").glob("*.jpg"))
    order = np.random.default_rng(0).permutation(len(files))
    return [files[i] for i in order]


def landmarks_plausible(landmarks: np.ndarray, box: np.ndarray) -> bool:
    """Whether dlib's (68, 2) landmarks fit the detector box (x0, y0, x1, y1): their centre
    inside it and their extent between 0.5 and 1.6 times its side. dlib always returns 68 points;
    this catches the ones placed on something else."""
    lo, hi = landmarks.min(0), landmarks.max(0)
    cx, cy = 0.5 * (lo + hi)
    side = 0.5 * ((box[2] - box[0]) + (box[3] - box[1]))
    extent = float((hi - lo).max())
    inside = box[0] <= cx <= box[2] and box[1] <= cy <= box[3]
    return bool(inside and 0.5 * side <= extent <= 1.6 * side)


@dataclass
class Shard:
    """Faces collected for one shard file."""

    encoded: list[bytes] = field(default_factory=list)
    landmarks: list[np.ndarray] = field(default_factory=list)
    boxes: list[np.ndarray] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    def write(self, path: Path) -> None:
        buf = io.BytesIO()
        np.savez(
            buf,
            encoded=np.frombuffer(b"".join(self.encoded), np.uint8),
            offsets=np.cumsum([0] + [len(j) for j in self.encoded]).astype(np.int64),
            landmarks=np.asarray(self.landmarks, np.float32).reshape(-1, 68, 2),
            boxes=np.asarray(self.boxes, np.float32).reshape(-1, 4),
            sources=np.asarray(self.sources),
        )
        atomic_write(path, buf.getvalue())


def prepare(
    files: list[Path],
    root: Path,
    out: Path,
    size: int = 128,
    shard_size: int = 2000,
    quality: int = 70,
    batch: int = 16,
    device: str = "auto",
    split: str = SPLIT,
    on_file: Callable[[Path, str, str], None] = lambda path, status, message: None,
) -> dict:
    """Write ``out/shard-NNNNN.npz`` and ``out/index.json`` from the photos ``files`` (normally
    :func:`training_files`, or a prefix of them); return the index. Sources are recorded relative
    to ``root`` and ``split`` names the split in the index.

    ``on_file(path, status, message)`` is called per photo with status ``ok``, ``no_face``,
    ``bad_landmarks`` or ``error`` (unreadable; ``message`` names the file and the reason).
    """
    counts: Counter = Counter()
    shard, written = Shard(), []

    def flush() -> None:
        nonlocal shard
        if shard.encoded:
            path = out / f"shard-{len(written):05d}.npz"
            shard.write(path)
            written.append({"file": path.name, "faces": len(shard.encoded)})
            shard = Shard()

    for start in range(0, len(files), batch):
        chunk, images = [], []
        for path in files[start:start + batch]:
            try:
                images.append(load_image(path).rgb)
                chunk.append(path)
            except ImageError as e:
                counts["error"] += 1
                on_file(path, "error", str(e))
        found_faces = F.find_faces_batch(images, size, device=device)
        for path, image, found in zip(chunk, images, found_faces):
            if not found:
                status = "no_face"
            else:
                face = max(found, key=lambda f: f.score)
                status = "ok" if landmarks_plausible(face.landmarks, face.box) else "bad_landmarks"
            counts[status] += 1
            on_file(path, status, "")
            if status != "ok":
                continue
            crop = F.crop_face(image, face.crop)
            _, encoded = cv2.imencode(".webp", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR),
                                      [cv2.IMWRITE_WEBP_QUALITY, quality])
            shard.encoded.append(encoded.tobytes())
            shard.landmarks.append(face.crop.to_crop(face.landmarks))
            shard.boxes.append(face.crop.to_crop(face.box.reshape(2, 2)).reshape(4))
            shard.sources.append(str(path.relative_to(root)))
            if len(shard.encoded) >= shard_size:
                flush()
    flush()
    index = {
        "split": split,
        "size": size,
        "webp_quality": quality,
        "photos": len(files),
        "faces": counts["ok"],
        "dropped": {k: counts[k] for k in ("no_face", "bad_landmarks", "error")},
        "shards": written,
        "bytes": sum((out / s["file"]).stat().st_size for s in written),
        "detector": "mtcnn (threshold 0.9) + dlib 68 landmarks, most confident face per photo",
    }
    atomic_write(out / "index.json", (json.dumps(index, indent=2) + "\n").encode())
    return index
