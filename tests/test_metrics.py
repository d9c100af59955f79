"""The metrics suite against independent references (scikit-image, numpy) on real photos."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
import skimage.color

from conftest import read_rgb
from fiftyone_faceanon import faces as F
from fiftyone_faceanon.metrics.colour import colour_metrics, delta_e2000, skin_mask, srgb_to_lab
from fiftyone_faceanon.metrics.detection import found_again, match_boxes
from fiftyone_faceanon.metrics.geometry import inter_ocular, landmark_nme_51, landmark_nme_68
from fiftyone_faceanon.metrics.lighting import lighting_metrics, si_l2, si_mse
from fiftyone_faceanon.metrics.realism import (frechet_distance, frechet_distance_gaussians,
                                               kernel_distance)
from fiftyone_faceanon.photometric import albedo, shading

REQUIRED = ["detected", "reid_facenet_casia", "reid_dlib", "reid_rate_facenet_casia",
            "reid_rate_dlib", "landmark_nme_68", "landmark_nme_51", "emotion_match", "group_match",
            "si_mse", "si_l2", "delta_l", "delta_c", "delta_e2000", "fid_facenet"]


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """One intra-op thread: on a shared CPU, spin-waiting OpenMP threads cost more than they
    save (docs/benchmarks.md); restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def ffhq_crop(fixtures_dir, name: str) -> tuple[np.ndarray, np.ndarray]:
    """An FFHQ fixture's 128 px face crop (float [0, 1]) and its hand landmarks in the crop."""
    image = read_rgb(fixtures_dir / "ffhq10" / f"{name}.png")
    lms = np.load(fixtures_dir / "ffhq10" / f"{name}.npy")
    crop = F.crop_transform(lms, 128)
    return F.crop_face(image, crop).astype(np.float32) / 255.0, crop.to_crop(lms)


# --- colour -------------------------------------------------------------------------------------


def test_srgb_to_lab_matches_skimage():
    rgb = np.random.default_rng(0).random((64, 64, 3))
    # colour-science derives the sRGB matrix from the primaries, scikit-image uses the rounded
    # IEC matrix: they agree to a few hundredths of a Lab unit (a JND is about 1).
    np.testing.assert_allclose(srgb_to_lab(rgb), skimage.color.rgb2lab(rgb), atol=0.03)


def test_delta_e2000_matches_skimage_on_random_lab():
    rng = np.random.default_rng(1)
    lab = lambda n: np.stack([rng.uniform(0, 100, n), rng.uniform(-110, 110, n),  # noqa: E731
                              rng.uniform(-110, 110, n)], axis=1)
    a, b = lab(5000), lab(5000)
    np.testing.assert_allclose(delta_e2000(a, b), skimage.color.deltaE_ciede2000(a, b),
                               rtol=1e-9, atol=1e-9)


def test_delta_e2000_matches_skimage_on_real_face_crops(fixtures_dir):
    (o, lm_o), (a, _) = ffhq_crop(fixtures_dir, "00000"), ffhq_crop(fixtures_dir, "00003")
    lab_o = srgb_to_lab(albedo(o, shading(o)))
    lab_a = srgb_to_lab(albedo(a, shading(a)))
    reference = skimage.color.deltaE_ciede2000(lab_o, lab_a)
    np.testing.assert_allclose(delta_e2000(lab_o, lab_a), reference, rtol=1e-9, atol=1e-9)
    mask = skin_mask(lm_o, 128)
    got = colour_metrics(o, a, mask)
    assert got["delta_e2000"] == pytest.approx(reference[mask].mean(), rel=1e-9)
    assert got["delta_l"] == pytest.approx(np.abs(lab_o[..., 0] - lab_a[..., 0])[mask].mean())
    assert got["delta_e2000"] > 1.0  # two different people


def test_skin_mask_excludes_eyes_brows_and_lips(fixtures_dir):
    _, lm = ffhq_crop(fixtures_dir, "00001")
    mask = skin_mask(lm, 128)
    for i in (37, 44, 19, 24, 51, 57, 62):  # eyelids, brows, lips
        x, y = np.round(lm[i]).astype(int)
        assert not mask[y, x], i
    cheek = np.round(0.5 * (lm[2] + lm[31])).astype(int)
    assert mask[cheek[1], cheek[0]]
    assert 0.3 < mask.sum() / F.face_region(lm, 128).sum() < 0.9


# --- lighting -----------------------------------------------------------------------------------


