"""Weights the project ships: ``models/manifest.json`` and checksum-verified loading.

The manifest maps each file in ``models/`` to its sha256, size, source, training data, licence
and the metrics it achieved. :func:`model_path` refuses a file whose checksum differs. Files
under ``models/training/`` are the GAN's training state kept between GPU sessions
(:func:`~.gan.train.keep_state`), listed like the others but left out of the wheel.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

MANIFEST = "manifest.json"


def models_dir() -> Path:
    """``fiftyone_faceanon/models`` in an installed wheel, ``models/`` in a source checkout."""
    installed = Path(__file__).parent / "models"
    return installed if (installed / MANIFEST).is_file() else Path(__file__).parent.parent / "models"


def manifest() -> dict:
    """The parsed ``models/manifest.json``: ``{"files": {name: entry}}``."""
    return json.loads((models_dir() / MANIFEST).read_text())


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class WeightsError(RuntimeError):
    """A shipped weight file is missing, unlisted or corrupt."""


@lru_cache(maxsize=None)
def model_path(name: str) -> Path:
    """Path of the shipped file ``name`` after checking its sha256 against the manifest."""
    entry = manifest()["files"].get(name)
    if entry is None:
        raise WeightsError(f"models/{name}: not listed in {MANIFEST}")
    path = models_dir() / name
    if not path.is_file():
        raise WeightsError(f"{path}: missing (reinstall the package)")
    digest = sha256_file(path)
    if digest != entry["sha256"]:
        raise WeightsError(f"{path}: sha256 {digest} does not match the manifest's {entry['sha256']}")
    return path


def record(name: str, **metadata) -> dict:
    """Add or refresh ``name``'s manifest entry: its sha256 and size are measured, the rest
    (source, training data, licence, metrics, ...) merged in. Used by the build scripts."""
    path = models_dir() / name
    data = manifest()
    entry = data["files"].setdefault(name, {})
    entry.update(metadata)
    entry.update(sha256=sha256_file(path), size=path.stat().st_size)
    (models_dir() / MANIFEST).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    model_path.cache_clear()
    return entry
