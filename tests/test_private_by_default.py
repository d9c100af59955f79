"""Issue 13: the donor backend, identity-neutral geometry, verification and the public/private
split of what a run writes. Real photos, real judges, the shipped bank and shape model."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import largest_face, lfw_images, need_shared, read_rgb
from fiftyone_faceanon import faces as F
from fiftyone_faceanon import pipeline as pipeline_module
from fiftyone_faceanon.anonymizers.donor import DEMOGRAPHIC_JUDGES, demographics, skin_far
from fiftyone_faceanon.cli import main
from fiftyone_faceanon.geometry import load_shape_model, spread
from fiftyone_faceanon.pipeline import Pipeline, Settings


def run_cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def shape():
    return load_shape_model()


@pytest.fixture(scope="module")
def johns(fixtures_dir):
    """(55, 68, 2) landmarks and person names of fixtures/dlib_johns (people never trained on)."""
    shapes, names = [], []
    for path in sorted((fixtures_dir / "dlib_johns").glob("*/*.jpg")):
        found = F.find_faces(read_rgb(path))
        if found:
            shapes.append(max(found, key=lambda f: f.score).landmarks)
            names.append(path.parent.name)
    return np.array(shapes), np.array(names)


def test_geometry_zero_returns_the_original_landmarks(shape, astronaut):
    (face,) = F.find_faces(astronaut)
    np.testing.assert_array_equal(shape.neutralize(face.landmarks, 0.0), face.landmarks)
    # The alignment itself is exact to well under a pixel both ways.
    x, sim = shape.align(face.landmarks)
    np.testing.assert_allclose(sim.invert(x.reshape(68, 2) + shape.mean), face.landmarks,
                               atol=1e-6)
    result = Pipeline(Settings(geometry=0.0, verify=False)).anonymize(astronaut, key="a")
    (record,) = result.records
    assert np.abs(record.anonymized.landmarks - face.landmarks).max() < 1.0
    assert record.geometry == 0.0


def test_neutralizing_shrinks_within_person_identity_spread(shape, johns):
    shapes, names = johns
    assert len(shapes) >= 50 and len(set(names)) == 5
    ident = np.stack([shape.identity(s) for s in shapes])
    within, between = spread(ident, names)
    # The learned directions carry identity on people the model never saw ...
    assert between > within
    for strength in (0.5, 1.0):
        moved = np.stack([shape.identity(shape.neutralize(s, strength)) for s in shapes])
        w, b = spread(moved, names)
        # ... and neutralizing takes it out: (1 - s)^2 of both spreads is left (up to the
        # re-alignment of the moved shape).
        left = (1 - strength) ** 2 + 0.02
        assert w < within * left and b < between * left, (strength, w, b)
    # Pose and expression (the residual) are kept, up to the re-alignment of the moved shape.
    for s0 in shapes[::11]:
        x0, _ = shape.align(s0)
        x1, _ = shape.align(shape.neutralize(s0, 1.0))
        r0, r1 = x0 - shape.project @ x0, x1 - shape.project @ x1
        i0, i1 = shape.project @ x0, shape.project @ x1
        assert np.linalg.norm(i1) < 0.05 * np.linalg.norm(i0)
        assert np.linalg.norm(r1 - r0) < 0.15 * np.linalg.norm(i1 - i0)


def test_same_seed_same_bytes_and_public_private_split(tmp_path, fixtures_dir):
    src = tmp_path / "in"
    src.mkdir()
    Image.open(fixtures_dir / "group/insightface_t1.jpg").save(src / "t1.png")
    outs = []
    for name, seed in [("o1", 1), ("o2", 1), ("o3", 2)]:
        r = run_cli("anonymize", src, "-o", tmp_path / name, "--seed", seed, "--no-verify")
        assert r.exit_code == 0, r.output
        outs.append((tmp_path / name / "t1.png").read_bytes())
    assert outs[0] == outs[1] and outs[0] != outs[2]

    public = json.loads((tmp_path / "o1/t1.png.json").read_text())
    private = json.loads((tmp_path / "o1.private/t1.png.json").read_text())
    # Nothing measured on the original is in the output tree ...
    assert "input_sha256" not in public and "input_sha256" in private
    assert sorted(p.name for p in (tmp_path / "o1").iterdir()) == ["t1.png", "t1.png.json"]
    assert len(public["faces"]) == len(private["faces"]) == 6
    donors = set()
    for pub, priv in zip(public["faces"], private["faces"]):
        assert set(pub) == {"box", "landmarks", "donor", "geometry", "tries", "status"}
        # ... the released landmarks are the anonymized geometry, not the original's.
        moved = np.abs(np.array(pub["landmarks"]) - np.array(priv["landmarks"])).max()
        assert moved > 1.0 and pub["landmarks"] == priv["anonymized"]["landmarks"]
        assert pub["geometry"] == 0.5 and pub["status"] == "replaced"
        donors.add(pub["donor"])
    # Six different people get six different synthetic donors.
    assert len(donors) == 6


def test_verified_faces_record_every_judge(tmp_path, astronaut):
    result = Pipeline(Settings()).anonymize(astronaut, key="astronaut")
    (record,) = result.records
    assert record.status == "verified" and record.donor is not None
    from fiftyone_faceanon.metrics.identity import judge_thresholds

    limits = judge_thresholds()
    assert set(record.similarity) == {"facenet_casia", "dlib"}
    for judge, sim in record.similarity.items():
        assert sim < limits[judge]["far_1e-3"]


def test_unverified_faces_still_get_donors_of_their_gender_and_age():
    """Without verification the pipeline still reads each original with the judges to choose
    its donor. Without that reading (until 2026-12-04) both of these smiling adults, LFW's
    Brian_Williams_0001 and Caroline_Link_0001, got the bank's one-year-old, and no donor the
    judges find like the face was kept away. Each now gets a donor of its gender and at least
    half its age as the head reads it (in 1 + age; it reads Brian Williams, over-exposed and
    smiling, as 15, and his donor since the skin head as 9)."""
    lfw = need_shared("lfw/images_deepfunneled")
    pipeline = Pipeline(Settings(verify=False))
    assert pipeline.panel is not None
    backend = pipeline.backend
    female = backend.table[:, backend.keys.index("female")]
    age = np.expm1(backend.table[:, backend.keys.index("log_age")])
    for name, woman in (("Brian_Williams", False), ("Caroline_Link", True)):
        image = read_rgb(lfw / name / f"{name}_0001.jpg")
        (record,) = pipeline.anonymize(image, key=name).records
        assert record.status == "replaced" and not record.similarity  # not judged
        d = record.donor_index
        original = pipeline.panel.embed_many([(image, [record.original])], fast=True)
        own = np.expm1(demographics({j: original[j] for j in DEMOGRAPHIC_JUDGES})[0, 1])
        assert 1 + age[d] >= (1 + own) / 2 and (female[d] > 0.5) == woman, (name, own, age[d])
        assert not pipeline.panel.too_close(original, backend.bank.embeddings)[0, d]


def test_forced_verification_failure_fails_closed_and_exits_non_zero(tmp_path, astronaut):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(astronaut).save(src / "a.png")
    force = ["--verify-threshold", "facenet_casia=-1", "--verify-threshold", "dlib=-1"]
    r = run_cli("anonymize", src, "-o", tmp_path / "blur", *force)
    assert r.exit_code == 1
    assert "unverified: " in r.output and "a.png: still matched by a judge" in r.output
    assert "1 unverified (fail-closed)" in r.output
    public = json.loads((tmp_path / "blur/a.png.json").read_text())
    private = json.loads((tmp_path / "blur.private/a.png.json").read_text())
    assert public["status"] == "unverified"
    (face,) = public["faces"]
    # every score is at or above the forced thresholds, the blur's too: the face is masked
    assert face["status"] == "fail_closed:mask" and face["tries"] == Settings().tries
    assert face["geometry"] == 1.0
    assert set(private["faces"][0]["similarity"]) == {"facenet_casia", "dlib"}
    # The face region is covered: almost no detail left where the face was.
    out = read_rgb(tmp_path / "blur/a.png")
    x0, y0, x1, y1 = np.array(private["faces"][0]["box"], int)
    inner = out[y0 + (y1 - y0) // 4: y1 - (y1 - y0) // 4, x0 + (x1 - x0) // 4: x1 - (x1 - x0) // 4]
    orig = astronaut[y0 + (y1 - y0) // 4: y1 - (y1 - y0) // 4, x0 + (x1 - x0) // 4: x1 - (x1 - x0) // 4]
    lap = lambda im: np.var(__import__("cv2").Laplacian(im.mean(2).astype(np.float32), -1))
    assert lap(inner) < 0.05 * lap(orig)
    # A rerun keeps saying so (and exits non-zero) without redoing the work.
    r = run_cli("anonymize", src, "-o", tmp_path / "blur", *force)
    assert r.exit_code == 1 and "1 unverified" in r.output

    # --on-fail error writes nothing for that file.
    r = run_cli("anonymize", src, "-o", tmp_path / "err", "--on-fail", "error", *force)
    assert r.exit_code == 1 and "error: " in r.output
    assert f"still matched after {Settings().tries} tries" in r.output
    assert not (tmp_path / "err/a.png").exists()


@pytest.mark.parametrize("size", [20, 85, 256, 513])
def test_fail_closed_blur_equals_opencvs_blur_of_the_mosaic(astronaut, size):
    """The fail-closed blur, computed per block, is OpenCV's Gaussian blur of the upscaled
    mosaic in float32, to rounding."""
    import cv2

    from fiftyone_faceanon.verify import MOSAIC, fail_closed

    crop = cv2.resize(astronaut[20:220, 150:350], (size, size), interpolation=cv2.INTER_AREA)
    out = fail_closed(crop, np.ones((size, size), np.uint8), "blur")
    mosaic = cv2.resize(cv2.resize(crop, (MOSAIC, MOSAIC), interpolation=cv2.INTER_AREA),
                        (size, size), interpolation=cv2.INTER_NEAREST)
    reference = cv2.GaussianBlur(mosaic.astype(np.float32), (0, 0), size / 12)
    assert out.dtype == np.uint8 and out.shape == crop.shape
    assert np.abs(out - reference).max() <= 0.5 + 1e-3


def test_faces_are_verified_as_their_written_file_gives_them_back(tmp_path):
    """The judges score an image as its JPEG file gives it back: each face's recorded
    similarities are what the judges get from the released file (the encoder moves them by
    a few hundredths), at the original face's place or, where higher, where the face is found
    again in the file, and a verified face is under every judge's FAR 1e-3 threshold at both."""
    from fiftyone_faceanon.metrics.detection import found_again
    from fiftyone_faceanon.metrics.identity import BF16_ERROR
    from fiftyone_faceanon.metrics.pairing import faces_from_records
    from fiftyone_faceanon.verify import Verifier

    src = tmp_path / "in"
    src.mkdir()
    for path in lfw_images(12):
        (src / path.name).write_bytes(path.read_bytes())
    r = run_cli("anonymize", src, "-o", tmp_path / "out")
    assert r.exit_code in (0, 1), r.output  # 1: a face failed closed, reported
    verifier = Verifier()
    verified = 0
    for path in sorted(src.iterdir()):
        record = json.loads((tmp_path / "out.private" / f"{path.name}.json").read_text())
        faces = faces_from_records(record["faces"])
        written = read_rgb(tmp_path / "out" / path.name)
        again, _ = found_again(written, faces, F.detect_boxes([written], device="cpu")[0][0])
        original = verifier.embed_many([(read_rgb(path), faces)])
        sims = [verifier.similarities(original, verifier.embed_many([(written, where)]))
                for where in (faces, again)]
        for k, face in enumerate(record["faces"]):
            for judge in sims[0]:
                # to 1e-3 (the record's landmarks are rounded to 0.01 px): judged before the
                # encoder, these records differ from the files' by up to 0.009; a similarity
                # the bfloat16 screen left outside its band (Verifier.screen) by up to
                # BF16_ERROR
                recorded = face["similarity"][judge]
                low, high = verifier.screen(judge)
                screened = verifier.judges[judge].fast and not low <= recorded < high
                tolerance = BF16_ERROR if screened else 1e-3
                place, found = sims[0][judge][k], sims[1][judge][k]
                assert min(abs(place - recorded), abs(found - recorded)) < tolerance, (
                    path.name, judge)
                assert recorded > place - tolerance, (path.name, judge)
            if face["anonymized"]["status"] == "verified":
                verified += 1
                assert all(s[j][k] < verifier.limits[j] for s in sims for j in s), path.name
    assert verified >= 10