def test_si_mse_zero_for_scaled_image(fixtures_dir):
    o, lm = ffhq_crop(fixtures_dir, "00002")
    region = F.face_region(lm, 128)
    assert si_mse(o, 0.6 * o, region) == pytest.approx(0.0, abs=1e-12)
    # float32 shading: the residual is rounding, and Si-L2 is its square root
    assert si_l2(shading(o), 0.6 * shading(o), region) == pytest.approx(0.0, abs=1e-6)
    assert si_mse(o, np.roll(o, 6, axis=1), region) > 1e-3


def test_si_mse_and_si_l2_hand_computed():
    mask = np.array([[1, 1], [0, 0]], np.float32)
    o = np.ones((2, 2, 3))
    a = np.ones((2, 2, 3))
    a[0, 1] = 2.0
    a[1] = 9.0  # outside the mask: ignored
    # alpha = (3*1 + 3*2) / (3*1 + 3*4) = 0.6; residuals 0.4 (x3), -0.2 (x3): SSE 0.6; N_I = 2
    assert si_mse(o, a, mask) == pytest.approx(0.3)
    s_o = np.array([[1.0, 0.0], [5.0, 5.0]])
    s_a = np.array([[1.0, 1.0], [7.0, 7.0]])
    # alpha = 1/2; residuals 0.5, -0.5: SSE 0.5; N = 2: sqrt(0.25)
    assert si_l2(s_o, s_a, mask) == pytest.approx(0.5)


# --- geometry -----------------------------------------------------------------------------------


def test_landmark_nme_zero_on_itself_and_grows_with_a_shift(fixtures_dir):
    image = read_rgb(fixtures_dir / "ffhq10" / "00000.png")
    (face,) = F.find_faces(image, device="cpu")
    assert landmark_nme_68(face.landmarks, face.landmarks) == 0.0
    nmes = []
    for k in (0, 3, 6, 12):
        moved = cv2.warpAffine(image, np.float64([[1, 0, k], [0, 1, 0]]), image.shape[1::-1],
                               borderMode=cv2.BORDER_REFLECT_101)
        (shifted,) = F.find_faces(moved, device="cpu")
        nmes.append(landmark_nme_68(face.landmarks, shifted.landmarks))
        assert landmark_nme_51(face.landmarks, shifted.landmarks) >= 0
    assert nmes[0] == 0.0
    assert nmes == sorted(nmes) and nmes[-1] > nmes[1]
    # a k px shift moves every point by (k, 0): L1 per point k, NME k / inter-ocular distance
    iod = inter_ocular(face.landmarks)
    assert nmes[-1] == pytest.approx(12 / iod, rel=0.3)


# --- realism ------------------------------------------------------------------------------------


def test_frechet_distance_references():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(400, 8))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)
    # reference: Tr((S1 S2)^(1/2)) = sum of the square roots of the eigenvalues of S1 S2
    a = rng.normal(size=(8, 8))
    b = rng.normal(size=(8, 8))
    s1, s2 = a @ a.T + np.eye(8), b @ b.T + 0.5 * np.eye(8)
    mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
    tr_sqrt = np.sqrt(np.linalg.eigvals(s1 @ s2).real.clip(0)).sum()
    reference = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    assert frechet_distance_gaussians(mu1, s1, mu2, s2) == pytest.approx(reference, rel=1e-8)
    # samples of two diagonal Gaussians: sum (mu1 - mu2)^2 + sum (sd1 - sd2)^2
    sd1, sd2 = rng.uniform(0.5, 2, 4), rng.uniform(0.5, 2, 4)
    y1 = rng.normal(size=(200_000, 4)) * sd1 + 1.0
    y2 = rng.normal(size=(200_000, 4)) * sd2
    expected = 4 * 1.0 + ((sd1 - sd2) ** 2).sum()
    assert frechet_distance(y1, y2) == pytest.approx(expected, rel=0.02)


def test_kernel_distance_small_for_same_distribution():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(300, 16)), rng.normal(size=(300, 16))
    same, _ = kernel_distance(x, y)
    shifted, _ = kernel_distance(x, y + 0.5)
    assert abs(same) < 0.05 * shifted


# --- detection ----------------------------------------------------------------------------------


def test_box_iou_and_matching():
    a = np.array([[0, 0, 10, 10], [20, 20, 30, 30]])
    b = np.array([[21, 20, 31, 30], [0, 0, 10, 5], [100, 100, 110, 110]])
    np.testing.assert_allclose(F.box_iou(a, b)[0], [0.0, 0.5, 0.0])
    assert F.box_iou(a, b)[1, 0] == pytest.approx(90 / 110)
    assert match_boxes(a, b) == [1, 0]
    assert match_boxes(a, b, min_iou=0.6) == [None, 0]


