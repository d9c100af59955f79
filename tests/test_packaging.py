"""The wheel that ``pip install .`` builds carries every shipped file, and checksums are enforced."""

import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel_tree(tmp_path_factory):
    """The package as a non-editable install lays it out: the built wheel, unpacked."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         str(ROOT), "-w", str(out)],
        check=True, capture_output=True,
    )
    (whl,) = out.glob("fiftyone_faceanon-*.whl")
    with zipfile.ZipFile(whl) as z:
        z.extractall(out / "site")
        entry_points = z.read(next(n for n in z.namelist() if n.endswith("entry_points.txt")))
    return out / "site", entry_points.decode()


def test_wheel_ships_models_with_matching_checksums(wheel_tree):
    """Every file of the manifest, but the GAN's training states in models/training/ (kept for
    the next GPU session, not run by users), which stay out of the wheel."""
    site, _ = wheel_tree
    models = site / "fiftyone_faceanon/models"
    manifest = json.loads((models / "manifest.json").read_text())
    assert manifest["files"]
    assert not (models / "training").exists()
    for name, entry in manifest["files"].items():
        if name.startswith("training/"):
            continue
        data = (models / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], name
        assert len(data) == entry["size"]
        for key in ("source", "training_data", "licence"):
            assert entry.get(key), (name, key)


def test_wheel_ships_plugin_and_console_script(wheel_tree):
    site, entry_points = wheel_tree
    assert (site / "fiftyone_faceanon/plugin/fiftyone.yml").is_file()
    assert "faceanon = fiftyone_faceanon.cli:main" in entry_points


def run_in(site: Path, code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=site, capture_output=True, text=True,
                          env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"})


def test_installed_layout_loads_verified_weights_and_refuses_corrupt_ones(wheel_tree, tmp_path):
    site, _ = wheel_tree
    ok = run_in(site, "from fiftyone_faceanon.weights import model_path, models_dir;"
                      "print(models_dir()); print(model_path('ksame_mean_face_128.npz'))")
    assert ok.returncode == 0, ok.stderr
    assert str(site / "fiftyone_faceanon/models") in ok.stdout
    target = site / "fiftyone_faceanon/models/ksame_mean_face_128.npz"
    original = target.read_bytes()
    try:
        target.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        bad = run_in(site, "from fiftyone_faceanon.weights import model_path;"
                           "model_path('ksame_mean_face_128.npz')")
        assert bad.returncode != 0
        assert "WeightsError" in bad.stderr and "does not match the manifest" in bad.stderr
    finally:
        target.write_bytes(original)


def test_corrupt_weights_stop_the_run_with_one_error(wheel_tree, tmp_path, fixtures_dir):
    """A backend that cannot load is reported once, before any file, not once per file."""
    site, _ = wheel_tree
    target = site / "fiftyone_faceanon/models/ksame_mean_face_128.npz"
    original = target.read_bytes()
    try:
        target.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        argv = ["faceanon", "anonymize", str(fixtures_dir / "ffhq10"), "-o", str(tmp_path / "out"),
                "--backend", "ksame"]
        run = run_in(site, f"import sys; from fiftyone_faceanon.cli import main; sys.argv = {argv!r}; main()")
    finally:
        target.write_bytes(original)
    assert run.returncode == 1, run.stderr
    errors = [line for line in run.stderr.splitlines() if "rror" in line]
    assert len(errors) == 1, run.stderr
    assert "backend ksame" in errors[0] and "does not match the manifest" in errors[0]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
