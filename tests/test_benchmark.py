"""``faceanon benchmark`` on real photos: every output file, tables equal to the metrics suite's
summary for the same pairs, unknown backends skipped, Table VI, radar normalisation monotone."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import need_shared, read_rgb
from fiftyone_faceanon.benchmark import RADAR_AXES, radar_scores, run_benchmark, spec_settings
from fiftyone_faceanon.cli import main
from fiftyone_faceanon.photometric import PhotometricSettings

GROUPS = r"^(John_\w+)/"
TABLE_FILES = ["table_II.csv", "table_III.csv", "table_IV.csv", "table_V.csv",
               "table_timings.csv"]


@pytest.fixture(scope="module")
def evaluator():
    from fiftyone_faceanon.metrics import Evaluator

    return Evaluator(device="cpu")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Three photos each of two people from the dlib_johns fixtures, linked into a folder."""
    johns = need_shared("fixtures/dlib_johns")
    folder = tmp_path_factory.mktemp("bench_data")
    for person in ("John_Salley", "John_Savage"):
        (folder / person).mkdir()
        for src in sorted((johns / person).glob("*.jpg"))[:3]:
            (folder / person / src.name).symlink_to(src)
    return folder


@pytest.fixture(scope="module")
def bench(data, evaluator, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_out")
    results = run_benchmark(data, out, ["blur", "pixelate", "nosuch"], limit=4, groups=GROUPS,
                            device="cpu", evaluator=evaluator)
    return out, results


def test_every_file_is_written(bench):
    out, results = bench
    for name in ["results.json", "tables.md", "radar.png", "contact_sheet.png", *TABLE_FILES]:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert json.loads((out / "results.json").read_text())["tables"].keys() == set(
        results["tables"])
    # --limit 4: the first four sorted images, each anonymized by both backends with a sidecar
    staged = sorted(p.relative_to(out / "originals").as_posix()
                    for p in (out / "originals").rglob("*.jpg"))
    assert len(staged) == 4 and results["images"] == 4
    for backend in ("blur", "pixelate"):
        for rel in staged:
            assert (out / backend / rel).is_file() and (out / backend / f"{rel}.json").is_file()
        assert results["faces"][backend] == 4
    # contact sheet: header + one 128 px row per face, columns original, blur, pixelate
    sheet = np.asarray(Image.open(out / "contact_sheet.png"))
    assert sheet.shape == (24 + 4 * 128, 3 * 128, 3)
    assert results["contact_sheet"] == staged
    radar = Image.open(out / "radar.png")
    assert radar.size[0] > 300 and radar.size[1] > 300
    md = (out / "tables.md").read_text()
    for title in ("Table II", "Table III", "Table IV", "Table V", "Timings per stage",
                  "group `John_Salley`", "group `John_Savage`", "Radar scores"):
        assert title in md
    assert "| blur |" in md and "| pixelate |" in md


def test_missing_backend_is_skipped_not_a_crash(bench):
    out, results = bench
    assert "unknown backend 'nosuch'" in results["skipped"]["nosuch"]
    assert not (out / "nosuch").exists()
    assert set(results["tables"]["II"]["rows"]) == {"blur", "pixelate"}
    assert "skipped nosuch: unknown backend" in (out / "tables.md").read_text()


def test_tables_equal_the_metrics_suite_summary(bench, evaluator):
    from fiftyone_faceanon.metrics import evaluate_dirs

    out, results = bench
    report = evaluate_dirs(out / "originals", out / "blur", GROUPS, evaluator)
    expected = {"all": report["summary"], **report["groups"]}
    assert set(expected) == {"all", "John_Salley", "John_Savage"}
    compared = 0
    for name in ("II", "III", "IV", "V"):
        table = results["tables"][name]
        with (out / f"table_{name}.csv").open() as f:
            csv_rows = {(r["group"], r["backend"]): r for r in csv.DictReader(f)}
        for group, summary in expected.items():
            row = (table["rows"] if group == "all" else table["groups"][group])["blur"]
            csv_row = csv_rows[(group, "blur")]
            for _, metric, _ in table["columns"]:
                if metric.startswith("time_"):
                    continue
                want = summary.get(metric)
                if want is None or want["mean"] is None:  # e.g. an uncalibrated re-ID rate
                    assert row.get(metric) is None or row[metric]["mean"] is None
                    continue
                assert row[metric]["n"] == want["n"]
                assert row[metric]["mean"] == pytest.approx(want["mean"], rel=1e-6, abs=1e-9)
                assert float(csv_row[f"{metric}_mean"]) == pytest.approx(want["mean"], rel=1e-6,
                                                                         abs=1e-9)
                if want["std"] is not None:
                    assert row[metric]["std"] == pytest.approx(want["std"], rel=1e-6, abs=1e-9)
                compared += 1
    blur = results["tables"]["II"]["rows"]["blur"]
    for metric in ("fid_facenet", "detected", "reid_dlib", "reid_facenet_casia",
                   "landmark_nme_68"):
        assert blur[metric]["mean"] is not None, metric
    assert compared >= 3 * 10  # overall and both groups, every available metric of II-V
    # timings: every stage of every anonymized image
    timing = results["tables"]["timings"]["rows"]["blur"]
    assert timing["time_detect"]["n"] == 4 and timing["time_per_image"]["mean"] > 0


def test_cli_reports_unknown_backends_and_exits_cleanly(data, tmp_path):
    result = CliRunner().invoke(main, ["benchmark", str(data), "--backends", "nosuch,alsonot",
                                       "--out", str(tmp_path / "out")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "skipped nosuch: unknown backend 'nosuch'" in result.output
    assert "skipped alsonot" in result.output
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(results["skipped"]) == {"nosuch", "alsonot"}


def test_ablation_switches_each_step_on_in_turn(data, evaluator, tmp_path):
    results = run_benchmark(data, tmp_path, [], ablation="ksame", limit=1, device="cpu",
                            evaluator=evaluator)
    table = results["tables"]["VI"]
    assert list(table["rows"]) == ["landmarks only", "+ relighting", "+ Laplacian pyramid",
                                   "+ colour transfer"]
    assert (tmp_path / "table_VI.csv").is_file()
    rel = "John_Salley/" + sorted(p.name for p in (data / "John_Salley").iterdir())[0]
    images = [read_rgb(tmp_path / "ablation" / "ksame" / v / rel)
              for v in ("landmarks_only", "relighting", "laplacian_pyramid")]
    images.append(read_rgb(tmp_path / "ksame" / rel))  # the full pipeline: the ksame run itself
    for a, b in zip(images, images[1:]):
        assert np.abs(a.astype(int) - b).sum() > 0  # each step changes the output
    for stats in table["rows"].values():
        assert stats["si_mse"]["n"] == 1 and stats["delta_e2000"]["mean"] is not None


# --- radar normalisation --------------------------------------------------------------------


def summary_of(**means) -> dict:
    return {k: {"mean": v, "std": 0.0, "n": 10} for k, v in means.items()}


BASE = dict(fid_facenet=1.2, reid_dlib=0.85, reid_facenet_casia=0.4, reid_rate_dlib=0.7,
            reid_rate_facenet_casia=0.3, landmark_nme_68=0.08,
            landmark_nme_51=0.09, emotion_match=0.6, si_mse=0.03, si_l2=0.04, delta_e2000=7.0)
HIGHER_IS_BETTER = {"emotion_match"}


def test_radar_better_everywhere_draws_outside():
    rng = np.random.default_rng(0)
    for _ in range(200):
        worse = {k: v * rng.uniform(0.5, 1.5) for k, v in BASE.items()}
        worse.update({k: min(v, 1.0) for k, v in worse.items() if k.startswith("reid_rate_")})
        worse["emotion_match"] = rng.uniform(0.0, 0.9)
        better = {}
        for k, v in worse.items():
            step = rng.uniform(0.05, 0.9)
            better[k] = v + step * (1 - v) if k in HIGHER_IS_BETTER else v * (1 - step)
        s_w, s_b = radar_scores(summary_of(**worse)), radar_scores(summary_of(**better))
        for axis in RADAR_AXES:
            assert 0.0 <= s_w[axis] < s_b[axis] <= 1.0, (axis, worse, better)


def test_radar_each_axis_moves_with_its_own_metrics_only():
    base = radar_scores(summary_of(**BASE))
    for metric, axis in [("fid_facenet", "image quality"), ("reid_dlib", "privacy"),
                         ("reid_rate_facenet_casia", "privacy"),
                         ("landmark_nme_51", "geometry"), ("si_l2", "lighting"),
                         ("delta_e2000", "colour")]:
        moved = radar_scores(summary_of(**{**BASE, metric: BASE[metric] / 2}))
        assert moved[axis] > base[axis]
        assert all(moved[a] == base[a] for a in RADAR_AXES if a != axis)


def test_radar_extremes_and_missing_metrics():
    ideal = radar_scores(summary_of(fid_facenet=0.0, reid_dlib=0.0, reid_facenet_casia=-0.2,
                                    reid_rate_dlib=0.0,
                                    landmark_nme_68=0.0, landmark_nme_51=0.0, emotion_match=1.0,
                                    si_mse=0.0, si_l2=0.0, delta_e2000=0.0))
    assert all(v == 1.0 for v in ideal.values())
    partial = radar_scores(summary_of(reid_dlib=1.0, delta_e2000=10.0))
    assert partial["privacy"] == 0.0 and partial["colour"] == 0.5
    assert math.isnan(partial["image quality"]) and math.isnan(partial["lighting"])


def test_specs_split_on_semicolons_else_on_commas_between_backends():
    from fiftyone_faceanon.cli.benchmark import split_specs

    assert split_specs("donor:verify=1,geometry=0;ksame") == ["donor:verify=1,geometry=0",
                                                               "ksame"]
    assert split_specs("donor,ksame, blur") == ["donor", "ksame", "blur"]
    # without a semicolon an option stays with its spec, where it once became a backend
    assert split_specs("donor:verify=1,seed=1") == ["donor:verify=1,seed=1"]
    assert split_specs("donor:verify=1,seed=2,ksame,dp68:geometry=0") == [
        "donor:verify=1,seed=2", "ksame", "dp68:geometry=0"]


def test_spec_options_set_the_settings_and_unknown_ones_are_refused():
    s = spec_settings("donor:verify=1,seed=2,geometry=0.75,occluders=0,levels=3")
    assert (s.backend, s.verify, s.seed, s.geometry, s.occluders) == ("donor", True, 2, 0.75,
                                                                      False)
    assert s.photometric == PhotometricSettings(levels=3)
    plain = spec_settings("ksame")
    assert (plain.verify, plain.seed, plain.occluders) == (False, 0, True)
    assert plain.photometric == PhotometricSettings()
    assert spec_settings("donor:detail=0").photometric == PhotometricSettings(most_detail=None)
    with pytest.raises(ValueError, match="unknown option 'sed'"):
        spec_settings("donor:sed=2")