def test_a_face_judged_as_written_passes_only_the_crop_margin_under_facenets_limit(
        tmp_path, monkeypatch):
    """LFW's Brigitte_Boisselier_0002 at seed 0: its first donor, written as a JPEG, scores
    0.503 with FaceNet-CASIA against the 0.5050 limit (where the face is found again; 0.497 at
    its own box), and up to 0.517 with the detector box moved by one pixel: FaceNet crops by the
    box, and a re-identifier's box is never exactly ours. With ``CROP_MARGIN`` that try is
    redone (the face ends at its third, 0.342); judged at the limit itself (margin 0) it
    passes at its first try. (Aaron_Tippin_0001 showed it until the eye rule changed its
    first donor, which scores 0.489 and at most 0.489 moved; Carla_Del_Ponte_0003
    showed it until the facial hair seen on the donors changed her first donor,
    Alan_Greenspan_0004 until its first try's detail was matched to the photo's, and
    Anatoliy_Kinakh_0001 until its open mouth kept its own dark inside.)"""
    from dataclasses import replace

    from fiftyone_faceanon import verify

    rel = "Brigitte_Boisselier/Brigitte_Boisselier_0002.jpg"
    photo = need_shared("lfw") / "images_deepfunneled" / rel
    (tmp_path / "in" / rel).parent.mkdir(parents=True)
    (tmp_path / "in" / rel).write_bytes(photo.read_bytes())
    casia = "facenet_casia"
    crop_margin = verify.CROP_MARGIN[casia]
    records = {}
    for margin in (crop_margin, 0.0):
        monkeypatch.setitem(verify.CROP_MARGIN, casia, margin)
        out = tmp_path / f"out{margin}"
        r = run_cli("anonymize", tmp_path / "in", "-o", out, "--workers", "1", "--seed", "0")
        assert r.exit_code == 0, r.output
        records[margin] = json.loads((tmp_path / f"out{margin}.private" / f"{rel}.json")
                                     .read_text())["faces"]
    kept, none = records[crop_margin], records[0.0]
    verifier = verify.Verifier()
    limit = verifier.limits[casia]
    assert len(kept) == len(none) == 1 and none[0]["anonymized"]["tries"] == 1
    assert limit - crop_margin < none[0]["similarity"][casia] < limit
    assert kept[0]["anonymized"]["tries"] > 1
    assert kept[0]["similarity"][casia] < limit - crop_margin
    original = read_rgb(photo)
    face = F.find_faces(original)[0]
    written = read_rgb(tmp_path / "out0.0" / rel)
    moves = [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, -1)]
    sims = [verifier.similarities(verifier.embed_many([(original, [face])], (casia,)),
                                  verifier.embed_many([(written, [f])], (casia,)))[casia][0]
            for f in (replace(face, box=face.box + np.array([dx, dy, dx, dy], float))
                      for dx, dy in moves)]
    assert sims[0] < limit <= max(sims[1:])


