"""Which faces to compare: the anonymizer's sidecar when there is one, else detection.

``faceanon anonymize`` writes ``OUT/REL.json`` beside each output ``OUT/REL`` (see ``batch.py``):
its ``faces`` list holds, per replaced face, the original image's detector ``box``, ``score`` and
68 ``landmarks``. Those are the faces a metric compares; the crop transform is recomputed from
the landmarks at the metrics' own crop size, so every backend is measured on the same crops.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..faces import Face, crop_transform

#: Side of the square crops every metric is computed on (pixels).
CROP_SIZE = 128


def sidecar_path(anon_path: Path) -> Path:
    """``OUT/REL.json`` for the anonymized image ``OUT/REL``."""
    return anon_path.with_name(anon_path.name + ".json")


def faces_from_records(records: list[dict], crop_size: int = CROP_SIZE) -> list[Face]:
    """:class:`Face` objects from a sidecar's ``faces`` list (``box``, ``score``, ``landmarks``)."""
    faces = []
    for r in records:
        lms = np.asarray(r["landmarks"], np.float64).reshape(68, 2)
        faces.append(Face(np.asarray(r["box"], np.float64), float(r.get("score", 1.0)), lms,
                          crop_transform(lms, crop_size)))
    return faces


def faces_from_sidecar(anon_path: Path, crop_size: int = CROP_SIZE) -> list[Face] | None:
    """The original's faces recorded in ``anon_path``'s sidecar, or None when there is none.

    Raises ``ValueError`` (one line, naming the file) for a sidecar that cannot be read.
    """
    path = sidecar_path(anon_path)
    if not path.is_file():
        return None
    try:
        return faces_from_records(json.loads(path.read_text())["faces"], crop_size)
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: unreadable sidecar ({type(e).__name__}: {e})") from None
