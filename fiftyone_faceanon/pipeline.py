"""The core API: one image in, one anonymized image out.

``faces`` finds and crops every face, a backend from ``anonymizers`` replaces it, ``photometric``
restores the original's lighting and skin tone, and the crop is pasted back through a feathered
mask. The CLI, the FiftyOne operators and the pre-commit hook all call :class:`Pipeline`.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import asdict, dataclass, field

import numpy as np

from . import faces as F
from .anonymizers import DEFAULT_BACKEND, create_backend
from .photometric import PhotometricSettings, postprocess


@dataclass(frozen=True)
class Settings:
    """Everything that decides an output; two runs with equal settings give equal bytes."""

    backend: str = DEFAULT_BACKEND
    seed: int = 0
    photometric: PhotometricSettings = field(default_factory=PhotometricSettings)
    detector: str = "mtcnn"
    threshold: float = 0.9
    min_face_size: int = 20
    device: str = "auto"
    feather: float = 0.04

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Result:
    """``image`` (H, W, 3) uint8, the faces found in the original, seconds per stage."""

    image: np.ndarray
    faces: list[F.Face]
    timings: dict[str, float]


def face_rng(seed: int, key: str, index: int) -> np.random.Generator:
    """The generator for face ``index`` of the image named ``key``: the same for the same seed
    whatever the order or the worker the image is processed in."""
    return np.random.default_rng([seed, zlib.crc32(key.encode()), index])


class Pipeline:
    """Loads the detector, landmark model and backend once; anonymizes images one by one."""

    def __init__(self, settings: Settings = Settings()):
        self.settings = settings
        self.backend = create_backend(settings.backend)

    def anonymize(self, image: np.ndarray, key: str = "") -> Result:
        """Find and replace every face of an RGB (H, W, 3) uint8 image. ``key`` (e.g. the
        file's relative path) seeds each face's randomness together with ``settings.seed``."""
        s = self.settings
        t0 = time.perf_counter()
        boxes, scores = F.detect_boxes([image], s.detector, s.threshold, s.min_face_size,
                                       s.device)[0]
        t1 = time.perf_counter()
        faces = [F.face_from_box(image, b, p, self.backend.crop_size) for b, p in zip(boxes, scores)]
        t2 = time.perf_counter()
        out, timings = self.replace_faces(image, faces, key)
        return Result(out, faces, {"detect": t1 - t0, "landmarks": t2 - t1, **timings})

    def replace_faces(
        self, image: np.ndarray, faces: list[F.Face], key: str = ""
    ) -> tuple[np.ndarray, dict[str, float]]:
        """Replace the given faces; returns the new image and seconds per stage."""
        if not faces:
            return image.copy(), {"backend": 0.0, "postprocess": 0.0}
        s = self.settings
        size = self.backend.crop_size
        t0 = time.perf_counter()
        crops = np.stack([F.crop_face(image, f.crop) for f in faces])
        lms = np.stack([f.crop.to_crop(f.landmarks) for f in faces])
        regions = np.stack([F.face_region(lm, size) for lm in lms])
        rngs = [face_rng(s.seed, key, i) for i in range(len(faces))]
        anon = self.backend.anonymize(crops, lms, regions, rngs)
        t1 = time.perf_counter()
        if self.backend.photometric and s.photometric.any:
            anon = np.stack([postprocess(a, c, r, s.photometric)
                             for a, c, r in zip(anon, crops, regions)])
        masks = [F.feathered_mask(r, s.feather) for r in regions]
        out = F.paste_faces(image, faces, list(anon), masks)
        t2 = time.perf_counter()
        return out, {"backend": t1 - t0, "postprocess": t2 - t1}