def anonymized_and_read(rel: str):
    """LFW's photo ``rel`` anonymized by the default pipeline: the pipeline, the record of the
    photo's one face and what the backend reads off that face with the judges' embeddings of
    it (to choose its donors again)."""
    image = read_rgb(need_shared("lfw") / "images_deepfunneled" / rel)
    pipeline = Pipeline(Settings())
    result = pipeline.anonymize(image, key=rel)
    (record,), (face,) = result.records, result.faces
    crop, lms = F.crop_face(image, face.crop), face.crop.to_crop(face.landmarks)
    original = pipeline.panel.embed_many([(image, [face])])
    return pipeline, record, pipeline.backend.read(crop, lms,
                                                   {j: e[0] for j, e in original.items()})


def test_a_face_without_a_beard_gets_no_donor_seen_with_facial_hair(monkeypatch):
    """LFW's Beecher_Ray_Kirby_0001, a clean-shaven smiling man (beard 0.03). Without the facial
    hair a person saw on the donors, one of his six tries' donors is one a person saw with
    facial hair (until the skin-tone rule ``SKIN_FAR``, his verified donor itself had stubble
    that the beard measure reads as 0.61, under the 0.8 of the beardless rule); with it, no
    donor of any of his six tries has facial hair."""
    rel = "Beecher_Ray_Kirby/Beecher_Ray_Kirby_0001.jpg"
    pipeline, record, read = anonymized_and_read(rel)
    bank = pipeline.backend.bank
    seen = bank.facial_hair_seen.copy()
    assert record.status == "verified" and not seen[record.donor_index]

    def donors() -> list[int]:
        return [pipeline.backend.choose(read, pipeline_module.face_rng(0, rel, 0), t, None)
                for t in range(Settings().tries)]

    assert not seen[donors()].any()
    monkeypatch.setattr(bank, "facial_hair_seen", np.zeros_like(seen))
    assert seen[donors()].any()


