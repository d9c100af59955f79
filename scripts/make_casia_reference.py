"""Reference embeddings for the CASIA FaceNet conversion, from an independent run of the graph.

Stage 1 (project venv): detect the face in each public-domain demo image (skimage astronaut and
camera, matplotlib grace_hopper), cut its 160 x 160 crop with the judge's own ``facenet_crops``.
Stage 2 (a separate, clean venv with only numpy and ``opencv-python-headless==5.0.0.93``, which
can read the frozen graph; OpenCV 4 cannot): the model's fixed standardisation
``(x - 127.5) / 128`` in numpy and
``cv2.dnn.readNetFromTensorflow(graph_final.pb)`` forward to the ``embeddings`` node.
Writes ``tests/data/casia_reference.npz``: image names, face boxes (the crop definition:
``facenet_crops`` with margin 32 on these boxes), the crops, and the OpenCV embeddings.

    python -m venv /tmp/cv5venv && /tmp/cv5venv/bin/pip install numpy opencv-python-headless==5.0.0.93
    .venv/bin/python scripts/make_casia_reference.py --cv5-python /tmp/cv5venv/bin/python
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "casia_reference.npz"


def opencv_stage(crops_npz: str, graph: str, out_npz: str) -> None:
    """Run in the OpenCV 5 venv: numpy + cv2 only."""
    import cv2

    crops = np.load(crops_npz)["crops"].astype(np.float64)
    net = cv2.dnn.readNetFromTensorflow(graph)
    embeddings = []
    for crop in crops:
        x = ((crop - 127.5) / 128.0).astype(np.float32)
        net.setInput(x.transpose(2, 0, 1)[None])
        embeddings.append(net.forward("embeddings").reshape(-1))
    np.savez(out_npz, embeddings=np.array(embeddings, np.float32), opencv=cv2.__version__)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cv5-python", required=True, help="python of the OpenCV 5 venv")
    args = parser.parse_args()
    from fiftyone_faceanon.demo import demo_images
    from fiftyone_faceanon.faces import find_faces
    from fiftyone_faceanon.metrics.identity import casia_graph_path, facenet_crops

    names, boxes, crops = [], [], []
    for name, image in sorted(demo_images().items()):
        rgb = np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image
        faces = find_faces(rgb)
        if len(faces) != 1:
            sys.exit(f"{name}: expected one face, found {len(faces)}")
        names.append(name)
        boxes.append(faces[0].box)
        crops.append(facenet_crops(rgb, faces)[0])
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(f"{tmp}/crops.npz", crops=np.array(crops))
        subprocess.run([args.cv5_python, __file__, "--opencv-stage", f"{tmp}/crops.npz",
                        str(casia_graph_path()), f"{tmp}/out.npz"], check=True)
        ref = np.load(f"{tmp}/out.npz")
        OUT.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(OUT, names=np.array(names), boxes=np.array(boxes), margin=32,
                            crops=np.array(crops), embeddings=ref["embeddings"],
                            opencv=ref["opencv"])
    print(f"wrote {OUT} (OpenCV {ref['opencv']}): {names}")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--opencv-stage":
        opencv_stage(*sys.argv[2:])
    else:
        main()
