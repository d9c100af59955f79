"""Video metrics: the temporal metrics (leaked frames, unreplaced faces, identity stability,
jitter), ``faceanon evaluate`` on a folder with a video, and ``evaluate_samples`` on a FiftyOne
video sample; a pan-zoom clip made from the group photo, the real detector, tracker, donor
backend, judges, encoder and MongoDB."""

from __future__ import annotations

import json
import math
import shutil
import uuid

import numpy as np
import pytest
from click.testing import CliRunner

from clips import pan_zoom_clip, text_as_video, write_clip
from fiftyone_faceanon import faces as F
from fiftyone_faceanon.cli import main
from fiftyone_faceanon.images import records_dir
from fiftyone_faceanon.metrics.identity import judge_thresholds, same_person_means
from fiftyone_faceanon.metrics.temporal import (consecutive, jitter, leaked_frames,
                                                stability, unreplaced_faces, video_scalars)
from fiftyone_faceanon.metrics.video import evaluate_video
from fiftyone_faceanon.videoio import read_frames

FRAMES, STEP = 24, 12


def run_cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- the pure functions, by hand ----------------------------------------------------------------


def test_temporal_functions_by_hand():
    frames, tracks = np.array([0, 1, 1, 2, 3]), np.array([0, 0, 1, 0, 1])
    assert consecutive(frames, tracks).tolist() == [[0, 1], [1, 3]]

    leaks = leaked_frames(np.array([0.9, 0.2, 0.95, 0.99]), np.array([1, 1, 1, 0], bool),
                          np.array([0, 0, 1, 2]), np.array([0, 1, 0, 0]), 0.9,
                          np.array([0.1, 0.1, 0.95, 0.1]), 0.85)
    # 0.9 counts (at the threshold); 0.95 does not: the judge gives the masked face as much
    assert leaks["frames"] == [0] and leaks["count"] == 1 and leaks["uninformative"] == 1
    assert leaks["worst"] == 0.95 and (leaks["worst_frame"], leaks["worst_track"]) == (1, 0)
    assert leaks["mean"] == pytest.approx((0.9 + 0.2 + 0.95) / 3)
    assert (leaks["not_judged"], leaks["judged_frames"], leaks["n"]) == (1, 2, 3)

    detected = [np.array([[0, 0, 10, 10], [50, 50, 60, 60], [2, 0, 6, 4]]),
                np.array([[5, 5, 9, 9]]), np.zeros((0, 4))]
    covered = [np.array([[1, 1, 11, 11]]), np.zeros((0, 4)), np.array([[0, 0, 4, 4]])]
    found = unreplaced_faces(detected, covered)
    # frame 0: IoU 81/119 covers the first box, nothing the second; the third is a
    # part of the record's face (IoU 12/104, centre (4, 2) inside it); frame 1 has no record face
    assert found["count"] == 2 and found["detected"] == 4 and found["frames"] == [0, 1]
    assert found["faces"][0] == {"frame": 0, "box": [50.0, 50.0, 60.0, 60.0]}

    s = stability(np.array([0.99, 0.5, 0.8]), np.array([1, 2, 3]), np.array([0, 0, 1]), 0.7)
    assert s["frames"] == [2] and s["worst"] == 0.5 and s["worst_frame"] == 2
    assert stability(np.array([0.5]), np.array([1]), np.array([0]), None)["frames"] == []
    ref = stability(np.array([0.99, 0.5, 0.8]), np.array([1, 2, 3]), np.array([0, 0, 1]), 0.7,
                    original=np.array([0.6, 0.9, 0.95]))
    assert ref["frames"] == [2] and ref["original_frames"] == [1]
    assert ref["original_worst"] == 0.6 and abs(ref["original_mean"] - 2.45 / 3) < 1e-12

    j = jitter(np.array([0.01, 0.02, 0.0]), np.array([0.012, 0.05, 0.001]), np.array([1, 2, 3]),
               np.array([0, 0, 0]))
    assert j["ratio"] == pytest.approx(0.063 / 0.03)
    assert j["worst"] == pytest.approx(0.03) and j["worst_frame"] == 2
    assert j["frames"] == [2, 3]  # 0.05 > 1.5 * 0.02, 0.001 > 0; 0.012 is within 1.5 * 0.01