def test_a_wide_try_gets_no_donor_seen_with_a_fringe(monkeypatch):
    """LFW's Alan_Greenspan_0001, a bald man whom the judges match at his first two tries: his
    third, over the wide region (``pipeline.WIDEN_FROM``), is verified with a donor on whom no
    one saw hair or headwear over the forehead, as are the candidates of his wide tries but
    the last. Without the fringes a person saw, his fourth and fifth tries' donors are ones
    seen with hair over the forehead, which that region would draw onto his bald one; his
    first two tries, not wide, and his last, which may draw any donor, draw the same donors
    either way."""
    rel = "Alan_Greenspan/Alan_Greenspan_0001.jpg"
    pipeline, record, read = anonymized_and_read(rel)
    bank = pipeline.backend.bank
    seen = bank.fringe_seen.copy()
    wide, tries = pipeline_module.WIDEN_FROM, Settings().tries
    assert record.status == "verified" and record.tries == wide + 1
    assert not seen[record.donor_index]

    def donors() -> np.ndarray:
        return np.array([pipeline.backend.choose(read, pipeline_module.face_rng(0, rel, 0), t,
                                                 None, False, wide <= t, t == tries - 1)
                         for t in range(tries)])

    ruled = donors()
    assert ruled[wide] == record.donor_index and not seen[ruled[wide:-1]].any()
    monkeypatch.setattr(bank, "fringe_seen", np.zeros_like(seen))
    unruled = donors()
    assert list(seen[unruled[wide:-1]]) == [False, True, True]
    np.testing.assert_array_equal(unruled[:wide], ruled[:wide])
    assert unruled[-1] == ruled[-1]


