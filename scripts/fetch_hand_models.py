"""Take MediaPipe Hands' two networks out of the ``mediapipe`` wheel into ``models/``.

    python scripts/fetch_hand_models.py

``mediapipe`` itself is not installed (0.10.21, the last release that ships these files,
requires numpy<2); its wheel is downloaded from PyPI, the two ``.tflite`` files are copied out
and recorded in ``models/manifest.json`` with the wheel they came from; the wheel's licence
goes beside them.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from fiftyone_faceanon.hands import LANDMARK_MODEL, PALM_MODEL
from fiftyone_faceanon.weights import models_dir, record, sha256_file

WHEEL = "mediapipe==0.10.21"
#: Each network's folder in the wheel and what it is.
INSIDE = {PALM_MODEL: ("mediapipe/modules/palm_detection/", "palm detector"),
          LANDMARK_MODEL: ("mediapipe/modules/hand_landmark/", "hand landmarks (21 points)")}
#: The wheel's licence (Apache-2.0), shipped beside the networks as the licence requires.
WHEEL_LICENCE, LICENCE_FILE = "mediapipe-0.10.21.dist-info/LICENSE", "LICENSE-mediapipe.txt"
LICENCE = (f"Apache-2.0 (MediaPipe, Google LLC; models/{LICENCE_FILE}); model card: "
           "https://storage.googleapis.com/mediapipe-assets/Model%20Card%20Hand%20Tracking"
           "%20(Lite_Full)%20with%20Fairness%20Oct%202021.pdf")
TRAINING = ("Google's MediaPipe Hands data (model card: in-the-wild and in-house gesture photos, "
            "rendered synthetic hands); not trained here")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                        "--only-binary=:all:", "--python-version", "3.11",
                        "--platform", "manylinux_2_28_x86_64", WHEEL, "-d", tmp], check=True)
        (wheel,) = Path(tmp).glob("mediapipe-*.whl")
        with zipfile.ZipFile(wheel) as zf:
            (models_dir() / LICENCE_FILE).write_bytes(zf.read(WHEEL_LICENCE))
            for name, (folder, kind) in INSIDE.items():
                (models_dir() / name).write_bytes(zf.read(folder + name))
                entry = record(
                    name, kind=f"MediaPipe Hands {kind}",
                    source=f"{wheel.name} (sha256 {sha256_file(wheel)}), {folder}{name}",
                    command="python scripts/fetch_hand_models.py", licence=LICENCE,
                    training_data=TRAINING)
                print(name, entry["sha256"], entry["size"])


if __name__ == "__main__":
    main()
