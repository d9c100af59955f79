"""The ``@faceanon/faceanon`` plugin through real fiftyone: the session's own MongoDB and plugins
folder (conftest.py), real fixture photos, each operator run immediately and delegated."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import uuid
from pathlib import Path

import fiftyone as fo
import fiftyone.operators as foo
import pytest
from fiftyone import ViewField as F
from fiftyone.operators.delegated import DelegatedOperationService

from fiftyone_faceanon import fiftyone_api as api
from fiftyone_faceanon.metrics.identity import judge_thresholds
from fiftyone_faceanon.pipeline import Settings

PLUGINS = Path(fo.config.plugins_dir)  # the session's own (conftest.py)
PREFIX = "@faceanon/faceanon/"
OPERATORS = ("anonymize_faces", "compute_anonymization_metrics", "flag_reidentifiable_faces",
             "export_anonymized_release")
PHOTOS = ("faceapi/happy.jpg", "faceapi/white.png")  # white.png: no face


def sha(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def plugin():
    api.install_plugin(PLUGINS)
    return PLUGINS / "faceanon"


def make_dataset(fixtures_dir: Path, folder: Path, tag: str) -> fo.Dataset:
    """The fixture photos and a corrupt file written into ``folder``."""
    bad = folder / f"{tag}-corrupt.jpg"
    bad.write_bytes(b"\xff\xd8 this is not a jpeg")
    ds = fo.Dataset(f"faceanon-test-{tag}-{uuid.uuid4().hex[:6]}")
    ds.add_samples([fo.Sample(filepath=str(fixtures_dir / p)) for p in PHOTOS]
                   + [fo.Sample(filepath=str(bad))])
    return ds


def run(uri: str, ds: fo.Dataset, params: dict, delegated: bool):
    """Run an operator immediately, or queue it and let the delegated service run it."""
    result = foo.execute_operator(PREFIX + uri, ctx={"dataset": ds, "view": ds.view(),
                                                     "params": params},
                                  request_delegation=delegated)
    if not delegated:
        assert result.error is None, result.error
        return result.result
    service = DelegatedOperationService()
    assert result.delegated
    service.execute_queued_operations(dataset_name=ds.name)
    doc = service.get(result.result["id"])
    assert doc.run_state == "completed", (doc.run_state, doc.status)
    ds.reload()
    return doc.result.result


def test_plugin_is_listed(plugin):
    for name in OPERATORS:
        assert foo.operator_exists(PREFIX + name), name
    out = subprocess.run([str(Path(sys.executable).parent / "fiftyone"), "operators", "list"],
                         capture_output=True, text=True, timeout=120)
    listed = out.stdout + out.stderr
    for name in OPERATORS:
        assert PREFIX + name in listed, listed


@pytest.fixture(scope="module", params=[False, True], ids=["immediate", "delegated"])
def anonymized(request, plugin, fixtures_dir, tmp_path_factory):
    """A dataset anonymized through the operator, with what the test needs to check it."""
    delegated = request.param
    folder = tmp_path_factory.mktemp("deleg" if delegated else "immed")
    ds = make_dataset(fixtures_dir, folder, "deleg" if delegated else "immed")
    before = {p: sha(fixtures_dir / p) for p in PHOTOS}
    out = folder / f"out-{ds.name}"
    summary = run("anonymize_faces", ds, {"output_dir": str(out), "backend": "blur",
                                          "verify": False}, delegated)
    yield {"ds": ds, "out": out, "summary": summary, "before": before, "delegated": delegated}
    ds.delete()


def test_anonymize_fields_and_errors(anonymized, fixtures_dir):
    ds, out, summary = anonymized["ds"], anonymized["out"], anonymized["summary"]
    assert (summary["ok"], summary["no_face"], summary["skipped"], summary["error"]) == (1, 1, 0, 1)
    assert "corrupt.jpg: " in summary["errors"]
    assert api.MEDIA_FIELD in ds.app_config.media_fields
    for p in PHOTOS:
        s = ds.one(F("filepath") == str(fixtures_dir / p))
        dst = Path(s[api.MEDIA_FIELD])
        assert dst.parent == out.resolve() and dst.is_file()
        assert s[api.ERROR_FIELD] is None and api.ERROR_TAG not in s.tags
        n = 0 if p.endswith("white.png") else 1
        assert len(s.faces.detections) == n and len(s.face_landmarks.keypoints) == n
        for det, kp in zip(s.faces.detections, s.face_landmarks.keypoints):
            x, y, w, h = det.bounding_box
            assert 0 <= x < x + w <= 1 and 0 <= y < y + h <= 1 and det.confidence > 0.9
            assert len(kp.points) == 68
            assert all(x - 0.1 <= px <= x + w + 0.1 and y - 0.1 <= py <= y + h + 0.1
                       for px, py in kp.points)
        assert sha(dst) != sha(s.filepath)
    bad = ds.one(F("filepath").ends_with("corrupt.jpg"))
    assert "not a readable image" in bad[api.ERROR_FIELD] or "corrupt" in bad[api.ERROR_FIELD]
    assert api.ERROR_TAG in bad.tags and bad[api.MEDIA_FIELD] is None


def test_rerun_does_no_work_twice(anonymized, fixtures_dir):
    ds, out = anonymized["ds"], anonymized["out"]
    stamps = {p: p.stat().st_mtime_ns for p in out.iterdir()}
    again = api.anonymize_samples(ds, out, backend="blur", verify=False)
    assert (again["ok"], again["no_face"], again["skipped"], again["error"]) == (0, 0, 2, 1)
    assert {p: p.stat().st_mtime_ns for p in out.iterdir()} == stamps
    assert {p: sha(fixtures_dir / p) for p in PHOTOS} == anonymized["before"]


def test_release_has_labels_and_no_original_path(anonymized, fixtures_dir):
    ds, delegated = anonymized["ds"], anonymized["delegated"]
    name = f"{ds.name}-release"
    result = run("export_anonymized_release", ds, {"name": name}, delegated)
    assert result == {"name": name, "samples": 2}
    release = fo.load_dataset(name)
    try:
        originals = {str(fixtures_dir / p) for p in PHOTOS} | set(ds.values("filepath"))
        text = str([s.to_dict() for s in release])
        assert not any(o in text or Path(o).name in text for o in originals)
        assert not any(f in release.get_field_schema() for f in api.BOOKKEEPING_FIELDS)
        assert sorted(release.values("filepath")) == sorted(ds.exists(api.MEDIA_FIELD)
                                                             .values(api.MEDIA_FIELD))
        assert release.count("faces.detections") == ds.count("faces.detections") == 1
        assert release.count("face_landmarks.keypoints") == 1
    finally:
        release.delete()


def test_metrics_run_fields_and_flags(anonymized):
    ds, delegated = anonymized["ds"], anonymized["delegated"]
    result = run("compute_anonymization_metrics", ds, {"run_key": "anon_metrics"}, delegated)
    assert result["evaluated"] == 2 and result["errors"] == []
    assert "anon_metrics" in ds.list_runs()
    summary = ds.load_run_results("anon_metrics").summary
    assert summary["reid_facenet_casia"]["n"] == 1 and summary["detected"]["n"] == 1
    no_face = ds.one(F("filepath").ends_with("white.png"))
    assert all(no_face[name] is None for name in api.METRIC_FIELDS)
    for s in ds.match(F("faces.detections").length() > 0):
        for name in api.METRIC_FIELDS:
            assert isinstance(s[name], float), name
        assert -1 <= s.reid_facenet_casia <= 1 and s.detected in (0.0, 1.0)
        det = s.faces.detections[0]
        assert det["reid_facenet_casia"] == s.reid_facenet_casia  # one face: it is the worst
        assert det["delta_e2000"] == s.delta_e2000 >= 0
    # flag: the judge's threshold at the highest similarity tags exactly those samples
    top = max(ds.values("reid_facenet_casia"), key=lambda v: -2 if v is None else v)
    counts = run("flag_reidentifiable_faces", ds,
                 {"thresholds": {"facenet_casia": top}, "tag": "reid"}, delegated)
    expected = len(ds.match((F("reid_facenet_casia") >= top)
                            | (F("reid_found_facenet_casia") >= top)))
    assert counts["facenet_casia"] == expected >= 1
    assert ds.count_sample_tags().get("reid") == counts["flagged"] >= expected
    # the run goes with its fields
    ds.delete_run("anon_metrics")
    assert "anon_metrics" not in ds.list_runs()
    assert not ds.has_field("reid_facenet_casia")
    assert not ds.has_field("faces.detections.reid_facenet_casia")


def test_python_call_and_form_validation(plugin, fixtures_dir, tmp_path):
    ds = make_dataset(fixtures_dir, tmp_path, "form")
    try:
        # the operator object is callable with the API function's parameters
        op = foo.get_operator(PREFIX + "export_anonymized_release")
        with pytest.raises(foo.executor.ExecutionError, match="nothing anonymized yet"):
            op(ds.limit(2), name=f"{ds.name}-empty")
        assert not fo.dataset_exists(f"{ds.name}-empty")
        a_file = tmp_path / "file"
        a_file.write_text("x")
        with pytest.raises(foo.executor.ExecutionError) as err:
            foo.execute_operator(PREFIX + "anonymize_faces", ctx={
                "dataset": ds, "view": ds.view(), "params": {"output_dir": str(a_file)}})
        assert "is a file" in str(err.value) or "Validation" in str(err.value)
        assert not ds.has_field(api.MEDIA_FIELD)
    finally:
        ds.delete()


def test_workers_give_the_same_output_and_fields(plugin, fixtures_dir, tmp_path):
    """anonymize_samples in two processes and in one: the same output and sidecar bytes, the
    same fields, errors and summary."""
    ds = make_dataset(fixtures_dir, tmp_path, "workers")
    ds.add_samples([fo.Sample(filepath=str(fixtures_dir / "faceapi" / p))
                    for p in ("bbt1.jpg", "sad.jpg")])

    def snapshot(out: Path) -> dict:
        ds.reload()
        found = {}
        for s in ds:
            dst = s[api.MEDIA_FIELD]
            files = None if dst is None else (Path(dst).relative_to(out.resolve()).as_posix(),
                                              sha(dst), sha(dst + ".json"))
            faces = [(d.bounding_box, d.confidence, d.index, d.donor, d.geometry, d.tries,
                      d.verification, d.similarity_facenet_casia, d.similarity_dlib)
                     for d in s.faces.detections] if s.faces else None
            points = [k.points for k in s.face_landmarks.keypoints] if s.face_landmarks else None
            found[s.id] = (files, faces, points, s[api.ERROR_FIELD], sorted(s.tags))
        return found

    try:
        summaries, snapshots = [], []
        for workers in (1, 2):
            out = tmp_path / f"w{workers}"
            summaries.append(api.anonymize_samples(ds, out, seed=3, workers=workers))
            snapshots.append(snapshot(out))
        assert summaries[0] == summaries[1]
        # each face's donor is seeded by its sample's id, new with every dataset: a face can
        # fail verification in one run of this test and pass in the next (ok or unverified)
        assert (summaries[0]["ok"] + summaries[0]["unverified"], summaries[0]["no_face"],
                summaries[0]["error"]) == (3, 1, 1)
        assert snapshots[0] == snapshots[1]
        assert sum(len(f[1] or []) for f in snapshots[0].values()) >= 4  # bbt1: several faces
        # The per-face fields of the sidecar and the private record are on every detection:
        # a donor, the geometry strength, tries and each judge's final similarity.
        limits = {j: t["far_1e-3"] for j, t in judge_thresholds().items()}
        for faces in (f[1] for f in snapshots[0].values() if f[1]):
            for _, _, _, donor, geometry, tries, status, casia, dlib in faces:
                assert donor and 0.5 <= geometry <= 1.0 and 1 <= tries <= Settings().tries
                assert status == "verified", status
                assert casia < limits["facenet_casia"] and dlib < limits["dlib"]
    finally:
        ds.delete()


def test_ray_engine_gives_the_output_and_fields_of_the_local_engine(plugin, local_ray,
                                                                    fixtures_dir, tmp_path):
    """anonymize_faces (immediate) and compute_anonymization_metrics (delegated) on Ray: the
    output bytes, labels, errors, metric fields and summaries of the local engine."""

    def fields(ds: fo.Dataset) -> dict:
        ds.reload()
        found = {}
        for s in ds:
            labels = [(d.bounding_box, d.confidence, {n: d[n] for n in api.METRIC_FIELDS
                                                      if d.has_field(n)})
                      for d in s.faces.detections] if s.faces else None
            points = [k.points for k in s.face_landmarks.keypoints] if s.face_landmarks else None
            found[Path(s.filepath).name.rsplit("-", 1)[-1]] = (  # the corrupt file: <tag>-corrupt.jpg
                s[api.MEDIA_FIELD] and sha(s[api.MEDIA_FIELD]), labels, points,
                s[api.ERROR_FIELD] and s[api.ERROR_FIELD].split(": ", 1)[-1], sorted(s.tags),
                [s[n] for n in api.METRIC_FIELDS])
        return found

    local = make_dataset(fixtures_dir, tmp_path, "engine-local")
    on_ray = make_dataset(fixtures_dir, tmp_path, "ray")
    try:
        # ksame: an output that does not depend on the sample ids, which differ between the two
        # datasets and seed each face's donor choice (verification stays on).
        summaries = {"local": (api.anonymize_samples(local, tmp_path / "local", "ksame", seed=3,
                                                     workers=1),
                               api.evaluate_samples(local, workers=1))}
        anonymized = run("anonymize_faces", on_ray, {"output_dir": str(tmp_path / "ray"),
                                                     "backend": "ksame", "seed": 3,
                                                     "engine": "ray", "workers": 2},
                         delegated=False)
        evaluated = run("compute_anonymization_metrics", on_ray, {"engine": "ray"},
                        delegated=True)
        assert anonymized["error"] == summaries["local"][0]["error"] == 1
        assert {k: anonymized[k] for k in ("ok", "no_face", "skipped")} == {
            k: summaries["local"][0][k] for k in ("ok", "no_face", "skipped")}
        assert evaluated["evaluated"] == summaries["local"][1]["evaluated"] == 2
        assert (on_ray.load_run_results("faceanon_metrics").summary
                == local.load_run_results("faceanon_metrics").summary)
        assert fields(on_ray) == fields(local)
    finally:
        local.delete()
        on_ray.delete()