def test_a_later_try_keeps_the_skin_tone_until_the_last():
    """LFW's Beecher_Ray_Kirby_0001, a light-skinned man in a grey photo whom the judges match
    at his first two tries. His third is verified with a donor not far from his skin tone by
    both measures (``donor.SKIN_FAR``), as are the candidates of every try but his last,
    although from the third try the donors are ranked without the skin terms
    (``SKIN_TRIES``). Chosen as at a last try, where the rule gives way, his third try's
    donor is darker by both measures (a dark-skinned old man lit low, 0.45 darker in measured
    luma and 0.18 by the skin head); the stop-62 code, which chose so at every later try, gave
    him a Black man's face there."""
    rel = "Beecher_Ray_Kirby/Beecher_Ray_Kirby_0001.jpg"
    pipeline, record, read = anonymized_and_read(rel)
    backend, tries = pipeline.backend, Settings().tries
    third = pipeline_module.WIDEN_FROM

    def far(donor: int) -> bool:
        return bool(skin_far(backend.column("luma")[donor] - read.attributes["luma"],
                             backend.column("skin")[donor] - read.attributes["skin"]))

    def chosen(rank: int, last: bool) -> int:
        return backend.choose(read, pipeline_module.face_rng(0, rel, 0), rank, None, False,
                              rank >= third, last)

    assert record.status == "verified" and record.tries == third + 1
    assert not far(record.donor_index)
    assert not any(far(chosen(rank, False)) for rank in range(tries - 1))
    assert far(chosen(third, True))


def test_one_judge_after_another_decides_as_every_judge_does(monkeypatch):
    """LFW's Adrien_Brody_0004 at seed 0: dlib alone matches its first two tries, so
    FaceNet-CASIA does not score them; the output and the face's record are those of a run that
    scores every try with every judge."""
    from fiftyone_faceanon.verify import Verifier

    key = "Adrien_Brody_0004.jpg"
    image = read_rgb(need_shared("lfw") / "images_deepfunneled" / "Adrien_Brody" / key)
    scored = []
    score = Verifier.score_embedded

    def counted(self, original, items, margin=None):
        scored.extend(j for j in original for _, faces in items for _ in faces)
        return score(self, original, items, margin)

    monkeypatch.setattr(Verifier, "score_embedded", counted)
    pipeline = Pipeline(Settings())
    in_turn = pipeline.anonymize(image, key=key)
    casia_in_turn, scored[:] = scored.count("facenet_casia"), []
    judge = Pipeline._judge
    monkeypatch.setattr(Pipeline, "_judge", lambda self, states, every=False:
                        judge(self, states, every=True))
    every = pipeline.anonymize(image, key=key)
    assert casia_in_turn < scored.count("facenet_casia")
    assert np.array_equal(in_turn.image, every.image)
    (a,), (b,) = in_turn.records, every.records
    assert a.tries == b.tries >= 3 and a.status == b.status == "verified"
    assert a.public() == b.public() and a.similarity == b.similarity


def test_a_face_is_verified_where_a_reidentifier_finds_it_too(tmp_path, monkeypatch):
    """LFW's Ann_Veneman_0008 at seed 0, her face (the photo's first; a second, cut by its
    edge, is verified too). Judged at the original face's place alone, her first try passes
    (dlib 0.922 against its 0.927 limit) that the metrics suite finds matched where a
    re-identifier finds the face in the written output (0.931: MTCNN run on it, dlib's
    landmarks there): dlib's chip moves with the landmarks. Judged there too (``FOUND_BAND``),
    that try is redone, and the output passes both places, for both judges. (Betsy_Coffin_0001
    showed it until stop 53 changed the donors of faces with pale lips, Anthony_LaPaglia_0001
    until its first tries' detail was matched to the photo's, Carlos_Moya_0017 until stop 60
    kept open mouths dark inside.)"""
    from fiftyone_faceanon import verify
    from fiftyone_faceanon.metrics import Evaluator

    rel = "Ann_Veneman/Ann_Veneman_0008.jpg"
    photo = need_shared("lfw") / "images_deepfunneled" / rel
    (tmp_path / "in" / rel).parent.mkdir(parents=True)
    (tmp_path / "in" / rel).write_bytes(photo.read_bytes())
    evaluator, original = Evaluator(device="cpu"), read_rgb(photo)
    tries, scores = {}, {}
    for where, band in (("found", dict(verify.FOUND_BAND)),
                        ("place", {j: -1.0 for j in verify.FOUND_BAND})):  # never judged there
        for j, b in band.items():
            monkeypatch.setitem(verify.FOUND_BAND, j, b)
        out = tmp_path / where
        r = run_cli("anonymize", tmp_path / "in", "-o", out, "--workers", "1", "--seed", "0")
        assert r.exit_code == 0, r.output
        faces = json.loads((tmp_path / f"{where}.private" / f"{rel}.json").read_text())["faces"]
        assert len(faces) == 2
        assert all(f["anonymized"]["status"] == "verified" for f in faces)
        face = faces[0]
        tries[where] = face["anonymized"]["tries"]
        scores[where] = min(evaluator.evaluate_pair(original, read_rgb(out / rel)).faces,
                            key=lambda s: np.abs(np.subtract(s["box"], face["box"])).sum())
    assert scores["place"]["reid_far_dlib"] == 0 and scores["place"]["reid_far_found_dlib"] == 1
    assert tries["found"] > tries["place"]
    for j in verify.VERIFY_JUDGES:
        assert scores["found"][f"reid_far_{j}"] == scores["found"][f"reid_far_found_{j}"] == 0


