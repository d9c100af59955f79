"""Take MediaPipe Hands' two networks, the face mesh network and the iris network out of the
``mediapipe`` wheel into ``models/``.

    python scripts/fetch_mediapipe_models.py

``mediapipe`` itself is not installed (0.10.21, the last release that ships these files,
requires numpy<2); its wheel is downloaded from PyPI, the four ``.tflite`` files are copied out
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
from fiftyone_faceanon.iris import IRIS_MODEL
from fiftyone_faceanon.mesh import MESH_MODEL
from fiftyone_faceanon.weights import models_dir, record, sha256_file

WHEEL = "mediapipe==0.10.21"
#: Each network's folder in the wheel, what it is, where it is described, its training data.
HAND_CARD = ("https://storage.googleapis.com/mediapipe-assets/Model%20Card%20Hand%20Tracking"
             "%20(Lite_Full)%20with%20Fairness%20Oct%202021.pdf")
HAND_DATA = ("Google's MediaPipe Hands data (model card: in-the-wild and in-house gesture photos, "
             "rendered synthetic hands); not trained here")
MESH_CARD = ("Kartynnik et al., Real-time Facial Surface Geometry from Monocular Video on Mobile "
             "GPUs, arXiv:1907.06724")
MESH_DATA = ("Google's MediaPipe Face Mesh data (arXiv:1907.06724: in-the-wild mobile-camera "
             "photos, annotated by a 3-D face model fitted to 2-D landmarks); not trained here")
IRIS_CARD = ("Ablavatski et al., Real-time Pupil Tracking from Monocular Video for Digital "
             "Puppetry, arXiv:2006.11341")
IRIS_DATA = ("Google's MediaPipe Iris data (arXiv:2006.11341: mobile-camera photos "
             "with iris and eye contours annotated by hand); not trained here")
INSIDE = {
    PALM_MODEL: ("mediapipe/modules/palm_detection/", "MediaPipe Hands palm detector",
                 HAND_CARD, HAND_DATA),
    LANDMARK_MODEL: ("mediapipe/modules/hand_landmark/", "MediaPipe Hands hand landmarks "
                     "(21 points)", HAND_CARD, HAND_DATA),
    MESH_MODEL: ("mediapipe/modules/face_landmark/", "MediaPipe Face Mesh (468 points in 3-D)",
                 MESH_CARD, MESH_DATA),
    IRIS_MODEL: ("mediapipe/modules/iris_landmark/", "MediaPipe Iris (5 iris points and 71 eye "
                 "and brow points per eye)", IRIS_CARD, IRIS_DATA)}
#: The wheel's licence (Apache-2.0), shipped beside the networks as the licence requires.
WHEEL_LICENCE, LICENCE_FILE = "mediapipe-0.10.21.dist-info/LICENSE", "LICENSE-mediapipe.txt"
LICENCE = f"Apache-2.0 (MediaPipe, Google LLC; models/{LICENCE_FILE}); described in: "


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                        "--only-binary=:all:", "--python-version", "3.11",
                        "--platform", "manylinux_2_28_x86_64", WHEEL, "-d", tmp], check=True)
        (wheel,) = Path(tmp).glob("mediapipe-*.whl")
        with zipfile.ZipFile(wheel) as zf:
            (models_dir() / LICENCE_FILE).write_bytes(zf.read(WHEEL_LICENCE))
            for name, (folder, kind, card, training) in INSIDE.items():
                (models_dir() / name).write_bytes(zf.read(folder + name))
                entry = record(
                    name, kind=kind,
                    source=f"{wheel.name} (sha256 {sha256_file(wheel)}), {folder}{name}",
                    command="python scripts/fetch_mediapipe_models.py", licence=LICENCE + card,
                    training_data=training)
                print(name, entry["sha256"], entry["size"])


if __name__ == "__main__":
    main()
