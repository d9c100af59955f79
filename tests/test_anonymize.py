"""The pipeline and ``faceanon anonymize``: paste-back exactness, determinism, metadata, files."""

import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import lfw_images, read_rgb
from fiftyone_faceanon import faces as F
from fiftyone_faceanon.anonymizers import available_backends, create_backend
from fiftyone_faceanon.cli import main
from fiftyone_faceanon.parallel import pool
from fiftyone_faceanon.pipeline import WIDE_FOREHEAD, WIDEN, WIDEN_FROM, Pipeline, Settings
from fiftyone_faceanon.verify import judged_view

BACKENDS = sorted(available_backends())


def run_cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def changed_region(image, records, settings):
    """Pixels any paste could touch: every warped mask > 0 (white crops pasted on black), over
    the union of each face's original and anonymized regions (the latter widened for a face
    tried more than ``WIDEN_FROM`` times or too small to judge; for a face that failed
    verification, also the judges' view of it)."""
    faces, masks, white = [], [], []
    for r in records:
        face, size = r.original, r.original.crop.size
        anonymized = F.face_region(face.crop.to_crop(r.anonymized.landmarks), size)
        if r.tries > WIDEN_FROM or r.status == "too_small":
            radius = int(round(WIDEN * size))
            anonymized = cv2.dilate(
                F.face_region(face.crop.to_crop(r.anonymized.landmarks), size, WIDE_FOREHEAD),
                cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1,) * 2))
        region = np.maximum(F.face_region(face.crop.to_crop(face.landmarks), size), anonymized)
        if r.status.startswith("fail_closed"):  # that also covers what the judges look at
            region = np.maximum(region, judged_view(face, size))
        faces.append(face)
        masks.append(F.feathered_mask(region, settings.feather))
        white.append(np.full((size, size, 3), 255, np.uint8))
    return F.paste_faces(np.zeros_like(image), faces, white, masks).any(axis=2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_outside_face_masks_output_is_input_bit_for_bit(fixtures_dir, backend):
    image = read_rgb(fixtures_dir / "group/insightface_t1.jpg")
    try:
        pipeline = Pipeline(Settings(backend=backend))
    except Exception as e:  # a registered backend without shipped weights
        pytest.skip(f"{backend}: {e}")
    result = pipeline.anonymize(image, key="t1")
    assert len(result.faces) == 6
    inside = changed_region(image, result.records, pipeline.settings)
    assert inside.mean() < 0.2
    np.testing.assert_array_equal(result.image[~inside], image[~inside])
    # ... and every face did change.
    for f in result.faces:
        x0, y0, x1, y1 = f.box.astype(int)
        assert np.abs(result.image[y0:y1, x0:x1].astype(int) - image[y0:y1, x0:x1]).mean() > 2


def test_backend_registry():
    assert {"blur", "pixelate", "mask", "noise", "ksame", "donor"} <= set(BACKENDS)
    with pytest.raises(KeyError, match="unknown backend"):
        create_backend("nope")


def test_an_array_that_is_not_an_rgb_image_gets_a_clear_error(astronaut):
    # grey, RGBA and float arrays ended in torch's errors about channels or permutes, or were
    # read as 0-255 pixels
    pipeline = Pipeline(Settings(backend="blur"))
    for array in (astronaut[..., 0], np.dstack([astronaut, astronaut[..., :1]]),
                  astronaut / 255.0):
        with pytest.raises(ValueError, match=r"photo.png: an RGB \(H, W, 3\) uint8 array"):
            pipeline.anonymize(array, "photo.png")
    assert len(pipeline.anonymize(astronaut).records) == 1


@pytest.mark.parametrize("backend, geometry", [("ksame", 0.0), ("donor", 0.5)])
def test_replaced_face_follows_its_target_geometry(astronaut, backend, geometry):
    """The rendered face lands on the landmarks it was given: the original's at geometry 0,
    the identity-neutral ones otherwise (68-point NME of the re-detected landmarks small)."""
    result = Pipeline(Settings(backend=backend, geometry=geometry, verify=False)).anonymize(
        astronaut)
    (record,) = result.records
    (anon,) = F.find_faces(result.image)
    target = record.anonymized.landmarks
    iod = np.linalg.norm(target[36] - target[45])
    assert np.linalg.norm(anon.landmarks - target, axis=1).mean() / iod < 0.06


def test_cli_same_seed_same_bytes_and_sidecar(tmp_path, astronaut):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(astronaut).save(src / "a.jpg", quality=90)
    outs = []
    for name, seed in [("o1", 3), ("o2", 3), ("o3", 4)]:
        r = run_cli("anonymize", src, "-o", tmp_path / name, "--backend", "noise", "--seed", seed,
                    "--no-verify")
        assert r.exit_code == 0, r.output
        outs.append((tmp_path / name / "a.jpg").read_bytes())
    assert outs[0] == outs[1] and outs[0] != outs[2]
    sidecar = json.loads((tmp_path / "o1/a.jpg.json").read_text())
    assert sidecar["status"] == "ok" and sidecar["backend"] == "noise"
    assert sidecar["settings"]["seed"] == 3 and len(sidecar["faces"]) == 1
    assert np.array(sidecar["faces"][0]["landmarks"]).shape == (68, 2)
    assert "version" in sidecar and "input_sha256" not in sidecar
    record = json.loads((tmp_path / "o1.private/a.jpg.json").read_text())
    assert record["input_sha256"] and record["faces"][0]["landmarks"]


def test_outputs_carry_no_metadata(tmp_path, astronaut):
    src = tmp_path / "in"
    src.mkdir()
    im = Image.fromarray(astronaut)
    exif = Image.Exif()
    exif[0x010F] = "CameraMaker"  # Make
    exif[0x8298] = "Photographer"  # Copyright
    thumb = im.resize((64, 64))
    icc = b"\0" * 128  # any ICC blob travels as an APP2 segment
    im.save(src / "a.jpg", exif=exif, icc_profile=icc, quality=90)
    im.save(src / "b.png", exif=exif, pnginfo=None)
    thumb.save(src / "c.webp", exif=exif)
    assert Image.open(src / "a.jpg").getexif()
    r = run_cli("anonymize", src, "-o", tmp_path / "out")
    assert r.exit_code == 0, r.output
    for name in ("a.jpg", "b.png", "c.webp"):
        out = Image.open(tmp_path / "out" / name)
        assert not out.getexif(), name
        assert not {"exif", "icc_profile", "xmp", "XML:com.adobe.xmp", "photoshop"} & set(out.info), (
            name, out.info.keys())
    raw = (tmp_path / "out/a.jpg").read_bytes()
    assert b"Exif" not in raw and b"CameraMaker" not in raw and b"ICC_PROFILE" not in raw


def test_exif_orientation_applied_before_detection(tmp_path, astronaut):
    src = tmp_path / "in"
    src.mkdir()
    # Store the pixels rotated and tag them "rotate 90 CW to display" (orientation 6).
    stored = np.rot90(astronaut, 1)  # the face lies on its side
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(src / "r.jpg", exif=exif, quality=95)
    r = run_cli("anonymize", src, "-o", tmp_path / "out")
    assert r.exit_code == 0, r.output
    sidecar = json.loads((tmp_path / "out/r.jpg.json").read_text())
    assert sidecar["status"] == "ok" and len(sidecar["faces"]) == 1
    out = Image.open(tmp_path / "out/r.jpg")
    assert out.size == (512, 512) and not out.getexif()


def test_never_writes_over_inputs_and_refuses_outdir_inside(tmp_path, astronaut):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(astronaut).save(src / "a.png")
    before = (src / "a.png").read_bytes()
    r = run_cli("anonymize", src, "-o", src / "anon")
    assert r.exit_code == 2 and "inside the input folder" in r.output
    r = run_cli("anonymize", src, "-o", src, "--allow-inside")
    assert r.exit_code == 2 and "is the input folder" in r.output
    r = run_cli("anonymize", src / "a.png", "-o", src)
    assert r.exit_code == 1 and "a.png: output would overwrite the input" in r.output
    r = run_cli("anonymize", src, "-o", src / "anon", "--allow-inside", "--backend", "blur",
                "--no-verify")
    assert r.exit_code == 0, r.output
    assert (src / "anon/a.png").is_file() and not (src / "anon/anon").exists()
    assert (src / "a.png").read_bytes() == before


def test_tree_is_mirrored_and_rerun_resumes(tmp_path, fixtures_dir):
    src = tmp_path / "in"
    for person in ("John_Salley", "John_Savage"):
        shutil.copytree(fixtures_dir / "dlib_johns" / person, src / person)
    r = run_cli("anonymize", src, "-o", tmp_path / "out", "--backend", "pixelate", "--no-verify")
    assert r.exit_code == 0, r.output
    inputs = sorted(p.relative_to(src) for p in src.rglob("*.jpg"))
    outputs = sorted(p.relative_to(tmp_path / "out") for p in (tmp_path / "out").rglob("*.jpg"))
    assert inputs == outputs and len(inputs) == 22
    # Simulate an interrupted run: one output lost, another's sidecar never written, a third's
    # private record never written.
    (tmp_path / "out" / inputs[0]).unlink()
    (tmp_path / "out" / f"{inputs[1]}.json").unlink()
    (tmp_path / "out.private" / f"{inputs[2]}.json").unlink()
    r = run_cli("anonymize", src, "-o", tmp_path / "out", "--backend", "pixelate", "--no-verify")
    assert r.exit_code == 0
    assert "3 anonymized" in r.output and "19 already done" in r.output
    # Other settings are not "done".
    r = run_cli("anonymize", src, "-o", tmp_path / "out", "--backend", "blur", "--no-verify")
    assert "0 already done" in r.output


def test_workers_give_the_same_bytes(tmp_path, fixtures_dir):
    src = fixtures_dir / "dlib_johns/John_Simm"
    for name, workers in [("w1", 1), ("w2", 2)]:
        r = run_cli("anonymize", src, "-o", tmp_path / name, "--workers", workers)
        assert r.exit_code == 0, r.output
    for out in (tmp_path / "w1").glob("*.jpg"):
        assert out.read_bytes() == (tmp_path / "w2" / out.name).read_bytes(), out.name


def _process(job: int) -> tuple[int, int]:
    return job, os.getpid()


@pytest.mark.parametrize("workers", [1, 2])
def test_a_pool_keeps_its_processes_for_every_list_of_jobs(workers):
    """``parallel.pool``, which a run's first pass and its rounds of ``unlink_run`` share: each
    list of jobs comes back in order, from no more processes than the pool was given for all
    the lists together (each loaded the callable once), or from this process for one
    worker."""
    with pool(_process, workers) as run:
        first = list(run(range(16)))
        again = list(run(range(16, 20)))
    assert [job for job, _ in first + again] == list(range(20))
    processes = {pid for _, pid in first + again}  # a second pool would add its own
    if workers == 1:
        assert processes == {os.getpid()}
    else:
        assert len(processes) <= 2 and os.getpid() not in processes


def test_installed_entry_point_runs_the_demo(tmp_path):
    exe = shutil.which("faceanon", path=str(__import__("pathlib").Path(sys.executable).parent))
    assert exe, "the faceanon console script is not installed"
    proc = subprocess.run([exe, "demo", "-o", tmp_path], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "3 anonymized" in proc.stderr
    for name in ("astronaut.png", "cameraman.png", "grace_hopper.jpg"):
        assert (tmp_path / "anonymized" / name).is_file()


def test_images_judged_together_are_judged_as_alone(fixtures_dir, astronaut):
    """``replace_many`` judges the faces of several images in one pass per try: each image
    gets the bytes, donors, tries and statuses it gets alone, and its judges' similarities to
    within float rounding. ``anonymize_many`` also detects the images of one size in one MTCNN
    pass, which finds the same faces (a box can move by a few pixels: 1 face of 565 on LFW)."""
    images = [read_rgb(p) for p in lfw_images(8)]  # 250x250: one detector batch
    images += [read_rgb(fixtures_dir / "group/insightface_t1.jpg"), astronaut,
               read_rgb(fixtures_dir / "faceapi/white.png")]
    keys = [f"image{k}" for k in range(len(images))]
    pipeline = Pipeline(Settings())
    alone = [pipeline.anonymize(image, key) for image, key in zip(images, keys)]
    tries = [r.tries for result in alone for r in result.records]
    assert max(tries) > 1 and len(tries) >= 15  # retries were judged in shared passes
    together = pipeline.replace_many(
        [(image, result.faces, key, None) for image, result, key in zip(images, alone, keys)])
    for a, b in zip(together, alone):
        np.testing.assert_array_equal(a.image, b.image)
        assert [(r.donor, r.tries, r.status) for r in a.records] == [
            (r.donor, r.tries, r.status) for r in b.records]
        for ra, rb in zip(a.records, b.records):
            assert ra.similarity.keys() == rb.similarity.keys()
            for j in ra.similarity:
                assert abs(ra.similarity[j] - rb.similarity[j]) < 1e-5
    found = [len(r.faces) for r in pipeline.anonymize_many(images, keys)]
    assert found == [len(r.faces) for r in alone] and found[-1] == 0
    # the judges' embeddings of the originals, given (as unlinking gives an image's first
    # pass's to its redo), are used as they are and give the same bytes
    given = pipeline.replace_many(
        [(image, result.faces, key, None) for image, result, key in zip(images, alone, keys)],
        originals=[result.original for result in alone])
    for a, b in zip(given, alone):
        np.testing.assert_array_equal(a.image, b.image)
        assert a.original is b.original
        assert [(r.donor, r.tries, r.status) for r in a.records] == [
            (r.donor, r.tries, r.status) for r in b.records]


def test_a_result_carries_its_verified_faces_embeddings_in_its_final_image(fixtures_dir):
    """What unlinking compares instead of embedding the written file again: each verified
    face's embedding by each judge, from the judging that verified it, is that judge's full
    precision embedding of the final image at the face's place (to float rounding), also for
    a face verified before another face of its image was redone (the group photo); the other
    faces have none."""
    images = [read_rgb(fixtures_dir / "group/insightface_t1.jpg")]
    images += [read_rgb(p) for p in lfw_images(3)]
    pipeline = Pipeline(Settings())
    results = pipeline.anonymize_many(images, [f"image{k}" for k in range(len(images))])
    tries = [r.tries for r in results[0].records if r.status == "verified"]
    assert min(tries) < max(tries)  # faces verified before others were redone
    for result in results:
        verified = np.array([r.status == "verified" for r in result.records])
        assert verified.any()
        final = pipeline.panel.embed_many([(result.image, result.faces)])
        for j, kept in result.anonymized.items():
            assert np.isnan(kept[~verified]).all()
            rows = verified & ~np.isnan(kept[:, 0])
            if j == "dlib":  # never embedded in bfloat16
                assert rows.sum() == verified.sum()
            np.testing.assert_allclose(kept[rows], final[j][rows], atol=1e-4)
        assert set(result.anonymized) == set(pipeline.panel.judges)