def test_a_video_track_is_verified_where_a_reidentifier_finds_it_too(monkeypatch):
    """A one-view track of LFW's Brigitte_Boisselier_0001, planned as a video's are (the encoder's
    round trip, the video margin). Judged at the face's place alone, its first try passes, yet
    FaceNet-CASIA matches it where a re-identifier finds the face in the encoded frame (MTCNN
    run on it, dlib's landmarks there). Judged there too, that try is redone, and the plan's
    last try passes both places."""
    from fiftyone_faceanon import verify
    from fiftyone_faceanon.metrics.detection import found_again
    from fiftyone_faceanon.video import VIDEO_MARGIN
    from fiftyone_faceanon.videoio import as_encoded

    key = "Brigitte_Boisselier_0001.jpg"
    image = read_rgb(need_shared("lfw") / "images_deepfunneled" / "Brigitte_Boisselier" / key)
    pipeline = Pipeline(Settings())
    (face,) = pipeline.anonymize(image, key=key).faces
    panel = pipeline.panel
    original = panel.embed_many([(image, [face])])
    bands = dict(verify.FOUND_BAND)

    def plan_and_judge(judged_found: bool) -> tuple[int, dict, dict]:
        for j, band in bands.items():
            monkeypatch.setitem(verify.FOUND_BAND, j, band if judged_found else -1.0)
        plan = pipeline.plan_identity([(image, face, face, None)], key, 0,
                                      margin=VIDEO_MARGIN, released=as_encoded)
        assert plan.status == "verified"
        out = as_encoded(pipeline.render_planned(image, [face], [plan], key)[0])
        (boxes, _), = F.detect_boxes([out], device="cpu")
        found, _ = found_again(out, [face], boxes)
        return (plan.tries, panel.score(original, [(out, [face])]),
                panel.score(original, [(out, found)]))

    line = {j: panel.thresholds[j] - VIDEO_MARGIN[j] for j in verify.VERIFY_JUDGES}
    tries, place, found = plan_and_judge(False)
    assert tries == 1 and all(place[j][0] < line[j] for j in line)
    assert found["facenet_casia"][0] >= line["facenet_casia"]
    more_tries, place, found = plan_and_judge(True)
    assert more_tries > tries
    assert all(place[j][0] < line[j] and found[j][0] < line[j] for j in line)


def test_face_matched_after_two_tries_is_replaced_over_a_wider_region(monkeypatch):
    """From the third try a face is replaced over a wider region (more forehead, the outline
    grown): an LFW face that the judges match through every try at the face's own region,
    which is then written fail-closed, is verified once the region widens."""
    # found among the LFW DevTest 500 faces alone in their photo and verified at their third
    # try or later (2 of the first 25 fail closed with the narrow region); AJ_Lamas_0001 and
    # Abdullah_Gul_0019, used before, are verified at the narrow region since the gender rule
    # (2026-12-04, later) and the skin head (2026-12-05) changed their donors
    rel = "Anne_McLellan/Anne_McLellan_0001.jpg"
    image = read_rgb(need_shared("lfw") / "images_deepfunneled" / rel)
    (wide,) = Pipeline(Settings()).anonymize(image, key=rel).records
    monkeypatch.setattr(pipeline_module, "WIDEN_FROM", Settings().tries)
    (narrow,) = Pipeline(Settings()).anonymize(image, key=rel).records
    assert narrow.status.startswith("fail_closed") and narrow.tries == Settings().tries
    assert wide.status == "verified" and wide.tries >= 3


