"""Make ``docs/video_contact_sheet.jpg``: frames of a demo clip beside the same frames of its
anonymized copy (``faceanon anonymize`` with the defaults), one row per shown frame.

    python scripts/video_contact_sheet.py [--out docs/video_contact_sheet.jpg]

The clip is a camera panning and zooming (``tests/clips.py``'s ``pan_zoom_clip``) over a strip
of the bundled public-domain demo photos (:mod:`fiftyone_faceanon.demo`: the astronaut, Grace
Hopper, the cameraman), so only shippable pixels are shown. The sheet marks each replaced face
with its track id and the frame's source (detected, tracked, interpolated, extrapolated).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from clips import pan_zoom_clip  # noqa: E402

from fiftyone_faceanon.demo import demo_images  # noqa: E402
from fiftyone_faceanon.images import records_dir  # noqa: E402
from fiftyone_faceanon.videoio import read_frames  # noqa: E402


def strip(height: int = 512) -> np.ndarray:
    """The demo photos side by side at one height, (height, W, 3) uint8."""
    tiles = []
    for name in ("astronaut.png", "grace_hopper.jpg", "cameraman.png"):
        image = demo_images()[name]
        image = np.repeat(image[..., None], 3, 2) if image.ndim == 2 else image
        width = round(image.shape[1] * height / image.shape[0])
        tiles.append(cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA))
    return np.hstack(tiles)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "video_contact_sheet.jpg")
    ap.add_argument("--frames", type=int, nargs="+", default=[0, 15, 30, 45, 59])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        Image.fromarray(strip()).save(tmp / "strip.png")
        clip = pan_zoom_clip(tmp / "strip.png", tmp / "in" / "demo.mp4", frames=60)
        subprocess.run([sys.executable, "-m", "fiftyone_faceanon", "anonymize", str(clip),
                        "-o", str(tmp / "out"), "--workers", "1"], check=False)
        public = json.loads((tmp / "out" / "demo.mp4.json").read_text())
        record = json.loads((records_dir(tmp / "out") / "demo.mp4.json").read_text())
        before, after = list(read_frames(clip)), list(read_frames(tmp / "out" / "demo.mp4"))
    rows = []
    for t in args.frames:
        marked = after[t].copy()
        for face in public["frames"][t]:
            x0, y0, x1, y1 = (int(v) for v in face["box"])
            cv2.rectangle(marked, (x0, y0), (x1, y1), (255, 255, 0), 1)
            cv2.putText(marked, f"{face['track']} {face['source'][:3]}", (x0, max(y0 - 4, 10)),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 0), 1)
        rows.append(np.hstack([before[t], marked]))
    Image.fromarray(np.vstack(rows)).save(args.out, quality=90)
    print(json.dumps(record["tracks"], indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
