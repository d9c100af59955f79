"""The bundled default input: public-domain photos that ship inside installed packages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def demo_images() -> dict[str, np.ndarray]:
    """``{file name: image}``: scikit-image's astronaut (RGB, one face) and cameraman (grayscale,
    a small face), matplotlib's Grace Hopper (JPEG, one face)."""
    import matplotlib.cbook
    from skimage import data

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        hopper = np.asarray(Image.open(f).convert("RGB"))
    return {"astronaut.png": data.astronaut(), "cameraman.png": data.camera(),
            "grace_hopper.jpg": hopper}


def write_demo_inputs(folder: Path) -> Path:
    """Write :func:`demo_images` into ``folder`` (kept if already there) and return it."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, image in demo_images().items():
        if not (folder / name).exists():
            Image.fromarray(image).save(folder / name)
    return folder