def test_face_too_small_to_judge_is_replaced_wide_and_counted(tmp_path):
    """A background face under 32 px cannot be verified: it is replaced over the wide region
    (the ring between the face's own region and the wide one changes, nothing beyond it) at
    its only try, recorded ``too_small``, and the run says how many faces it could not judge."""
    rel = "Adrien_Brody/Adrien_Brody_0006.jpg"
    path = need_shared("lfw") / "images_deepfunneled" / rel
    image = read_rgb(path)
    pipeline = Pipeline(Settings())
    result = pipeline.anonymize(image, key=rel)
    (small,) = [(f, r) for f, r in zip(result.faces, result.records) if r.status == "too_small"]
    face, record = small
    size = face.crop.size
    target = face.crop.to_crop(record.anonymized.landmarks)
    own = F.face_region(target, size, pipeline.backend.forehead) > 0
    wide = pipeline._region(target, size, wide=True)
    ring = (wide > 0) & ~own
    beyond = F.feathered_mask(wide, pipeline.settings.feather) == 0
    changed = np.abs(F.crop_face(result.image, face.crop).astype(int)
                     - F.crop_face(image, face.crop)).max(2) > 8
    assert record.tries == 1
    assert (changed & ring).sum() > 0.15 * ring.sum() and not (changed & beyond).any()

    src = tmp_path / "in"
    src.mkdir()
    (src / "a.jpg").write_bytes(path.read_bytes())
    r = run_cli("anonymize", src, "-o", tmp_path / "out")
    assert r.exit_code == 0, r.output
    assert "note: 1 face(s) under 32 px replaced over the wide region but not judged" in r.output


def test_occluder_keeps_its_original_pixels(fixtures_dir):
    """A real dark object (the camera from scikit-image's cameraman photo) pasted over the side
    of a face's forehead and temple stays as it was; the rest of the face is replaced."""
    from skimage import data

    image = read_rgb(fixtures_dir / "ffhq10/00000.png").copy()
    lms = np.load(fixtures_dir / "ffhq10/00000.npy")
    camera = np.repeat(data.camera()[40:170, 120:220, None], 3, axis=2)
    dark = camera.mean(2) < 60  # the camera and the man's coat: black, not skin
    x0 = int(lms[0, 0]) - 30
    y0 = int(lms[19, 1]) - 40
    patch = image[y0:y0 + 130, x0:x0 + 100]
    patch[dark] = camera[dark]
    result = Pipeline(Settings(verify=False)).anonymize(image, key="occluded")
    assert len(result.faces) == 1
    face = result.faces[0]
    crop = F.crop_face(image, face.crop)
    occluded = F.occluder_mask(crop, face.crop.to_crop(face.landmarks))
    assert occluded.sum() > 200
    # The object's pixels on the face keep their values bit for bit, but for the part over the
    # eye and the brow (always replaced) and a band at its edge that the paste blends ...
    obj = np.zeros(image.shape[:2], bool)
    obj[y0:y0 + 130, x0:x0 + 100] = dark
    region = F.face_region(face.crop.to_crop(face.landmarks), crop.shape[0])
    on_face = obj & F.paste_faces(np.zeros_like(image), [face], [np.full_like(crop, 255)],
                                  [region]).any(2)
    assert on_face.sum() > 500
    kept = (result.image[on_face] == image[on_face]).all(1)
    assert kept.mean() > 0.45, kept.mean()
    # ... while the skin around it changed.
    skin = F.paste_faces(np.zeros_like(image), [face], [np.full_like(crop, 255)],
                         [F.face_region(face.crop.to_crop(face.landmarks), crop.shape[0])]).any(2)
    skin &= ~obj
    assert np.abs(result.image[skin].astype(int) - image[skin]).mean() > 5


def test_glasses_frames_keep_their_pixels_and_the_donor_wears_none():
    """Thin metal frames (LFW DevTest, Alvaro_Uribe_0002) that the chroma occluder test misses:
    the glasses head, on the judges' embedding of the face, says glasses, so the frames' pixels
    stay as they were and the donor wears none, with verification and without (the judges read
    the face for the donor choice either way; until 2026-12-04 a run without verification had
    no embedding and replaced the frames). At seed 0 the face is now verified at its third try
    (the wider region, geometry 1), which keeps 25% of the frames' pixels bit for bit, against
    37% at seeds 1 and 2 (second and first tries); frames replaced would keep none."""
    from fiftyone_faceanon.anonymizers.donor import GLASSES

    image = read_rgb(need_shared("lfw/images_deepfunneled/Alvaro_Uribe/Alvaro_Uribe_0002.jpg"))
    kept = {}
    for verify in (True, False):
        pipeline = Pipeline(Settings(verify=verify))
        result = pipeline.anonymize(image, key="glasses")
        i = int(np.argmax([(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]) for f in result.faces]))
        face, record = result.faces[i], result.records[i]
        crop = F.crop_face(image, face.crop)
        lms = face.crop.to_crop(face.landmarks)
        frames = F.frames_mask(crop, lms) & ~F.occluder_mask(crop, lms)
        assert frames.sum() > 150
        on = F.paste_faces(np.zeros_like(image), [face], [np.full_like(crop, 255)],
                           [frames.astype(np.float32)]).any(2)
        kept[verify] = (result.image[on] == image[on]).all(1).mean()
        assert record.status == ("verified" if verify else "replaced")
        backend = pipeline.backend
        assert backend.table[record.donor_index, backend.keys.index("glasses")] <= GLASSES
    # bit for bit but for a band at the frames' edges that the paste blends
    assert kept[True] > 0.2 and kept[False] > 0.3, kept


