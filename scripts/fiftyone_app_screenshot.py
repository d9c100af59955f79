"""Make ``docs/fiftyone_app.png``: the FiftyOne App on a dataset anonymized and evaluated with the
plugin's API, captured by headless Chromium (Debian's ``chromium``).

    python scripts/fiftyone_app_screenshot.py [--out docs/fiftyone_app.png]

Only the bundled public-domain demo photos (:mod:`fiftyone_faceanon.demo`) are shown. The App is
served on 127.0.0.1 from a private database in a temporary folder, closed afterwards and the
folder deleted.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PORT = 5161


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "fiftyone_app.png")
    ap.add_argument("--backend", default="ksame")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="faceanon-shot-"))
    # registered before fiftyone's own exit handler, so it runs after it: the demo images, the
    # screenshot and the MongoDB database (about 300 MB) are deleted at exit
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    os.environ.update(FIFTYONE_DATABASE_DIR=str(tmp / "db"), FIFTYONE_DO_NOT_TRACK="true",
                      FIFTYONE_DATABASE_VALIDATION="false", FIFTYONE_SHOW_PROGRESS_BARS="false")
    import fiftyone as fo
    from PIL import Image

    from fiftyone_faceanon.demo import write_demo_inputs
    from fiftyone_faceanon.fiftyone_api import MEDIA_FIELD, anonymize_samples, evaluate_samples

    inputs = write_demo_inputs(tmp / "demo")
    ds = fo.Dataset("faceanon-demo")
    ds.add_samples([fo.Sample(filepath=str(p)) for p in sorted(inputs.iterdir())])
    anonymize_samples(ds, tmp / "anonymized", backend=args.backend)
    evaluate_samples(ds)
    ds.compute_metadata()
    ds.app_config.grid_media_field = MEDIA_FIELD  # the grid shows the anonymized images
    ds.save()
    session = fo.launch_app(ds, address="127.0.0.1", port=PORT, remote=True)
    url = f"http://127.0.0.1:{PORT}/datasets/{ds.name}"
    for _ in range(60):
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            time.sleep(1)
    shot = tmp / "shot.png"
    subprocess.run([shutil.which("chromium"), "--headless", "--no-sandbox", "--disable-gpu",
                    "--hide-scrollbars", "--window-size=1500,1350",
                    "--virtual-time-budget=30000", f"--screenshot={shot}", url],
                   check=True, capture_output=True, timeout=180)
    session.close()
    image = Image.open(shot).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    image.save(args.out, optimize=True)
    print(f"{args.out}: {args.out.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
