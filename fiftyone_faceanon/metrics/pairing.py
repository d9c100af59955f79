"""Which faces to compare: the anonymizer's private record when there is one, else detection.

``faceanon anonymize`` writes the private record ``OUT.private/REL.json`` of each output
``OUT/REL`` (see ``batch.py``; the public sidecar ``OUT/REL.json`` holds only the anonymized
geometry): its ``faces`` list holds, per replaced face, the original image's detector ``box``,
``score`` and 68 ``landmarks``. Those are the faces a metric compares; the crop transform is
recomputed from the landmarks at the metrics' own crop size, so every backend is measured on the
same crops.

A video's record holds, per frame, its faces with their track ids (``frames``), the original's
box and landmarks and the geometry they were rendered at (``anonymized``): :mod:`.video` reads
it whole (:func:`read_record`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..faces import Face, crop_transform
from ..images import record_path

#: Side of the square crops every metric is computed on (pixels).
CROP_SIZE = 128


def faces_from_records(records: list[dict], crop_size: int = CROP_SIZE) -> list[Face]:
    """:class:`Face` objects from a record's ``faces`` list (``box``, ``score``, ``landmarks``)."""
    faces = []
    for r in records:
        lms = np.asarray(r["landmarks"], np.float64).reshape(68, 2)
        faces.append(Face(np.asarray(r["box"], np.float64), float(r.get("score", 1.0)), lms,
                          crop_transform(lms, crop_size)))
    return faces


def read_record(anon_path: Path, rel: str) -> dict | None:
    """The private record of ``anon_path`` (``OUT/REL``, ``rel`` its path under ``OUT``), or
    None when there is none.

    Raises ``ValueError`` (one line, naming the file) for a record that cannot be read.
    """
    path = record_path(anon_path, rel)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (ValueError, OSError) as e:
        raise ValueError(f"{path}: unreadable record ({type(e).__name__}: {e})") from None


def faces_from_record(anon_path: Path, rel: str, crop_size: int = CROP_SIZE
                      ) -> list[Face] | None:
    """The original's faces in the private record of ``anon_path`` (:func:`read_record`), or
    None when there is none.

    Raises ``ValueError`` (one line, naming the file) for a record that cannot be read.
    """
    record = read_record(anon_path, rel)
    if record is None:
        return None
    try:
        return faces_from_records(record["faces"], crop_size)
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{record_path(anon_path, rel)}: unreadable record "
                         f"({type(e).__name__}: {e})") from None