def read_largest_face(image: np.ndarray, pipeline: Pipeline, verified: bool = True):
    """What the backend reads off ``image``'s largest face at its own crop size, with the
    judges' embeddings of it, for a face that will be ``verified`` or not."""
    face = largest_face(image)
    crop = F.crop_transform(face.landmarks, F.crop_size_for(face.landmarks))
    original = pipeline.panel.embed_many([(image, [face])])
    return pipeline.backend.read(F.crop_face(image, crop), crop.to_crop(face.landmarks),
                                 {j: e[0] for j, e in original.items()}, verified)


def test_dark_eyes_get_no_donor_with_much_lighter_eyes():
    """UTKFace's 1_1_2_20161219221243095, an East Asian baby girl with dark eyes (read -0.8):
    two of her six cheapest donors have eyes read more than ``donor.EYES_FAR`` lighter than
    hers, and the seed's first choice without the rule (as a redo chooses, or stop 63 at her
    first try) is one of them; at every try but her last none of her candidates has such
    eyes."""
    from fiftyone_faceanon.anonymizers.donor import CANDIDATES, EYES_FAR

    name = "1_1_2_20161219221243095.jpg.chip.jpg"
    pipeline = Pipeline(Settings())
    read = read_largest_face(read_rgb(need_shared("utkface") / name), pipeline)
    backend = pipeline.backend
    lighter = backend.bank.attributes["eyes"] > read.attributes["eyes"] + EYES_FAR
    unruled = np.argsort(backend.cost(read), kind="stable")[:CANDIDATES]
    assert lighter[unruled].sum() == 2

    def chosen(rank: int, redo: bool) -> int:
        return backend.choose(read, pipeline_module.face_rng(0, name, 0), rank, None, redo,
                              rank >= pipeline_module.WIDEN_FROM)

    assert lighter[chosen(0, True)]
    assert not any(lighter[chosen(rank, False)] for rank in range(Settings().tries - 1))


def test_a_face_read_very_dark_keeps_its_dark_eyed_donors():
    """LFW's Alan_Dershowitz_0001, whose irises read -28.8 through the glasses he does not keep:
    ruling out every donor more than ``donor.EYES_FAR`` over that leaves 2 of the 32 donors his
    other rules allow (stop 64's rule, which gave him a donor lit hard from one side); donors
    that read at most ``donor.EYES_DARK``, dark-eyed by eye, are not ruled out, which leaves
    27, and every try but his last draws one of those."""
    from fiftyone_faceanon.anonymizers.donor import EYES_DARK, EYES_FAR

    name = "Alan_Dershowitz/Alan_Dershowitz_0001.jpg"
    pipeline = Pipeline(Settings())
    read = read_largest_face(read_rgb(need_shared("lfw") / "images_deepfunneled" / name),
                             pipeline)
    backend, own = pipeline.backend, read.attributes["eyes"]
    eyes = backend.bank.attributes["eyes"]
    assert own + EYES_FAR < 0
    allowed = np.isfinite(backend.cost(read))
    assert allowed.sum() == 32 and (allowed & (eyes <= own + EYES_FAR)).sum() == 2
    assert (allowed & (eyes <= EYES_DARK)).sum() == 27
    rng = pipeline_module.face_rng
    chosen = [backend.choose(read, rng(0, name, 0), rank, None, False,
                             rank >= pipeline_module.WIDEN_FROM)
              for rank in range(Settings().tries - 1)]
    assert all(eyes[chosen] <= EYES_DARK) and any(eyes[chosen] > own + EYES_FAR)


def test_eyes_are_read_for_the_eye_rule_alone():
    """The demo's Grace Hopper keeps her own glasses (``donor.KEEP_FRAMES``): her irises, seen
    through the lenses, are not read, so the eye rule does not hold her to them, while the
    astronaut's are read; and only where she will be verified, since the rule holds for
    verified faces alone: a run without verification does not run the iris network."""
    from fiftyone_faceanon.demo import demo_images

    pipeline = Pipeline(Settings())
    images = demo_images()
    assert np.isnan(read_largest_face(images["grace_hopper.jpg"], pipeline).attributes["eyes"])
    astronaut = images["astronaut.png"]
    assert np.isfinite(read_largest_face(astronaut, pipeline).attributes["eyes"])
    assert np.isnan(read_largest_face(astronaut, pipeline, verified=False).attributes["eyes"])
