"""The ray engine on a Ray instance on this machine, with real models and photos: the bytes, the
per-file lines and the exit codes of the local engine, for ``faceanon anonymize`` (images and
videos) and ``faceanon evaluate``; a one-line error when Ray is missing or its cluster cannot be reached."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner
from clips import pan_zoom_clip
from conftest import (ENGINE_IMAGES, ENGINE_OPTIONS, ENGINE_SEED, file_tree, lfw_images,
                      need_ray, run_counts)

from fiftyone_faceanon.cli import main
from fiftyone_faceanon.engines import RAY_EXTRA, TOKEN_HINT, Engine, as_engine

FACEANON = Path(sys.executable).parent / "faceanon"


def run_cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_ray_gives_the_bytes_of_the_local_engine(local_ray, engine_inputs, engine_reference,
                                                  tmp_path):
    result = run_cli("anonymize", engine_inputs, "-o", tmp_path / "out", "--seed", ENGINE_SEED,
                     "--engine", "ray", "--workers", 2, *ENGINE_OPTIONS)
    counts = run_counts(result.output)
    assert result.exit_code == (1 if counts["unverified"] else 0), result.output
    assert counts["ok"] + counts["no_face"] + counts["unverified"] == ENGINE_IMAGES
    assert counts["skipped"] == 0
    assert file_tree(tmp_path / "out") == file_tree(engine_reference)
    assert file_tree(tmp_path / "out.private") == file_tree(
        engine_reference.parent / "out.private")
    again = run_counts(run_cli("anonymize", engine_inputs, "-o", tmp_path / "out", "--seed",
                               ENGINE_SEED, "--engine", "ray", "--workers", 2,
                               *ENGINE_OPTIONS).output)
    # resume, as locally: what was done is skipped; fail-closed files are reported again
    assert again["skipped"] + again["unverified"] == ENGINE_IMAGES
    assert again["unverified"] == counts["unverified"]


def test_a_video_gets_the_bytes_of_the_local_engine(local_ray, fixtures_dir, tmp_path):
    """A video beside a photo, verified (the default): a Ray task renders the video with the
    threads it is given, locally it gets one per core; the tracks, their plans (donor
    conflicts between six faces on screen) and the frames must not depend on that."""
    src = tmp_path / "in"
    src.mkdir()
    pan_zoom_clip(fixtures_dir / "group/insightface_t1.jpg", src / "pan.mp4", frames=16)
    (src / "photo.jpg").write_bytes(lfw_images(1)[0].read_bytes())
    runs = {}
    for engine, workers in (("local", 1), ("ray", 2)):
        result = run_cli("anonymize", src, "-o", tmp_path / engine, "--engine", engine,
                         "--workers", workers)
        runs[engine] = (result.exit_code, run_counts(result.output),
                        file_tree(tmp_path / engine), file_tree(tmp_path / f"{engine}.private"))
    assert runs["ray"] == runs["local"]
    exit_code, counts, tree, private = runs["ray"]
    assert counts["ok"] + counts["unverified"] == 2 and exit_code == (counts["unverified"] > 0)
    assert {"pan.mp4", "photo.jpg"} <= set(tree)
    tracks = json.loads(private[next(k for k in private if k.endswith("pan.mp4.json"))])["tracks"]
    assert len(tracks) >= 5  # the group photo's faces, each a track


def test_bad_input_gives_the_lines_and_exit_code_of_the_local_engine(local_ray, fixtures_dir,
                                                                      tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for path in lfw_images(3):
        (src / path.name).write_bytes(path.read_bytes())
    (src / "corrupt.jpg").write_bytes(b"\xff\xd8 not a jpeg" * 50)
    (src / "empty.png").write_bytes(b"")
    (src / "noface.png").write_bytes((fixtures_dir / "faceapi/white.png").read_bytes())
    runs = {}
    for engine, workers in (("local", 1), ("ray", 2)):
        result = run_cli("anonymize", src, "-o", tmp_path / engine, "--engine", engine,
                         "--workers", workers, *ENGINE_OPTIONS)
        lines = [line for line in result.output.splitlines() if line.startswith("error: ")]
        runs[engine] = (result.exit_code, lines, run_counts(result.output),
                        file_tree(tmp_path / engine))
    assert runs["ray"] == runs["local"]
    exit_code, lines, counts, _ = runs["ray"]
    assert exit_code == 1 and len(lines) == 2
    assert "corrupt.jpg" in lines[0] and "empty.png: empty file" in lines[1]
    assert counts == {"ok": 3, "no_face": 1, "skipped": 0, "unverified": 0, "error": 2}


def test_evaluate_gives_the_report_of_the_local_engine(local_ray, engine_inputs,
                                                       engine_reference, tmp_path):
    reports = {}
    for engine, workers in (("local", 1), ("ray", 2)):
        out = tmp_path / f"{engine}.json"
        result = run_cli("evaluate", engine_inputs, engine_reference, "--out", out, "--device",
                         "cpu", "--engine", engine, "--workers", workers)
        assert result.exit_code == 0, result.output
        reports[engine] = json.loads(out.read_text())
    assert len(reports["ray"]["pairs"]) == ENGINE_IMAGES  # 5 batches of 8 over 2 workers
    assert reports["ray"] == reports["local"]


def test_auto_picks_ray_when_an_address_is_known(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert as_engine("auto") == Engine("local")
    assert as_engine("auto", "127.0.0.1:6379") == Engine("ray", "127.0.0.1:6379")
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    assert as_engine("auto") == Engine("ray")
    assert as_engine("local") == Engine("local")
    with pytest.raises(ValueError, match="needs the ray engine"):
        as_engine("local", "127.0.0.1:6379")


def test_unreachable_cluster_is_one_line(engine_inputs, tmp_path):
    with socket.socket() as s:  # a port of this machine where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"127.0.0.1:{port}"
    proc = subprocess.run([FACEANON, "anonymize", engine_inputs, "-o", tmp_path / "out",
                           "--engine", "ray", "--ray-address", address],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        f"Error: cannot reach the Ray cluster at {address}: Connection refused"]
    assert not (tmp_path / "out").exists()


def test_without_ray_local_runs_and_ray_names_the_extra(engine_inputs, tmp_path):
    """Ray made unimportable in a fresh interpreter: the local engine does not need it, the
    ray engine says in one line what installs it."""
    image = sorted(engine_inputs.iterdir())[0]
    code = "import sys; sys.modules['ray'] = None; from fiftyone_faceanon.cli import main; main()"
    procs = {engine: subprocess.run(
        [sys.executable, "-c", code, "anonymize", image, "-o", tmp_path / engine, "--engine",
         engine], capture_output=True, text=True, timeout=300) for engine in ("local", "ray")}
    assert procs["local"].returncode == 0, procs["local"].stderr
    assert (tmp_path / "local" / image.name).is_file()
    assert procs["ray"].returncode == 1
    assert procs["ray"].stderr.splitlines() == [
        f"Error: the ray engine needs Ray, which is not installed: {RAY_EXTRA}"]


@pytest.fixture
def ray_head():
    """A one-CPU Ray head started as a cluster is (``ray start --head``), with token
    authentication on, as ``ray start`` turns it on wherever a token exists; its address and
    token. Stopped after the test (``--block`` ends with its own processes, no other Ray's)."""
    need_ray()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = uuid.uuid4().hex * 2
    # its own temporary folder, where it notes its address: a later ray.init() on this machine
    # starts its own instance instead of looking for this one
    temp = tempfile.mkdtemp(prefix="rayhead")  # short: Ray's socket paths live there
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "RAY_TMPDIR": temp}
    head = subprocess.Popen([Path(sys.executable).parent / "ray", "start", "--head",
                             f"--port={port}", "--num-cpus=1", "--include-dashboard=false",
                             "--disable-usage-stats", "--block"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in head.stdout:
            if "Ray runtime started" in line:
                break
        else:
            pytest.fail(f"ray start --head ended (rc {head.wait()})")
        yield f"127.0.0.1:{port}", token
    finally:
        head.terminate()
        head.wait(60)
        shutil.rmtree(temp, ignore_errors=True)


def test_cluster_with_token_is_joined_by_address(ray_head, tmp_path):
    """Joining a cluster by address: without RAY_AUTH_MODE=token Ray sends no token and cannot
    join, which one line says with what to set; with it, the run works."""
    address, token = ray_head
    src = tmp_path / "in"
    src.mkdir()
    for path in lfw_images(2):
        (src / path.name).write_bytes(path.read_bytes())
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    command = [FACEANON, "anonymize", src, "-o", tmp_path / "out", "--engine", "ray",
               "--ray-address", address, *ENGINE_OPTIONS]
    refused = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert refused.returncode == 1
    line = refused.stderr.splitlines()[-1]
    assert line.startswith(f"Error: cannot start or reach the Ray cluster at {address}: Failed "
                           "to connect to Ray cluster at ")
    assert line.endswith(f" ({TOKEN_HINT})")
    assert not (tmp_path / "out").exists()
    joined = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            env={**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token})
    assert joined.returncode == 0, joined.stderr
    assert sorted(p.name for p in (tmp_path / "out").glob("*.jpg")) == sorted(
        p.name for p in src.iterdir())
