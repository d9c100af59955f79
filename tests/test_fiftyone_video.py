"""FiftyOne video datasets through ``anonymize_samples``, the ``anonymize_faces`` operator and the
release: a clip made at test time from a photo of two people (the real detector, tracker, donor
backend, judges and encoder), a truncated copy of it, and the session's private database and
plugins folder (conftest.py)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import fiftyone as fo
import numpy as np
import pytest
from fiftyone import ViewField as F

from clips import pan_zoom_clip, truncated_copy
from fiftyone_faceanon import fiftyone_api as api
from fiftyone_faceanon.images import records_dir
from fiftyone_faceanon.videoio import probe
from test_fiftyone_plugin import plugin, run, sha  # noqa: F401  (plugin: a fixture)

FRAMES = 24


@pytest.fixture(scope="module")
def clips(fixtures_dir, tmp_path_factory) -> dict[str, Path]:
    """A camera move over a photo of two people, and its first half as a cut download."""
    folder = tmp_path_factory.mktemp("clips")
    pan = pan_zoom_clip(fixtures_dir / "face_recognition" / "examples" / "two_people.jpg",
                        folder / "pan.mp4", frames=FRAMES)
    return {"pan": pan, "cut": truncated_copy(pan, folder / "cut.mp4", 0.5)}


@pytest.fixture(scope="module")
def video_run(clips, tmp_path_factory):
    """A video dataset (the clip, the cut clip) anonymized by ``anonymize_samples`` with the
    defaults but ``detect_every=4``, its progress calls recorded."""
    ds = fo.Dataset(f"faceanon-test-video-{uuid.uuid4().hex[:6]}")
    ds.add_samples([fo.Sample(filepath=str(clips["pan"])), fo.Sample(filepath=str(clips["cut"]))])
    out = tmp_path_factory.mktemp("video") / f"out-{ds.name}"
    calls: list[tuple[float, int]] = []
    summary = api.anonymize_samples(ds, out, detect_every=4, workers=1,
                                    progress=lambda done, total: calls.append((done, total)))
    yield {"ds": ds, "out": out, "summary": summary, "calls": calls}
    ds.delete()


def test_video_sample_gets_the_anonymized_video_and_frame_labels(video_run, clips):
    ds, out, summary = video_run["ds"], video_run["out"], video_run["summary"]
    assert ds.media_type == "video"
    assert (summary["ok"] + summary["unverified"], summary["error"]) == (1, 1), summary
    sample = ds.one(F("filepath") == str(clips["pan"]))
    dst = Path(sample[api.MEDIA_FIELD])
    assert dst == out.resolve() / f"{sample.id}.mp4" and sample[api.ERROR_FIELD] is None
    info, source = probe(dst), probe(clips["pan"])
    assert (info.frames, info.width, info.height) == (source.frames, source.width, source.height)
    assert sha(dst) != sha(clips["pan"])

    public = json.loads(dst.with_name(dst.name + ".json").read_text())
    private = json.loads((records_dir(out) / f"{dst.name}.json").read_text())
    assert public["settings"]["video"]["tracking"]["detect_every"] == 4
    assert len(sample.frames) == len(public["frames"]) == FRAMES
    tracks = {t["track"]: t for t in public["tracks"]}
    similarity = {t["track"]: t["similarity"] for t in private["tracks"]}
    assert len(tracks) >= 2  # two people
    width, height = public["video"]["width"], public["video"]["height"]
    seen = set()
    for t, faces in enumerate(public["frames"]):
        frame = sample.frames[t + 1]
        detections, keypoints = frame[api.FACES_FIELD].detections, frame[api.LANDMARKS_FIELD].keypoints
        # the track id is the index, on the detection and on its landmarks
        assert [d.index for d in detections] == [k.index for k in keypoints] == [
            f["track"] for f in faces]
        for det, kp, face in zip(detections, keypoints, faces):
            x0, y0, x1, y1 = face["box"]
            assert np.allclose(det.bounding_box, [x0 / width, y0 / height, (x1 - x0) / width,
                                                  (y1 - y0) / height])
            assert np.allclose(kp.points, np.array(face["landmarks"]) / [width, height])
            track = tracks[face["track"]]
            assert (det.donor, det.geometry, det.tries, det.verification, det.source) == (
                track["donor"], track["geometry"], track["tries"], track["status"],
                face["source"])
            assert {j: det[f"similarity_{j}"] for j in similarity[face["track"]]} == similarity[
                face["track"]]
            seen.add(det.index)
    assert seen == set(tracks)
    # the labels are the anonymized geometry, not the original's (which the private record has)
    original = [f["box"] for faces in private["frames"] for f in faces]
    anonymized = [f["box"] for faces in public["frames"] for f in faces]
    assert original != anonymized

    cut = ds.one(F("filepath") == str(clips["cut"]))
    assert "cut.mp4" in cut[api.ERROR_FIELD] and "truncated" in cut[api.ERROR_FIELD]
    assert api.ERROR_TAG in cut.tags and cut[api.MEDIA_FIELD] is None
    assert cut[api.ERROR_FIELD] in summary["errors"]


def test_progress_is_reported_per_frame(video_run):
    calls = video_run["calls"]
    done = [d for d, _ in calls]
    assert all(total == 2 for _, total in calls) and calls[-1] == (2, 2)
    assert done == sorted(done)
    # between the whole samples, fractions of a video: tracking the first half, rendering the
    # second, one frame of FRAMES at a time
    fractions = [d for d in done if d != int(d)]
    assert fractions and any(d % 1 > 0.5 for d in fractions)
    assert all(round(2 * FRAMES * (d % 1)) == pytest.approx(2 * FRAMES * (d % 1))
               for d in fractions)


def test_operator_reruns_nothing_and_sets_the_same_labels(video_run, plugin):  # noqa: F811
    """The delegated operator with the run's settings: every sample already done (skipped, or
    unverified again, its labels set again from its records), the cut one failing again; no
    file rewritten."""
    ds, out = video_run["ds"], video_run["out"]
    labels = ds.values("frames.faces")
    stamps = {p: p.stat().st_mtime_ns for p in out.iterdir()}
    result = run("anonymize_faces", ds, {"output_dir": str(out), "detect_every": 4,
                                         "video_quality": 23, "strip_audio": False,
                                         "workers": 1}, delegated=True)
    # a video with a track handled fail-closed stays counted as unverified on a rerun
    first = video_run["summary"]
    assert (result["ok"], result["skipped"], result["unverified"], result["error"]) == (
        0, first["ok"], first["unverified"], 1), result
    assert "cut.mp4" in result["errors"]
    assert {p: p.stat().st_mtime_ns for p in out.iterdir()} == stamps
    again = ds.values("frames.faces")
    assert [[[(d.index, d.bounding_box, d.donor) for d in f.detections] for f in s]
            for s in again] == [[[(d.index, d.bounding_box, d.donor) for d in f.detections]
                                 for f in s] for s in labels]


def test_video_release_has_the_anonymized_video_and_frame_labels_only(video_run, clips,
                                                                      tmp_path):
    ds = video_run["ds"]
    name = f"{ds.name}-release"
    release = api.export_anonymized_release(ds, name, export_dir=tmp_path / "export")
    try:
        assert release.media_type == "video" and len(release) == 1
        (anonymized,) = ds.exists(api.MEDIA_FIELD).values(api.MEDIA_FIELD)
        assert release.values("filepath") == [anonymized]
        assert release.count("frames") == FRAMES
        assert release.count("frames.faces.detections") == ds.count("frames.faces.detections") > 0
        assert (release.count("frames.face_landmarks.keypoints")
                == ds.count("frames.faces.detections"))
        originals = {str(clips["pan"]), str(clips["cut"]), clips["pan"].name, clips["cut"].name}
        text = json.dumps([s.to_dict(include_frames=True) for s in release])
        assert not any(o in text for o in originals)
        assert not any(f in release.get_field_schema() for f in api.BOOKKEEPING_FIELDS)
        exported = (tmp_path / "export" / "frames.json").read_text()
        assert not any(o in exported for o in originals)
        media = list((tmp_path / "export" / "data").iterdir())
        assert [sha(p) for p in media] == [sha(anonymized)]
    finally:
        release.delete()


def test_grouped_dataset_with_images_and_videos(clips, fixtures_dir, tmp_path):
    """A group of an image slice and a video slice: each sample anonymized as its media type
    is; a release is made per media type."""
    ds = fo.Dataset(f"faceanon-test-group-{uuid.uuid4().hex[:6]}")
    try:
        ds.add_group_field("group", default="photo")
        group = fo.Group()
        ds.add_samples([
            fo.Sample(filepath=str(fixtures_dir / "faceapi" / "happy.jpg"),
                      group=group.element("photo")),
            fo.Sample(filepath=str(clips["pan"]), group=group.element("clip"))])
        summary = api.anonymize_samples(ds, tmp_path / "out", backend="blur", verify=False,
                                        workers=1)
        assert (summary["ok"], summary["error"]) == (2, 0), summary
        photo = ds.select_group_slices(media_type="image").first()
        clip = ds.select_group_slices(media_type="video").first()
        assert Path(photo[api.MEDIA_FIELD]).suffix == ".jpg"
        assert Path(clip[api.MEDIA_FIELD]).suffix == ".mp4"
        assert len(photo[api.FACES_FIELD].detections) == 1
        assert sum(len(f[api.FACES_FIELD].detections) for f in clip.frames.values()) >= FRAMES
        with pytest.raises(ValueError, match="grouped"):
            api.export_anonymized_release(ds, f"{ds.name}-release")
        release = api.export_anonymized_release(ds.select_group_slices(media_type="video"),
                                                f"{ds.name}-clips")
        assert release.media_type == "video" and len(release) == 1
        release.delete()
    finally:
        ds.delete()


def test_metrics_land_on_the_frame_labels_of_anonymize_samples(video_run):
    """``evaluate_samples`` on the dataset ``anonymize_samples`` laid out: the per-face metrics
    on the frames' detections of the same track, the worst on the sample."""
    ds = video_run["ds"]
    result = api.evaluate_samples(ds, judges=["facenet_casia", "dlib"], workers=1,
                                  frame_step=8)
    assert result["evaluated"] == 1 and result["errors"] == []
    sample = ds.exists(api.MEDIA_FIELD).first()
    scored = [d for frame in sample.frames.values() for d in frame[api.FACES_FIELD].detections
              if d.has_field("reid_dlib") and d["reid_dlib"] is not None]
    assert scored and {d.index for d in scored} <= {
        d.index for f in sample.frames.values() for d in f[api.FACES_FIELD].detections}
    assert sample["reid_dlib"] == pytest.approx(max(d["reid_dlib"] for d in scored))
    ds.delete_run("faceanon_metrics")
