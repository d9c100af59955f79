"""Make ``docs/benchmark_contact_sheet_turned.png``: faces that do not stand upright, beside
what each backend makes of them (``faceanon benchmark`` with its default backends).

    python scripts/turned_contact_sheet.py [--out docs/benchmark_contact_sheet_turned.png]

Three inputs: the bundled demo astronaut (:mod:`fiftyone_faceanon.demo`) a quarter turned
counter-clockwise, the dog fixture with a magazine at its edge whose face lies on its side
(``fixtures/dlib_faces/dogs.jpg``) and the group fixture upside down
(``fixtures/group/insightface_t1.jpg``), both from ``../shared/data``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT.parent / "shared" / "data" / "fixtures"

from fiftyone_faceanon.demo import demo_images  # noqa: E402


def write_inputs(folder: Path) -> Path:
    """The three turned photos in ``folder`` (created), named so they sort in sheet order."""
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.rot90(demo_images()["astronaut.png"])).save(folder / "astronaut_turned.png")
    shutil.copyfile(FIXTURES / "dlib_faces" / "dogs.jpg", folder / "dogs.jpg")
    group = np.asarray(Image.open(FIXTURES / "group" / "insightface_t1.jpg").convert("RGB"))
    Image.fromarray(np.rot90(group, 2)).save(folder / "group_upside_down.png")
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path,
                    default=ROOT / "docs" / "benchmark_contact_sheet_turned.png")
    args = ap.parse_args()
    if not FIXTURES.is_dir():
        sys.exit(f"{FIXTURES}: not found; the fixtures are read from ../shared/data")
    with tempfile.TemporaryDirectory() as tmp:
        inputs = write_inputs(Path(tmp) / "turned")
        subprocess.run([sys.executable, "-m", "fiftyone_faceanon", "benchmark", str(inputs),
                        "--workers", "1", "--out", str(Path(tmp) / "out")], check=True)
        shutil.copyfile(Path(tmp) / "out" / "contact_sheet.png", args.out)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