# --- a real clip --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pan(fixtures_dir, tmp_path_factory):
    """A 24-frame camera move over the group photo and a photo, anonymized with the defaults
    (donor backend, verification); a corrupt video beside them in both folders; evaluated by
    ``faceanon evaluate`` into ``report``."""
    root = tmp_path_factory.mktemp("vmetrics")
    orig, anon = root / "orig", root / "anon"
    orig.mkdir()
    pan_zoom_clip(fixtures_dir / "group" / "insightface_t1.jpg", orig / "pan.mp4", frames=FRAMES)
    (orig / "still.jpg").write_bytes((fixtures_dir / "faceapi" / "happy.jpg").read_bytes())
    done = run_cli("anonymize", orig, "-o", anon, "--workers", "1")
    # exit code 1 only for a track handled fail-closed (its faces blurred), never an error
    assert "error:" not in done.output, done.output
    assert done.exit_code == ("unverified:" in done.output), done.output
    for folder in (orig, anon):
        text_as_video(folder / "broken.mp4")
    result = run_cli("evaluate", orig, anon, "--out", root / "report.json", "--device", "cpu",
                     "--workers", "1", "--frame-step", STEP)
    return {"orig": orig, "anon": anon, "result": result,
            "report": json.loads((root / "report.json").read_text()),
            "record": json.loads((records_dir(anon) / "pan.mp4.json").read_text())}


@pytest.fixture(scope="module")
def evaluator():
    from fiftyone_faceanon.metrics import Evaluator

    return Evaluator(device="cpu")


@pytest.mark.slow
def test_evaluate_cli_on_a_folder_with_a_video_an_image_and_a_broken_video(pan):
    result, report = pan["result"], pan["report"]
    assert result.exit_code == 1  # the broken video
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "broken.mp4" in errors[0] and report["errors"] == [errors[0][7:]]
    assert [p["file"] for p in report["pairs"]] == ["pan.mp4", "still.jpg"]
    video, still = report["pairs"]
    assert "video" not in still and len(still["faces"]) == 1
    v = video["video"]
    assert v["frames"] == FRAMES and v["frame_step"] == STEP
    assert v["evaluated_frames"] == [t for t in range(0, FRAMES, STEP)
                                     if pan["record"]["frames"][t]]
    assert {(f["frame"], f["track"]) for f in video["faces"]} == {
        (t, f["track"]) for t in v["evaluated_frames"] for f in pan["record"]["frames"][t]}
    # per video: mean and worst frame of the per-frame metrics
    reid = v["per_frame"]["reid_facenet_casia"]
    values = [f["reid_facenet_casia"] for f in video["faces"]]
    assert reid["mean"] == pytest.approx(np.mean(values)) and reid["worst"] == max(values)
    assert reid["worst_frame"] in v["evaluated_frames"]
    # the summary counts the video's evaluated faces and its temporal figures
    assert report["summary"]["detected"]["n"] == len(video["faces"]) + 1
    assert report["summary"]["jitter_ratio"]["n"] == 1
    assert "video pan.mp4" in result.output and "leaked frames facenet_casia" in result.output


@pytest.mark.slow
def test_leaked_frames_of_a_real_anonymization_are_counted_with_their_frames(pan):
    t = pan["report"]["pairs"][0]["video"]["temporal"]
    thresholds = judge_thresholds()
    for judge in ("facenet_casia", "dlib"):
        leaks = t["leaked_frames"][judge]
        assert leaks["threshold"] == thresholds[judge]["far_1e-3"]  # no verification margin
        assert isinstance(leaks["count"], int) and leaks["count"] == len(leaks["frames"])
        assert leaks["frames"] == sorted({f["frame"] for f in leaks["faces"]})
        assert all(f["similarity"] >= leaks["threshold"] for f in leaks["faces"])
        assert leaks["count"] < leaks["judged_frames"] <= FRAMES
        assert -1 <= leaks["mean"] <= leaks["worst"] <= 1


@pytest.mark.slow
def test_stability_is_a_cosine_beside_the_lfw_same_person_mean(pan):
    t = pan["report"]["pairs"][0]["video"]["temporal"]
    mu = same_person_means()
    for judge in ("facenet_casia", "dlib"):
        s = t["stability"][judge]
        assert s["same_person_mean"] == mu[judge] and 0 < mu[judge] < 1
        assert s["n"] > 0 and -1 <= s["worst"] <= s["mean"] <= 1
        assert s["count"] == len(s["frames"])
        assert -1 <= s["original_worst"] <= s["original_mean"] <= 1