def test_a_face_is_found_again_where_the_detector_finds_it_in_the_other_image(fixtures_dir):
    """A photo moved by (9, 6) px: the face is found again in the MTCNN box of the moved photo,
    with dlib's landmarks found there (the original's moved by about that much); with no box
    matching it keeps its own box, with the landmarks found in the moved photo there."""
    image = read_rgb(fixtures_dir / "faceapi" / "surprised.jpg")
    (face,) = F.find_faces(image, device="cpu")
    moved = cv2.warpAffine(image, np.float32([[1, 0, 9], [0, 1, 6]]), image.shape[1::-1],
                           borderMode=cv2.BORDER_REFLECT_101)
    boxes, _ = F.detect_boxes([moved], device="cpu")[0]
    (again,), (j,) = found_again(moved, [face], boxes)
    assert j is not None
    np.testing.assert_array_equal(again.box, boxes[j])
    np.testing.assert_array_equal(again.landmarks, F.landmarks_68(moved, boxes[j]))
    shift = np.median(again.landmarks - face.landmarks, 0)
    np.testing.assert_allclose(shift, [9, 6], atol=1.5)
    (kept,), (none,) = found_again(moved, [face], np.zeros((0, 4)))
    assert none is None
    np.testing.assert_array_equal(kept.box, face.box)
    np.testing.assert_array_equal(kept.landmarks, F.landmarks_68(moved, face.box))


def test_mtcnn_without_its_first_scales_finds_a_large_face_in_the_same_box(fixtures_dir):
    """``pyramid_min_size``: MTCNN's minimum face size grown by whole steps of its pyramid
    (0.709) up to half the face, so it runs the same scales less the first: every face of these
    photos is found in the same box as with the default 20 px, to float precision."""
    assert F.pyramid_min_size(30) == 20  # half of it is under 20 px: the default
    assert F.pyramid_min_size(110) == pytest.approx(20 / 0.709 ** 2)  # 39.8 <= 55 < 56.1
    for name in ("faceapi/surprised.jpg", "faceapi/angry.jpg", "ffhq10/00000.png"):
        image = read_rgb(fixtures_dir / name)
        boxes, _ = F.detect_boxes([image], device="cpu")[0]
        side = min(np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]))
        size = F.pyramid_min_size(side)
        assert size > 20, name
        fewer, _ = F.detect_boxes([image], min_face_size=size, device="cpu")[0]
        np.testing.assert_allclose(fewer, boxes, atol=1e-3, err_msg=name)


# --- the whole suite ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def evaluator():
    from fiftyone_faceanon.metrics import Evaluator

    return Evaluator(device="cpu")


def test_unanonymized_pair_scores_reid_one_and_distances_zero(evaluator, fixtures_dir):
    image = read_rgb(fixtures_dir / "faceapi" / "surprised.jpg")
    result = evaluator.evaluate_pair(image, image)
    assert len(result.faces) == 1
    rec = result.faces[0]
    assert rec["detected"] == 1.0
    for name in evaluator.judges:
        assert rec[f"reid_{name}"] == pytest.approx(1.0, abs=1e-5)
        assert rec[f"reid_found_{name}"] == pytest.approx(1.0, abs=1e-5)
    for name in ("landmark_nme_68", "landmark_nme_51", "si_mse", "si_l2", "delta_l", "delta_c",
                 "delta_e2000", "mse_l", "mse_ab", "emotion_l1"):
        assert rec[name] == pytest.approx(0.0, abs=1e-9), name
    assert rec["emotion_match"] == 1.0
    assert rec["group_match"] == 1.0


def test_group_match_tells_a_face_of_another_apparent_group(evaluator):
    """``group_match`` on LFW's deep-funneled photos, whose faces all sit in the same place:
    Al_Pacino_0001 against itself matches, and against Aretha_Franklin_0001 (read as code 1,
    Black) and Annette_Lu_0001 (code 2, East Asian), each taken as his "anonymized" photo, it
    does not (the ``donor`` backend at seed 0 gives him an East Asian donor's face;
    docs/benchmarks.md, "A donor of the face's apparent group")."""
    from conftest import need_shared

    lfw = need_shared("lfw") / "images_deepfunneled"
    photo = lambda name: read_rgb(lfw / name.rsplit("_", 1)[0] / f"{name}.jpg")  # noqa: E731
    pacino = photo("Al_Pacino_0001")
    rec = evaluator.evaluate_pair(pacino, pacino).faces[0]
    assert (rec["group_orig"], rec["group_match"]) == ("White", 1.0)
    for other, code in (("Aretha_Franklin_0001", "Black"), ("Annette_Lu_0001", "Asian")):
        rec = evaluator.evaluate_pair(pacino, photo(other)).faces[0]
        assert (rec["group_orig"], rec["group_anon"], rec["group_match"]) == (
            "White", code, 0.0), other


