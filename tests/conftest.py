"""Shared fixtures. Tests that need ``../shared/data`` skip when it is absent and fail when the
``CI`` environment variable is set (CI always has it)."""

from __future__ import annotations

import os
from pathlib import Path

# One intra-op thread for torch, OpenBLAS and OpenCV's OpenMP in this process and every CLI it
# starts: the per-image networks gain nothing from more on a 2-core machine and OpenMP's
# spin-waiting threads made the suite several times slower (docs/benchmarks.md). Set before
# numpy and torch are imported, which read it once.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"

os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")


def need_shared(path: str = "") -> Path:
    """``../shared/data/<path>``; skip the test when it is missing (fail under CI)."""
    full = SHARED_DATA / path
    if not full.exists():
        reason = f"{full} is absent: the real-photo tests need ../shared/data beside the checkout"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return full


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return need_shared()


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return need_shared("fixtures")


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


def read_rgb(path: Path) -> np.ndarray:
    from fiftyone_faceanon.images import load_image

    return load_image(path).rgb