@pytest.mark.slow
def test_jitter_is_the_landmark_motion_measured_as_defined(pan):
    """The output's and the original's mean landmark motion, recomputed here with a plain loop:
    dlib's 68 points in the original's box on both frames, per track and consecutive frames,
    mean point displacement over the original's outer-eye-corner distance."""
    record, j = pan["record"], pan["report"]["pairs"][0]["video"]["temporal"]["jitter"]
    frames = zip(read_frames(pan["orig"] / "pan.mp4"), read_frames(pan["anon"] / "pan.mp4"))
    marks = {}
    for t, (o, a) in enumerate(frames):
        for f in record["frames"][t]:
            box = np.array(f["box"])
            marks[t, f["track"]] = F.landmarks_68(o, box), F.landmarks_68(a, box)
    motion = {"orig": [], "anon": []}
    for (t, k), (o, a) in marks.items():
        if (t - 1, k) not in marks:
            continue
        iod = math.dist(o[36], o[45])
        for name, now, before in (("orig", o, marks[t - 1, k][0]), ("anon", a, marks[t - 1, k][1])):
            motion[name].append(np.mean([math.dist(p, q) for p, q in zip(now, before)]) / iod)
    assert j["n"] == len(motion["orig"]) > 0
    assert j["original_mean"] == pytest.approx(np.mean(motion["orig"]), rel=1e-9)
    assert j["output_mean"] == pytest.approx(np.mean(motion["anon"]), rel=1e-9)
    assert j["ratio"] == pytest.approx(np.mean(motion["anon"]) / np.mean(motion["orig"]))
    assert math.isfinite(j["ratio"]) and j["ratio"] > 0


@pytest.mark.slow
def test_the_original_as_its_own_anonymization(pan, evaluator, tmp_path):
    """The original clip scored as the output, with a record that leaves one track out: every
    judged face leaks at cosine 1, the output moves exactly as the original, and the faces of
    the track left out are unreplaced wherever the detector finds them."""
    record = json.loads(json.dumps(pan["record"]))
    counts = {}
    for faces in record["frames"]:
        for f in faces:
            counts[f["track"]] = counts.get(f["track"], 0) + 1
    gone = max(counts, key=counts.get)
    removed = {t: [f["box"] for f in faces if f["track"] == gone]
               for t, faces in enumerate(record["frames"])}
    record["frames"] = [[f for f in faces if f["track"] != gone] for faces in record["frames"]]
    same = tmp_path / "same"
    same.mkdir()
    shutil.copy(pan["orig"] / "pan.mp4", same / "pan.mp4")
    seen = []
    res = evaluate_video(evaluator, pan["orig"] / "pan.mp4", same / "pan.mp4", "pan.mp4", record,
                         frame_step=FRAMES, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(t, FRAMES) for t in range(1, FRAMES + 1)]
    t = res.video["temporal"]
    for judge, leaks in t["leaked_frames"].items():
        assert leaks["count"] == leaks["judged_frames"] > 0, judge
        assert leaks["worst"] == pytest.approx(1.0, abs=1e-5)
        assert len(leaks["faces"]) == leaks["n"]  # every judged face
    for s in t["stability"].values():
        assert -1 <= s["worst"] <= s["mean"] <= 1
    assert t["jitter"]["output_mean"] == t["jitter"]["original_mean"] and t["jitter"]["ratio"] == 1
    assert t["jitter"]["count"] == 0
    # unreplaced: the faces the whole record leaves (the CLI's run), and the track left out
    from fiftyone_faceanon.faces import box_iou

    def lost(face: dict) -> bool:
        boxes = removed[face["frame"]]
        return bool(boxes) and box_iou(np.array([face["box"]]), np.array(boxes)).max() >= 0.3

    found = t["unreplaced_faces"]["faces"]
    full = pan["report"]["pairs"][0]["video"]["temporal"]["unreplaced_faces"]
    assert [f for f in found if not lost(f)] == full["faces"]
    frames = {t for t, boxes in removed.items() if boxes}
    assert len({f["frame"] for f in found if lost(f)}) >= len(frames) // 2 > 0
    assert res.faces and {f["frame"] for f in res.faces} == {0}
    assert res.faces[0]["reid_facenet_casia"] == pytest.approx(1.0, abs=1e-5)


