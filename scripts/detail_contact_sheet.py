"""Make ``docs/benchmark_contact_sheet_detail.png``: the bundled demo photos out of focus, beside
the verified ``donor`` output without and with detail matching (``faceanon benchmark``).

    python scripts/detail_contact_sheet.py [--sigma 1.3] [--out PNG]

The inputs are :func:`fiftyone_faceanon.demo.demo_images`, each blurred by a Gaussian of
``--sigma`` px (a photo a little out of focus); the columns are the original, ``donor`` with
verification and ``--no-detail-match`` (``detail=0``), and the default.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent

from fiftyone_faceanon.demo import demo_images  # noqa: E402


def write_inputs(folder: Path, sigma: float) -> Path:
    """The demo photos blurred by ``sigma`` px, as PNG files in ``folder`` (created)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, image in demo_images().items():
        Image.fromarray(cv2.GaussianBlur(image, (0, 0), sigma)).save(
            folder / Path(name).with_suffix(".png"))
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sigma", type=float, default=1.3)
    ap.add_argument("--out", type=Path,
                    default=ROOT / "docs" / "benchmark_contact_sheet_detail.png")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        inputs = write_inputs(Path(tmp) / "soft", args.sigma)
        subprocess.run([sys.executable, "-m", "fiftyone_faceanon", "benchmark", str(inputs),
                        "--backends", "donor:detail=0,verify=1;donor:verify=1",
                        "--workers", "1", "--out", str(Path(tmp) / "out")], check=True)
        shutil.copyfile(Path(tmp) / "out" / "contact_sheet.png", args.out)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
