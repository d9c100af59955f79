"""Faces of turned photos: how many the default pipeline finds and verifies, at any roll and
upright only.

    python benchmarks/bench_any_roll.py --n 40 [--angles 0,45,90,135,180,270]

Takes the first N LFW ``peopleDevTest.txt`` images from ``../shared/data`` (one person each,
in the middle), turns each by every angle (counter-clockwise, the canvas grown to hold it, the
corners filled by reflection) and anonymizes it with the default settings (``donor``,
verification on), with ``any_roll`` on and off. The person is the face whose box centre lies
nearest the image centre, within a fifth of its side. Prints a Markdown table for
docs/benchmarks.md: per angle, how many of the N people were found, and how their faces
ended (verified, fail-closed), and the faces found per image (others, or textures).
"""

from __future__ import annotations

import argparse
from collections import Counter

import cv2
import numpy as np

from bench_anonymize import lfw_test_images
from fiftyone_faceanon.images import load_image
from fiftyone_faceanon.pipeline import Pipeline, Settings


def turned(image: np.ndarray, degrees: float) -> np.ndarray:
    """The (H, W, 3) image turned counter-clockwise on a canvas that holds all of it."""
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    cos, sin = abs(m[0, 0]), abs(m[0, 1])
    size = int(round(h * sin + w * cos)), int(round(h * cos + w * sin))
    m[:, 2] += np.array(size) / 2 - (w / 2, h / 2)
    return cv2.warpAffine(image, m, size, borderMode=cv2.BORDER_REFLECT_101)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--angles", default="0,45,90,135,180,270")
    args = ap.parse_args()
    images = [load_image(p).rgb for p in lfw_test_images(args.n)]
    angles = [float(a) for a in args.angles.split(",")]
    print(f"{len(images)} LFW DevTest images, default settings (donor, verification)\n")
    print("| turned by | any roll: person found | verified | fail-closed | faces per image "
          "| upright only: person found | verified | faces per image |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    pipelines = {any_roll: Pipeline(Settings(device="cpu", any_roll=any_roll))
                 for any_roll in (True, False)}
    for degrees in angles:
        row = []
        for any_roll, pipeline in pipelines.items():
            ends, faces = Counter(), 0
            for i, image in enumerate(images):
                view = turned(image, degrees)
                result = pipeline.anonymize(view, f"{i}")
                faces += len(result.records)
                centre = np.array(view.shape[1::-1]) / 2
                near = [r for r in result.records if np.linalg.norm(
                    (r.original.box[:2] + r.original.box[2:]) / 2 - centre) < min(centre) * 0.4]
                ends[near[0].status.split(":")[0] if near else "missed"] += 1
            found = len(images) - ends["missed"]
            row += [f"{found}", f"{ends['verified']}"]
            if any_roll:
                row += [f"{ends['fail_closed']}"]
            row += [f"{faces / len(images):.2f}"]
        print(f"| {degrees:g} | " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