def test_videos_that_do_not_match_are_one_error_line(tmp_path):
    from fiftyone_faceanon.metrics.video import paired_frames
    from fiftyone_faceanon.videoio import VideoError

    grey = [np.full((64, 96, 3), 40 * i, np.uint8) for i in range(4)]
    four = write_clip(grey, tmp_path / "four.mp4", 25)
    three = write_clip(grey[:3], tmp_path / "three.mp4", 25)
    with pytest.raises(VideoError, match="more frames than the original's 3"):
        list(paired_frames(three, four))
    with pytest.raises(VideoError, match="3 frames, fewer than the original's"):
        list(paired_frames(four, three))
    small = write_clip([g[:32, :48] for g in grey], tmp_path / "small.mp4", 25)
    with pytest.raises(VideoError, match="frame size 48x32 differs"):
        list(paired_frames(four, small))


@pytest.mark.slow
def test_a_video_without_its_record_or_with_another_one_is_an_error(pan, evaluator, tmp_path):
    from fiftyone_faceanon.metrics import evaluate_files
    from fiftyone_faceanon.videoio import VideoError

    lonely = tmp_path / "out" / "pan.mp4"
    lonely.parent.mkdir()
    shutil.copy(pan["anon"] / "pan.mp4", lonely)
    [(rel, _, res, error)] = evaluate_files([("pan.mp4", pan["orig"] / "pan.mp4", lonely)],
                                            evaluator, workers=1)
    assert res is None and "no private record" in error and str(lonely) in error
    cut = {**pan["record"], "frames": pan["record"]["frames"][:-1]}
    with pytest.raises(VideoError, match=f"{FRAMES} frames, its record {FRAMES - 1}"):
        evaluate_video(evaluator, pan["orig"] / "pan.mp4", lonely, "pan.mp4", cut)
    with pytest.raises(ValueError, match="unreadable video record"):
        evaluate_video(evaluator, pan["orig"] / "pan.mp4", lonely, "pan.mp4", {"faces": []})


# --- FiftyOne -----------------------------------------------------------------------------------


def video_sample(pan) -> "fo.Sample":
    """The pan clip as a video sample laid out as ``anonymize_samples`` lays it out: the output
    in ``anonymized_filepath`` and, on each frame, the labels ``video_face_labels`` makes from
    the ``faceanon anonymize`` run's sidecar (``index``: the track id)."""
    import fiftyone as fo

    from fiftyone_faceanon import fiftyone_api as api

    sample = fo.Sample(filepath=str(pan["orig"] / "pan.mp4"))
    sample[api.MEDIA_FIELD] = str(pan["anon"] / "pan.mp4")
    for t, (faces, _) in enumerate(api.video_face_labels(pan["anon"] / "pan.mp4", "pan.mp4")):
        sample.frames[t + 1][api.FACES_FIELD] = faces
    return sample


@pytest.mark.slow
def test_evaluate_samples_on_a_video_sample(pan):
    import fiftyone as fo

    from fiftyone_faceanon import fiftyone_api as api

    ds = fo.Dataset(f"faceanon-vmetrics-{uuid.uuid4().hex[:6]}")
    ds.add_sample(video_sample(pan))
    ticks = []
    out = api.evaluate_samples(ds, judges=["facenet_casia", "dlib"], device="cpu", workers=1,
                               frame_step=STEP, progress=lambda d, t: ticks.append((d, t)))
    assert out["evaluated"] == 1 and out["errors"] == []
    assert ticks[-1] == (1, 1) and all(0 <= d <= 1 and t == 1 for d, t in ticks)
    sample = ds.first()
    video = pan["report"]["pairs"][0]
    # the sample fields: the CLI's figures for the same pair
    for name, value in video_scalars(video["video"]["temporal"]).items():
        assert sample[name] == pytest.approx(value), name
    for name in ("reid_facenet_casia", "landmark_nme_68", "delta_e2000"):
        m = video["video"]["per_frame"][name]
        assert sample[name] == pytest.approx(m["worst"])
        assert sample[f"{name}_mean"] == pytest.approx(m["mean"])
        assert sample[f"{name}_worst_frame"] == m["worst_frame"] + 1
    # each evaluated face's metrics on its frame's detection of the same track
    for rec in video["faces"]:
        det = [d for d in sample.frames[rec["frame"] + 1][api.FACES_FIELD].detections
               if d.index == rec["track"]][0]
        assert det["reid_dlib"] == pytest.approx(rec["reid_dlib"])
    assert ds.load_run_results("faceanon_metrics").summary["jitter_ratio"]["n"] == 1
    ds.delete_run("faceanon_metrics")
    assert not ds.has_sample_field("jitter_ratio") and not ds.has_sample_field("reid_dlib_mean")
    assert not ds.has_frame_field("faces.detections.reid_dlib")
    assert ds.has_frame_field(api.FACES_FIELD)