def test_evaluate_cli_end_to_end(tmp_path, fixtures_dir):
    from click.testing import CliRunner

    from fiftyone_faceanon.cli import main

    orig, anon = tmp_path / "orig", tmp_path / "anon"
    (orig / "people").mkdir(parents=True)
    for name in ("happy.jpg", "sad.jpg"):
        (orig / "people" / name).write_bytes((fixtures_dir / "faceapi" / name).read_bytes())
    runner = CliRunner()
    done = runner.invoke(main, ["anonymize", str(orig), "-o", str(anon), "--backend", "blur",
                                "--no-verify"])
    assert done.exit_code == 0, done.output
    (orig / "broken.jpg").write_bytes(b"not a jpeg at all")
    (anon / "broken.jpg").write_bytes(b"not a jpeg at all")
    (orig / "lonely.png").write_bytes((fixtures_dir / "ffhq10" / "00004.png").read_bytes())
    out = tmp_path / "report.json"
    result = runner.invoke(main, ["evaluate", str(orig), str(anon), "--out", str(out),
                                  "--groups", r"^(\w+)/", "--device", "cpu"])
    assert result.exit_code == 1, result.output
    report = json.loads(out.read_text())
    assert set(report) >= {"summary", "pairs", "unavailable", "errors", "groups"}
    errors = "\n".join(report["errors"])
    assert "broken.jpg" in errors and "lonely.png" in errors and len(report["errors"]) == 2
    assert "broken.jpg" in result.output and "lonely.png" in result.output
    assert [p["file"] for p in report["pairs"]] == ["people/happy.jpg", "people/sad.jpg"]
    assert all(p["faces_from"] == "record" and len(p["faces"]) == 1 for p in report["pairs"])
    for name in REQUIRED:
        assert name in report["summary"] or name in report["unavailable"], name
    for name in ("detected", "reid_facenet_casia", "reid_dlib", "landmark_nme_68", "si_mse",
                 "delta_e2000", "fid_facenet"):
        s = report["summary"][name]
        assert s["n"] == 2 and math.isfinite(s["mean"]), name
    # a blurred face is not the original: identity similarity drops, colour moves
    assert report["summary"]["reid_facenet_casia"]["mean"] < 0.99
    assert report["summary"]["delta_e2000"]["mean"] > 0
    assert report["summary"]["fid_facenet"]["mean"] > 0
    assert set(report["groups"]) == {"people"}
    assert "delta_e2000" in result.output  # the table


def test_workers_give_the_same_report(tmp_path, fixtures_dir, evaluator):
    """Two processes (each with its own models, batches of 2 pairs) and one give one report."""
    from fiftyone_faceanon.batch import anonymize_files
    from fiftyone_faceanon.metrics import evaluate_dirs

    orig, anon = tmp_path / "orig", tmp_path / "anon"
    orig.mkdir()
    for name in ("happy.jpg", "sad.jpg", "angry.jpg", "surprised.jpg"):
        (orig / name).write_bytes((fixtures_dir / "faceapi" / name).read_bytes())
    (orig / "broken.jpg").write_bytes(b"not a jpeg at all")
    anonymize_files([orig], anon, workers=1)
    (anon / "broken.jpg").write_bytes(b"not a jpeg at all")
    one = evaluate_dirs(orig, anon, evaluator=evaluator, batch=2, workers=1)
    cpu_one = sum(evaluator.cpu_timings.values())
    two = evaluate_dirs(orig, anon, evaluator=evaluator, batch=2, workers=2)
    assert [p["file"] for p in two["pairs"]] == [p["file"] for p in one["pairs"]]
    assert len(two["pairs"]) == 4 and len(two["errors"]) == len(one["errors"]) == 1
    for p1, p2 in zip(one["pairs"], two["pairs"]):
        for f1, f2 in zip(p1["faces"], p2["faces"]):
            assert f1.keys() == f2.keys()
            for key, value in f1.items():
                if isinstance(value, float):
                    assert f2[key] == pytest.approx(value, abs=1e-5), key
                else:
                    assert f2[key] == value, key
    assert two["summary"]["fid_facenet"]["mean"] == pytest.approx(
        one["summary"]["fid_facenet"]["mean"], abs=1e-5)
    # the workers' CPU time is added to the caller's evaluator
    assert sum(evaluator.cpu_timings.values()) > cpu_one
