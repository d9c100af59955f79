"""The pre-commit privacy gate on real photos and clips, real judges, real git and real pre-commit.

One module-scoped world: a private gallery (outside any repository) built from one photo of a
person, a dataset repository with a ``repo: local`` hook installed by ``pre-commit install``, and
HOME / XDG_CACHE_HOME / PRE_COMMIT_HOME in temporary folders. The first in-process gate run
fills the embedding cache, so the hook runs that ``git commit`` starts load no model.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from clips import crossfade_clip, truncated_copy
from conftest import ROOT, need_shared
from fiftyone_faceanon import gate as G
from fiftyone_faceanon.cli import main

FACEANON = Path(sys.executable).parent / "faceanon"
PRE_COMMIT = Path(sys.executable).parent / "pre-commit"
#: Which files the hook passes to the gate: its ``files`` in .pre-commit-hooks.yaml.
HOOK_FILES = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())[0]["files"]


def run_cli(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=check)


def configured_thresholds(judges) -> dict[str, float]:
    """The thresholds the gate will use (calibrated in models/manifest.json, or
    ``[tool.faceanon.gate.thresholds]`` of the pyproject.toml in the working folder); skip
    (fail under CI) while there are none."""
    from fiftyone_faceanon.metrics.identity import judge_thresholds

    try:
        return G.resolve_thresholds(judges, judge_thresholds(),
                                    G.read_config().get("thresholds", {}), {})
    except G.GateError as e:
        if os.environ.get("CI"):
            pytest.fail(str(e))
        pytest.skip(f"{e} (run scripts/calibrate_judges.py)")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    johns = need_shared("fixtures/dlib_johns/John_Salley")
    no_face = need_shared("fixtures/faceapi/white.png")
    tmp = tmp_path_factory.mktemp("gate")
    with pytest.MonkeyPatch.context() as mp:
        for var in ("HOME", "XDG_CACHE_HOME", "PRE_COMMIT_HOME"):
            (tmp / var).mkdir()
            mp.setenv(var, str(tmp / var))
        mp.delenv("FACEANON_GALLERY", raising=False)
        photos = sorted(johns.glob("*.jpg"))
        gallery = tmp / "private" / "gallery.npz"
        added = run_cli("gallery", "add", photos[0], "--gallery", gallery)
        assert added.exit_code == 0, added.output
        thresholds = configured_thresholds(G.load_gallery(gallery).embeddings)

        # the files to commit: another photo of the same person, its anonymized version (default
        # backend), a photo without a face, a truncated JPEG
        files = tmp / "files"
        files.mkdir()
        shutil.copy(photos[1], files / "salley.jpg")
        shutil.copy(no_face, files / "white.png")
        (files / "corrupt.jpg").write_bytes(photos[2].read_bytes()[:600])
        anon = run_cli("anonymize", files / "salley.jpg", "-o", tmp / "anon")
        assert anon.exit_code == 0, anon.output
        shutil.copy(tmp / "anon" / "salley.jpg", files / "salley_anonymized.jpg")

        # one in-process run: the reports, and a warm cache for the hook
        report = run_cli("gate", *sorted(files.iterdir()), "--gallery", gallery,
                         "--json", tmp / "report.json", "--sarif", tmp / "report.sarif")

        repo = tmp / "dataset"
        repo.mkdir()
        git(repo, "init", "-q", "-b", "main")
        git(repo, "config", "user.email", "t@example.org")
        git(repo, "config", "user.name", "t")
        # the dataset repository states the thresholds it was tested with in its pyproject.toml
        (repo / "pyproject.toml").write_text("[tool.faceanon.gate.thresholds]\n" + "".join(
            f"{judge} = {value!r}\n" for judge, value in thresholds.items()))
        (repo / ".pre-commit-config.yaml").write_text(
            "repos:\n- repo: local\n  hooks:\n  - id: faceanon-gate\n    name: faceanon gate\n"
            f"    entry: {FACEANON} gate --gallery {gallery}\n"
            f"    language: system\n    files: '{HOOK_FILES}'\n    require_serial: true\n"
        )
        git(repo, "add", ".pre-commit-config.yaml", "pyproject.toml")
        subprocess.run([PRE_COMMIT, "install"], cwd=repo, check=True, capture_output=True)
        git(repo, "commit", "-q", "-m", "config")
        yield {"tmp": tmp, "gallery": gallery, "files": files, "repo": repo, "report": report}


def commit(world, name: str, folder: Path | None = None) -> subprocess.CompletedProcess:
    """Commit ``name`` from ``folder`` (default: the world's files) through the hook; unstaged
    again when the commit fails."""
    repo = world["repo"]
    shutil.copy((folder or world["files"]) / name, repo / name)
    git(repo, "add", name)
    result = git(repo, "commit", "-m", f"add {name}", check=False)
    if result.returncode:
        git(repo, "rm", "-q", "--cached", name)
    return result


def test_commit_of_a_gallery_person_fails_and_names_the_file(world):
    result = commit(world, "salley.jpg")
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert "salley.jpg" in out and "BLOCK" in out


def test_commit_of_the_anonymized_photo_passes(world):
    result = commit(world, "salley_anonymized.jpg")
    assert result.returncode == 0, result.stdout + result.stderr


def test_commit_of_a_photo_without_a_face_passes(world):
    result = commit(world, "white.png")
    assert result.returncode == 0, result.stdout + result.stderr


def test_commit_of_a_corrupt_image_fails_closed(world):
    result = commit(world, "corrupt.jpg")
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert "corrupt.jpg" in out and "UNVERIFIABLE" in out


def test_allow_unverifiable_lets_the_corrupt_image_pass(world):
    result = run_cli("gate", world["files"] / "corrupt.jpg", "--gallery", world["gallery"],
                     "--allow-unverifiable")
    assert result.exit_code == 0, result.output
    assert "allowed" in result.output


def test_hook_manifest_validates():
    result = subprocess.run([PRE_COMMIT, "validate-manifest", ROOT / ".pre-commit-hooks.yaml"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    result = subprocess.run([PRE_COMMIT, "validate-config",
                             ROOT / "hooks" / "example-pre-commit-config.yaml"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_hook_gives_the_gate_every_kind_of_file_it_searches_folders_for():
    # what `faceanon gate FOLDER` checks, a commit checks too: a HEIC committed passed the
    # hook unchecked until stop 58
    import re

    example = yaml.safe_load((ROOT / "hooks" / "example-pre-commit-config.yaml").read_text())
    for files in (HOOK_FILES, example["repos"][0]["hooks"][0]["files"]):
        for ext in G.GATE_EXTENSIONS:
            assert re.search(files, f"photos/x{ext}") and re.search(files, f"X{ext.upper()}")
        assert not re.search(files, "notes.txt")


def test_json_report_round_trips_and_matches_the_verdicts(world):
    assert world["report"].exit_code == 1
    data = json.loads((world["tmp"] / "report.json").read_text())
    assert json.loads(json.dumps(data)) == data
    by_name = {Path(f["file"]).name: f for f in data["files"]}
    assert set(by_name) == {"salley.jpg", "salley_anonymized.jpg", "white.png", "corrupt.jpg"}
    verdicts = {n: {r["verdict"] for r in f["rows"]} for n, f in by_name.items()}
    assert "block" in verdicts["salley.jpg"]
    assert verdicts["white.png"] == {"pass"} and by_name["white.png"]["faces"] == []
    assert verdicts["corrupt.jpg"] == {"unverifiable"} and by_name["corrupt.jpg"]["error"]
    assert verdicts["salley_anonymized.jpg"] == {"pass"}
    for row in by_name["salley.jpg"]["rows"]:
        assert row["threshold"] == data["thresholds"][row["judge"]]
        assert (row["similarity"] >= row["threshold"]) == (row["verdict"] == "block")


def test_sarif_has_the_2_1_0_structure(world):
    sarif = json.loads((world["tmp"] / "report.sarif").read_text())
    assert sarif["version"] == "2.1.0" and "sarif-2.1.0" in sarif["$schema"]
    (run,) = sarif["runs"]
    driver = run["tool"]["driver"]
    assert driver["name"] and driver["rules"]
    rule_ids = [r["id"] for r in driver["rules"]]
    files = {}
    for result in run["results"]:
        assert result["level"] in ("none", "note", "warning", "error")
        assert result["message"]["text"]
        assert rule_ids[result["ruleIndex"]] == result["ruleId"]
        (loc,) = result["locations"]
        uri = loc["physicalLocation"]["artifactLocation"]["uri"]
        region = loc["physicalLocation"]["region"]
        assert isinstance(region["startLine"], int) and region["startLine"] >= 1
        fp = result["partialFingerprints"]["faceanonFace/v1"]
        assert len(fp) == 32
        files[Path(uri).name] = (result, region, fp)
    # one result per blocking face: the photo of the gallery's person and the corrupt file
    assert set(files) == {"salley.jpg", "corrupt.jpg"}
    result, region, fp = files["salley.jpg"]
    x0, y0, x1, y1 = region["properties"]["box"]
    assert 0 <= x0 < x1 and y0 < y1 and x1 <= 150 + 20
    (rect,) = result["attachments"][0]["rectangles"]
    assert (rect["left"], rect["top"], rect["right"], rect["bottom"]) == (x0, y0, x1, y1)
    assert files["corrupt.jpg"][0]["ruleId"] == "unverifiable-face"
    # stable: the same content and face give the same fingerprint on another run
    again = run_cli("gate", world["files"] / "salley.jpg", "--gallery", world["gallery"],
                    "--sarif", world["tmp"] / "again.sarif")
    assert again.exit_code == 1
    (result2,) = json.loads((world["tmp"] / "again.sarif").read_text())["runs"][0]["results"]
    assert result2["partialFingerprints"]["faceanonFace/v1"] == fp


def test_gallery_is_private_and_refused_inside_a_repository(world):
    assert stat.S_IMODE(world["gallery"].stat().st_mode) == 0o600
    data = world["gallery"].read_bytes()
    assert b"salley" not in data.lower() and b"John" not in data  # no path, no name
    inside = world["repo"] / "gallery.npz"
    photo = world["files"] / "salley.jpg"
    added = run_cli("gallery", "add", photo, "--gallery", inside)
    assert added.exit_code == 2 and "git work tree" in added.output
    assert not inside.exists()
    gated = run_cli("gate", photo, "--gallery", inside)
    assert gated.exit_code == 2 and "git work tree" in gated.output


def test_a_warm_run_loads_no_model(world):
    from fiftyone_faceanon.metrics.identity import cache_dir

    gallery = G.load_gallery(world["gallery"])
    embedder = G.Embedder(sorted(gallery.embeddings), cache=cache_dir())
    files = sorted(world["files"].glob("salley*.jpg"))
    embedded = embedder.embed_files(files)
    assert embedder._judges is None  # every file came from the cache
    assert all(len(e.boxes) == 1 and set(e.embeddings) == set(gallery.embeddings)
               for e in embedded)
    cached = list((cache_dir() / "gate").rglob("*.npz"))
    assert cached and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in cached)


def test_a_photo_stored_sideways_is_blocked_then_anonymized(world, tmp_path):
    # Without its EXIF orientation a phone photo is stored turned; the upright detector finds
    # no face in it, so its person would pass the gate and leave anonymize untouched.
    import cv2

    from fiftyone_faceanon.images import load_image

    sideways = tmp_path / "salley_sideways.png"
    cv2.imwrite(str(sideways), cv2.cvtColor(
        np.rot90(load_image(world["files"] / "salley.jpg").rgb, -1), cv2.COLOR_RGB2BGR))
    gate = ["gate", "--gallery", world["gallery"], "--no-cache"]
    blocked = run_cli(*gate, sideways)
    assert blocked.exit_code == 1 and "BLOCK" in blocked.output, blocked.output
    assert run_cli(*gate, "--upright-only", sideways).exit_code == 0

    anon = run_cli("anonymize", sideways, "-o", tmp_path / "anon")
    assert anon.exit_code == 0, anon.output
    record = json.loads((tmp_path / "anon.private" / "salley_sideways.png.json").read_text())
    (face,) = record["faces"]
    assert face["crop"]["turn"] == 1 and face["anonymized"]["status"] == "verified"
    passed = run_cli(*gate, tmp_path / "anon" / "salley_sideways.png")
    assert passed.exit_code == 0, passed.output


def test_a_face_under_the_minimum_face_size_is_neither_checked_nor_anonymized(world, tmp_path):
    # --min-face-size trades small faces for speed on large photos, for the gate and
    # anonymize alike: the gallery person's face (121 px wide, in a 150 px photo) passes at
    # 200 and is left as it is, and the settings say why
    photo = world["files"] / "salley.jpg"
    gate = ["gate", "--gallery", world["gallery"], "--no-cache", photo]
    assert run_cli(*gate).exit_code == 1
    passed = run_cli(*gate, "--min-face-size", "200")
    assert passed.exit_code == 0 and "1 files, 0 faces" in passed.output, passed.output
    anon = run_cli("anonymize", photo, "-o", tmp_path / "anon", "--min-face-size", "200")
    assert anon.exit_code == 0, anon.output
    sidecar = json.loads((tmp_path / "anon" / "salley.jpg.json").read_text())
    assert sidecar["status"] == "no_face" and sidecar["settings"]["min_face_size"] == 200


def test_a_folder_s_gif_and_avif_are_checked_and_an_animated_image_blocks(world, tmp_path):
    # Until stop 58 a folder's GIFs and AVIFs were not searched, so a gallery person's photo
    # saved as either passed `faceanon gate FOLDER` unchecked; and an animated image was read
    # by its first frame, so a face in a later frame passed. Now both photos are blocked, and
    # a file of more than one frame (here the gallery person on its second) cannot be checked
    # and blocks
    from PIL import Image

    folder = tmp_path / "gifs"
    folder.mkdir()
    photo = Image.open(world["files"] / "salley.jpg")
    photo.save(folder / "salley.gif")
    photo.save(folder / "salley.avif")
    Image.new("RGB", photo.size).save(folder / "animated.gif", save_all=True,
                                      append_images=[photo], duration=100)
    result = run_cli("gate", folder, "--gallery", world["gallery"], "--no-cache")
    assert result.exit_code == 1, result.output
    animated, avif, gif = (folder / n for n in ("animated.gif", "salley.avif", "salley.gif"))
    assert f"BLOCKED: {animated}, {avif}, {gif}" in result.output, result.output
    (line,) = [line for line in result.output.splitlines() if f"{animated}:" in line]
    assert "2 frames" in line
    for still in (avif, gif):
        assert any(line.startswith(f"{still} ") and line.endswith("BLOCK")
                   for line in result.output.splitlines()), result.output


def test_light_import_path():
    code = ("import sys, fiftyone_faceanon.cli.gate, fiftyone_faceanon.gate; "
            "print(sorted(m for m in ('fiftyone', 'torch', 'dlib', 'facenet_pytorch') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_baseline_silences_a_reviewed_face_but_not_a_new_one(tmp_path, world):
    knn = need_shared("fixtures/face_recognition/examples/knn_examples")
    pair = knn / "test" / "obama_and_biden.jpg"
    gallery, baseline = tmp_path / "g.npz", tmp_path / "baseline.json"
    assert run_cli("gallery", "add", knn / "train" / "obama", "--gallery", gallery).exit_code == 0

    first = run_cli("gate", pair, "--gallery", gallery, "--json", tmp_path / "1.json")
    assert first.exit_code == 1
    rows = [r for f in json.loads((tmp_path / "1.json").read_text())["files"] for r in f["rows"]]
    obama_faces = {r["face"] for r in rows if r["verdict"] == "block"}
    assert len(obama_faces) == 1

    reviewed = run_cli("gate", pair, "--gallery", gallery, "--baseline", baseline,
                       "--update-baseline")
    assert reviewed.exit_code == 0, reviewed.output
    findings = json.loads(baseline.read_text())["findings"]
    assert {f["face"] for f in findings} == obama_faces
    assert run_cli("gate", pair, "--gallery", gallery, "--baseline", baseline).exit_code == 0

    # now Biden is in the gallery too: his face in the same file is a new finding
    assert run_cli("gallery", "add", knn / "train" / "biden", "--gallery", gallery).exit_code == 0
    third = run_cli("gate", pair, "--gallery", gallery, "--baseline", baseline,
                    "--json", tmp_path / "3.json")
    assert third.exit_code == 1, third.output
    rows = [r for f in json.loads((tmp_path / "3.json").read_text())["files"] for r in f["rows"]]
    blocked = {r["face"] for r in rows if r["verdict"] == "block"}
    assert blocked and not blocked & obama_faces
    assert {r["face"] for r in rows if r["verdict"] == "baselined"} == obama_faces


def test_thresholds_command_line_over_pyproject_over_calibration(tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text(
        "[tool.faceanon.gate.thresholds]\ndlib = 0.8\nfacenet_casia = 0.4\n")
    monkeypatch.chdir(tmp_path)
    config = G.read_config()
    calibrated = {"dlib": {"far_1e-3": 0.95}, "facenet_casia": {"far_1e-3": 0.6},
                  "facenet_vggface2": {"far_1e-3": 0.7}}
    resolved = G.resolve_thresholds(["dlib", "facenet_casia", "facenet_vggface2"], calibrated,
                                    config["thresholds"],
                                    G.parse_threshold_overrides(["dlib=0.9"]))
    assert resolved == {"dlib": 0.9, "facenet_casia": 0.4, "facenet_vggface2": 0.7}
    with pytest.raises(G.GateError, match="unknown judge"):
        G.resolve_thresholds(["dlib"], calibrated, {}, {"arcface": 0.5})
    with pytest.raises(G.GateError, match=r"\[-1, 1\]"):
        G.resolve_thresholds(["dlib"], calibrated, {"dlib": 3}, {})
    with pytest.raises(G.GateError, match="no calibrated"):
        G.resolve_thresholds(["dlib"], {}, {}, {})
    with pytest.raises(G.GateError, match="JUDGE=VALUE"):
        G.parse_threshold_overrides(["dlib"])


def test_configuration_errors_exit_2(world, tmp_path):
    photo = world["files"] / "white.png"
    bad = run_cli("gate", photo, "--gallery", world["gallery"], "--threshold", "nobody=0.5")
    assert bad.exit_code == 2 and "unknown judge" in bad.output
    missing = run_cli("gate", photo, "--gallery", tmp_path / "none.npz")
    assert missing.exit_code == 2 and "empty or missing gallery" in missing.output
    (tmp_path / "b.json").write_text("{not json")
    broken = run_cli("gate", photo, "--gallery", world["gallery"], "--baseline",
                     tmp_path / "b.json")
    assert broken.exit_code == 2 and "baseline" in broken.output


# -- videos ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def videos(world):
    """Clips of the gallery's person: a cross-fade between two other photos of him, the same
    anonymized by ``faceanon anonymize`` (which adds his tracks to a second gallery), and the
    clip cut in half; one in-process gate run over the three with the JSON and SARIF reports."""
    tmp = world["tmp"]
    photos = sorted(need_shared("fixtures/dlib_johns/John_Salley").glob("*.jpg"))
    folder = tmp / "videos"
    folder.mkdir()
    clip = crossfade_clip(photos[1:3], folder / "salley.mp4", frames_per_photo=12, fade=4)
    truncated_copy(clip, folder / "cut.mp4", 0.5)
    tracks_gallery = tmp / "private" / "tracks.npz"
    anon = run_cli("anonymize", clip, "-o", tmp / "anon-video", "--workers", "1", "--gallery",
                   tracks_gallery)
    assert anon.exit_code == 0, anon.output
    shutil.copy(tmp / "anon-video" / "salley.mp4", folder / "salley_anonymized.mp4")
    report = run_cli("gate", *sorted(folder.iterdir()), "--gallery", world["gallery"],
                     "--json", tmp / "video.json", "--sarif", tmp / "video.sarif")
    data = json.loads((tmp / "video.json").read_text())
    return {"folder": folder, "report": report, "photos": photos,
            "tracks_gallery": tracks_gallery, "sarif": tmp / "video.sarif",
            "files": {Path(f["file"]).name: f for f in data["files"]}}


def test_video_of_a_gallery_person_is_flagged_at_a_frame_of_a_track(videos):
    assert videos["report"].exit_code == 1
    entry = videos["files"]["salley.mp4"]
    assert entry["error"] is None and entry["frames"] == 24 and entry["tracks"]
    tracks = {t["track"]: t for t in entry["tracks"]}
    blocked = [r for r in entry["rows"] if r["verdict"] == "block"]
    assert blocked
    for row in entry["rows"]:
        track = tracks[row["face"]]  # a video's "face" is a track
        assert row["video"] and track["first"] <= row["frame"] <= track["last"]
        assert (row["similarity"] >= row["threshold"]) == (row["verdict"] == "block")
        assert 1 <= track["checked"] <= track["faces"]
    out = videos["report"].output
    line = next(l for l in out.splitlines() if l.startswith(str(videos["folder"] / "salley.mp4")))
    assert f"track {blocked[0]['face']}" in out and "BLOCK" in line


def test_anonymized_video_passes(videos):
    entry = videos["files"]["salley_anonymized.mp4"]
    assert entry["tracks"] and all(t["checked"] for t in entry["tracks"])  # its faces were found
    assert {r["verdict"] for r in entry["rows"]} == {"pass"}


def test_truncated_video_is_one_error_line_and_the_others_are_checked(videos):
    entry = videos["files"]["cut.mp4"]
    assert "truncated" in entry["error"] and {r["verdict"] for r in entry["rows"]} == {
        "unverifiable"}
    errors = [l for l in videos["report"].output.splitlines() if "truncated" in l]
    assert len(errors) == 1 and "cut.mp4" in errors[0]
    assert videos["files"]["salley.mp4"]["rows"] and videos["files"]["salley_anonymized.mp4"]["rows"]


def test_video_findings_in_sarif_and_the_baseline(videos, world, tmp_path):
    sarif = json.loads(videos["sarif"].read_text())
    results = {Path(r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]).name: r
               for r in sarif["runs"][0]["results"]}
    assert set(results) == {"salley.mp4", "cut.mp4"}
    found = results["salley.mp4"]
    props = found["properties"]
    assert found["ruleId"] == "identifiable-face"
    assert props["track"] == props["face"] and isinstance(props["frame"], int)
    assert f"track {props['track']}" in found["message"]["text"]
    assert f"at frame {props['frame']}" in found["message"]["text"]
    assert results["cut.mp4"]["ruleId"] == "unverifiable-face"
    clip, baseline = videos["folder"] / "salley.mp4", tmp_path / "baseline.json"
    # the same content and track: the same fingerprint (this run reads the embedding cache)
    again = run_cli("gate", clip, "--gallery", world["gallery"], "--sarif", tmp_path / "a.sarif",
                    "--baseline", baseline, "--update-baseline")
    assert again.exit_code == 0, again.output  # every finding reviewed
    assert json.loads((tmp_path / "a.sarif").read_text())["runs"][0]["results"] == []
    findings = json.loads(baseline.read_text())["findings"]
    assert {(f["face"], f["frame"]) for f in findings} >= {(props["track"], props["frame"])}
    assert run_cli("gate", clip, "--gallery", world["gallery"], "--baseline",
                   baseline).exit_code == 0
    rerun = run_cli("gate", clip, "--gallery", world["gallery"], "--sarif", tmp_path / "b.sarif")
    assert rerun.exit_code == 1, rerun.output  # no baseline: the face blocks again
    (result,) = json.loads((tmp_path / "b.sarif").read_text())["runs"][0]["results"]
    assert result["partialFingerprints"] == found["partialFingerprints"]


def test_a_close_track_is_checked_on_every_frame(videos, world, tmp_path):
    """Every 3rd frame only (margin 0), then every frame of every track not blocked (margin 2):
    the anonymized clip's worst faces can only get worse with more frames."""
    clip = videos["folder"] / "salley_anonymized.mp4"
    found = {}
    for margin in ("0", "2"):
        out = run_cli("gate", clip, "--gallery", world["gallery"], "--every", "3",
                      "--track-margin", margin, "--json", tmp_path / f"{margin}.json")
        assert out.exit_code == 0, out.output
        found[margin] = json.loads((tmp_path / f"{margin}.json").read_text())["files"][0]
    sampled, full = found["0"], found["2"]
    assert [t["checked"] for t in sampled["tracks"]] == [
        len(range(t["first"] + -t["first"] % 3, t["last"] + 1, 3)) for t in sampled["tracks"]]
    assert all(t["checked"] == t["faces"] for t in full["tracks"])
    worst = {(r["face"], r["judge"]): r["similarity"] for r in sampled["rows"]}
    assert all(r["similarity"] >= worst[r["face"], r["judge"]] for r in full["rows"])
    assert all(r["frame"] % 3 == 0 for r in sampled["rows"])


def test_galleries_from_videos_flag_the_person(videos, tmp_path):
    """``anonymize --gallery`` and ``gallery add`` take one face per track of a video; another
    photo of the person is then flagged."""
    photo = videos["photos"][0]
    added = run_cli("gallery", "add", videos["folder"] / "salley.mp4", "--gallery",
                    tmp_path / "clip.npz")
    tracks = len(videos["files"]["salley.mp4"]["tracks"])
    assert added.exit_code == 0 and f"{tracks} faces from 1 files" in added.output, added.output
    for gallery in (videos["tracks_gallery"], tmp_path / "clip.npz"):
        assert set(G.load_gallery(gallery).sizes().values()) == {tracks}
        gated = run_cli("gate", photo, "--gallery", gallery)
        assert gated.exit_code == 1 and "BLOCK" in gated.output, gated.output


def test_commit_of_videos_through_the_hook(videos, world):
    blocked = commit(world, "salley.mp4", videos["folder"])
    out = blocked.stdout + blocked.stderr
    assert blocked.returncode != 0 and "salley.mp4" in out and "BLOCK" in out, out
    passed = commit(world, "salley_anonymized.mp4", videos["folder"])
    assert passed.returncode == 0, passed.stdout + passed.stderr
