"""Shared fixtures. Tests that need ``../shared/data`` skip when it is absent and fail when the
``CI`` environment variable is set (CI always has it)."""

from __future__ import annotations

import atexit
import os
import re
import shutil
import tempfile
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
os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
os.environ.setdefault("FIFTYONE_SHOW_PROGRESS_BARS", "false")

#: fiftyone's MongoDB and plugins folder for this session (and the CLIs it starts), never the
#: user's; fiftyone reads them at import. Deleted at exit: the database is about 300 MB. A
#: process the session starts that imports a test module, and with it this file (a pool worker
#: given a test's function), takes the folder from the environment and leaves it alone: it is
#: the session's, and such a worker ends terminated, without running its exit handlers (so a
#: folder of its own would be left behind).
SESSION_DIR = "FACEANON_TESTS_FIFTYONE_DIR"
OWNER = SESSION_DIR not in os.environ
if OWNER:
    os.environ[SESSION_DIR] = tempfile.mkdtemp(prefix="faceanon-tests-fiftyone-")
FIFTYONE_DIR = Path(os.environ[SESSION_DIR])
os.environ["FIFTYONE_DATABASE_DIR"] = str(FIFTYONE_DIR / "db")
os.environ["FIFTYONE_PLUGINS_DIR"] = str(FIFTYONE_DIR / "plugins")


def remove_fiftyone_dir() -> None:
    """Stop the MongoDB that serves the session's database, if a test started one, and delete
    the session's fiftyone folder. Registered before fiftyone is imported, so it runs after
    fiftyone's own exit handler, which deletes the non-persistent datasets through that MongoDB
    (and would wait 30 s for it if it were gone)."""
    import psutil

    servers = [p for p in psutil.process_iter(["cmdline"])  # mongod and fiftyone's wrapper
               if os.environ["FIFTYONE_DATABASE_DIR"] in (p.info["cmdline"] or [])]
    for server in servers:
        try:
            server.terminate()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(servers, timeout=60)
    shutil.rmtree(FIFTYONE_DIR, ignore_errors=True)


if OWNER:
    atexit.register(remove_fiftyone_dir)


def need_shared(path: str = "") -> Path:
    """``../shared/data/<path>``; skip the test when it is missing (fail under CI)."""
    full = SHARED_DATA / path
    if not full.exists():
        reason = f"{full} is absent: the real-photo tests need ../shared/data beside the checkout"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return full


def need_ray():
    """The ``ray`` module; skip the test when Ray is not installed (fail under CI, whose
    ``./setup.sh --dev`` installs the ``ray`` extra)."""
    try:
        import ray
    except ImportError:
        reason = "ray is not installed: pip install '.[ray]' (./setup.sh --dev installs it)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return ray


#: Object store of each test Ray node: enough for the jobs and results of a few images.
RAY_OBJECT_STORE = 100 * 2**20


@pytest.fixture(scope="module")
def local_ray():
    """A Ray instance on this machine for the tests of one module (2 CPUs, a small object store,
    no dashboard), which the engine joins instead of starting its own; shut down after them."""
    import logging

    ray = need_ray()
    ray.init(num_cpus=2, object_store_memory=RAY_OBJECT_STORE, include_dashboard=False,
             logging_level=logging.ERROR)
    yield ray
    ray.shutdown()


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


def largest_face(image: np.ndarray, **find):
    """The largest face ``find_faces`` finds in ``image`` (on the CPU, ``find`` passed on)."""
    from fiftyone_faceanon.faces import find_faces

    return max(find_faces(image, device="cpu", **find),
               key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))


#: LFW images the engine tests anonymize, and the seed they use.
ENGINE_IMAGES = 40
ENGINE_SEED = 5
#: The engine tests test the engines: without verification, which 3 of these 40 faces fail
#: (written fail-closed, exit code 1; verification on Ray: test_fiftyone_plugin's Ray test).
ENGINE_OPTIONS = ("--no-verify",)


def lfw_images(n: int) -> list[Path]:
    """The first ``n`` images of LFW's ``peopleDevTest.txt`` (250x250, one face each)."""
    lfw = need_shared("lfw")
    paths = []
    for line in (lfw / "peopleDevTest.txt").read_text().splitlines()[1:]:
        name, count = line.split()
        paths += [lfw / f"images_deepfunneled/{name}/{name}_{i:04d}.jpg"
                  for i in range(1, int(count) + 1)]
    return paths[:n]


@pytest.fixture(scope="session")
def engine_inputs(tmp_path_factory) -> Path:
    """A folder of :data:`ENGINE_IMAGES` LFW images."""
    folder = tmp_path_factory.mktemp("engine") / "in"
    folder.mkdir()
    for path in lfw_images(ENGINE_IMAGES):
        (folder / path.name).write_bytes(path.read_bytes())
    return folder


def file_tree(folder: Path) -> dict[str, bytes]:
    """``{relative path: bytes}`` of every file under ``folder``, hidden ones included."""
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def run_counts(output: str) -> dict[str, int]:
    """The counts of ``faceanon anonymize``'s last line: ``{ok, no_face, skipped, unverified,
    error}``."""
    found = re.search(r"(\d+) anonymized, (\d+) without a face, (\d+) already done, "
                      r"(\d+) unverified \(fail-closed\), (\d+) failed", output)
    assert found, output
    return dict(zip(("ok", "no_face", "skipped", "unverified", "error"),
                    map(int, found.groups())))


@pytest.fixture(scope="session")
def engine_reference(engine_inputs, tmp_path_factory) -> Path:
    """:func:`engine_inputs` anonymized by the local engine in one process with
    :data:`ENGINE_SEED`: the bytes every engine must give."""
    from click.testing import CliRunner

    from fiftyone_faceanon.cli import main

    out = tmp_path_factory.mktemp("engine-local") / "out"
    result = CliRunner().invoke(main, ["anonymize", str(engine_inputs), "-o", str(out), "--seed",
                                       str(ENGINE_SEED), "--workers", "1", *ENGINE_OPTIONS])
    counts = run_counts(result.output)
    # a face still matched after every try is written fail-closed and makes the exit code 1
    assert result.exit_code == (1 if counts["unverified"] else 0), result.output
    assert counts["ok"] + counts["no_face"] + counts["unverified"] == ENGINE_IMAGES, result.output
    return out
