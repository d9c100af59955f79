"""Backend comparison: the paper's Tables II-VI, its Fig. 5 radar plot and a contact sheet.

For every requested backend the images of ``DATA`` (linked into ``OUT/originals`` so that
``--limit`` can take the first N) are anonymized into ``OUT/<backend>/`` with
:func:`fiftyone_faceanon.batch.anonymize_files` (which resumes) and scored with
:func:`fiftyone_faceanon.metrics.evaluate_dirs` (faces from the sidecars). A backend that is
unknown or raises ``BackendUnavailable`` is listed in ``skipped`` with the reason.

Tables (rows: backends; cells: the metrics suite's ``{"mean", "std", "n"}`` over faces):

- II: ``fid_facenet``, ``detected`` (%), ``reid_<judge>`` mean +- std and ``reid_rate_<judge>``
  (%) per identity judge, ``landmark_nme_68`` (pose), ``time_per_image`` (s);
- III: ``landmark_nme_51``, ``emotion_match`` (%);
- IV: ``si_mse``, ``si_l2``;
- V: ``mse_l``, ``mse_ab``, ``delta_e2000``;
- VI (``ablation=BACKEND``): that backend with the photometric steps switched on in turn
  (landmarks only / + relighting / + Laplacian pyramid / + colour transfer), paper Table VI's
  columns;
- timings: wall seconds per image per pipeline stage (``Outcome.timings``: decode, detect,
  landmarks, occluders, backend, postprocess, judge (the identity judges, verifying or only reading
  the originals for the donor choice; ``verify`` before 2026-12-05), encode; kept in
  ``OUT/timings.json`` so a resumed run still has them), the CPU seconds per image of anonymizing
  and per pair of evaluating (this call's work only, summed over the worker processes: wall time on
  a shared machine overstates the cost), and the main process's peak resident memory so far (workers
  not included).

Radar (paper Fig. 5): five axes in [0, 1], higher is better, each a fixed function of the
summary (no min-max over the backends, so a backend's score does not depend on the others and
runs can be compared). With ``c(d, r) = r / (r + d)`` (1 at d = 0, 0.5 at d = r, decreasing):

- image quality = ``c(fid_facenet, 0.5)``;
- privacy = mean over judges of ``1 - clip(reid_<judge>, 0, 1)`` and, where the judge has a
  calibrated threshold, ``1 - reid_rate_<judge>`` (the share of faces it does not
  re-identify; the cosines alone are not comparable across judges: dlib's sit near 0.9 even
  for a masked face);
- geometry = mean of ``c(landmark_nme_68, 0.05)``, ``c(landmark_nme_51, 0.05)``,
  ``emotion_match``;
- lighting = mean of ``c(si_mse, 0.05)``, ``c(si_l2, 0.02)``;
- colour = ``c(delta_e2000, 10)``.

Missing metrics are left out of an axis' mean; an axis with none is NaN (drawn at 0).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import resource
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .images import ImageError, LoadedImage, atomic_write, encode_image, load_image
from .photometric import PhotometricSettings
from .pipeline import Settings

STAGES = ("decode", "detect", "landmarks", "occluders", "backend", "postprocess", "judge",
          "encode")

#: Table VI rows: each photometric step switched on in turn.
ABLATION = {
    "landmarks only": PhotometricSettings(relight=False, pyramid=False, color_transfer=False),
    "+ relighting": PhotometricSettings(relight=True, pyramid=False, color_transfer=False),
    "+ Laplacian pyramid": PhotometricSettings(relight=True, pyramid=True, color_transfer=False),
    "+ colour transfer": PhotometricSettings(relight=True, pyramid=True, color_transfer=True),
}

#: Radar reference values ``r`` of ``c(d, r) = r / (r + d)`` (see the module docstring).
RADAR_REFS = {"fid_facenet": 0.5, "landmark_nme_68": 0.05, "landmark_nme_51": 0.05,
              "si_mse": 0.05, "si_l2": 0.02, "delta_e2000": 10.0}
RADAR_AXES = ("image quality", "privacy", "geometry", "lighting", "colour")

#: Column kinds: ``pm`` mean +- std, ``mean`` mean only, ``pct`` mean as a percentage,
#: ``med`` the median.
Column = tuple[str, str, str]  # (header, metric, kind)


@dataclass
class Run:
    """One anonymized folder and its evaluation."""

    label: str
    outdir: Path
    settings: Settings
    report: dict = field(default_factory=dict)
    times: dict = field(default_factory=dict)  # {rel: {stage: seconds}}
    errors: list[str] = field(default_factory=list)
    peak_rss_mib: float = 0.0
    cpu: dict = field(default_factory=dict)  # cpu_anonymize / cpu_evaluate per image, this call


def judges_in(summaries: list[dict]) -> list[str]:
    """The identity judges with a ``reid_<judge>`` value in any of the summaries."""
    names = {k[5:] for s in summaries for k in s if k.startswith("reid_")
             and not k.startswith(("reid_rate_", "reid_far_", "reid_found_"))}
    return sorted(names)


def table_columns(judges: list[str]) -> dict[str, list[Column]]:
    """The column specs of Tables II-V and VI for the given judges."""
    reid = [c for j in judges for c in ((f"re-ID {j} ↓", f"reid_{j}", "pm"),
                                        (f"re-ID rate {j} % ↓", f"reid_rate_{j}", "pct"),
                                        (f"re-ID @FAR1e-3 {j} % ↓", f"reid_far_{j}", "pct"),
                                        (f"re-ID @FAR1e-3 found again {j} % ↓",
                                         f"reid_far_found_{j}", "pct"))]
    return {
        "II": [("FID (FaceNet) ↓", "fid_facenet", "mean"), ("detection % ↑", "detected", "pct"),
               *reid, ("pose NME ↓", "landmark_nme_68", "pm"),
               ("sharpness (median) ↑", "sharpness", "med"),
               ("time/img s ↓", "time_per_image", "pm")],
        "linkability": [c for j in judges for c in (
            (f"same person {j} % ↓", f"link_same_{j}", "pct"),
            (f"different people {j} %", f"link_diff_{j}", "pct"),
            (f"similarity, different people {j} ↓", f"sim_diff_{j}", "pm"))],
        "III": [("NME-51 ↓", "landmark_nme_51", "pm"),
                ("emotion match % ↑", "emotion_match", "pct")],
        "IV": [("Si-MSE ↓", "si_mse", "pm"), ("Si-L2 ↓", "si_l2", "pm")],
        "V": [("MSE-L ↓", "mse_l", "pm"), ("MSE-ab ↓", "mse_ab", "pm"),
              ("ΔE2000 ↓", "delta_e2000", "pm")],
        "VI": [("FID (FaceNet) ↓", "fid_facenet", "mean"), ("detection % ↑", "detected", "pct"),
               *[(f"re-ID {j} ↓", f"reid_{j}", "pm") for j in judges],
               ("pose NME ↓", "landmark_nme_68", "pm"),
               ("emotion match % ↑", "emotion_match", "pct"), ("Si-MSE ↓", "si_mse", "pm"),
               ("ΔE2000 ↓", "delta_e2000", "pm")],
        "timings": [*[(f"{s} s", f"time_{s}", "mean") for s in STAGES],
                    ("total s", "time_per_image", "pm"),
                    ("anonymize CPU s/img", "cpu_anonymize", "mean"),
                    ("evaluate CPU s/pair", "cpu_evaluate", "mean"),
                    ("peak RSS MiB (main process)", "peak_rss_mib", "mean")],
    }


TITLES = {
    "II": "Table II: realism, detection, re-identification, pose, time",
    "III": "Table III: expression (51-point NME, emotion match)",
    "linkability": "Linkability: anonymized faces matched to each other at the judges' FAR 1e-3 "
                   "thresholds (same person vs different people) and the mean similarity "
                   "between different people",
    "IV": "Table IV: lighting (scale-invariant errors)",
    "V": "Table V: skin colour (albedo L*a*b*)",
    "VI": "Table VI: ablation (photometric steps switched on in turn)",
    "timings": "Timings per stage (seconds per image) and peak memory",
}


def time_summary(times: dict[str, dict], rels: list[str] | None = None) -> dict[str, dict]:
    """``time_<stage>`` and ``time_per_image`` as ``{"mean", "std", "n"}`` over the images
    ``rels`` (all when None) of ``times`` ``{rel: {stage: seconds}}``."""
    from .metrics.summary import describe

    picked = [times[r] for r in (times if rels is None else rels) if r in times]
    out = {f"time_{s}": describe(t.get(s, 0.0) for t in picked) for s in STAGES}
    out["time_per_image"] = describe(sum(t.get(s, 0.0) for s in STAGES) for t in picked)
    return out


def format_cell(stats: dict | None, kind: str) -> str:
    """A Markdown cell: ``0.1234 ± 0.0567``, ``0.1234`` or ``98.5`` (percent); ``-`` if absent."""
    if not stats or stats.get("mean") is None:
        return "-"
    m, s = stats["mean"], stats.get("std")
    if kind == "pct":
        return f"{100 * m:.1f}"
    if kind == "med":
        return "-" if stats.get("median") is None else f"{stats['median']:.3g}"
    if kind == "pm" and s is not None:
        return f"{m:.4g} ± {s:.2g}"
    return f"{m:.4g}"


def markdown_table(columns: list[Column], rows: dict[str, dict], first: str = "backend") -> str:
    """Rows ``{label: {metric: stats}}`` as a Markdown table with the given columns."""
    lines = ["| " + " | ".join([first] + [c[0] for c in columns]) + " |",
             "| " + " | ".join(["---"] * (len(columns) + 1)) + " |"]
    for label, stats in rows.items():
        cells = [format_cell(stats.get(metric), kind) for _, metric, kind in columns]
        lines.append("| " + " | ".join([label] + cells) + " |")
    return "\n".join(lines)


def csv_table(columns: list[Column], rows: dict[str, dict], groups: dict[str, dict] | None = None,
              first: str = "backend") -> str:
    """CSV with ``group``, the row label, then ``<metric>_mean``, ``<metric>_std``, ``<metric>_n``
    per column; ``groups`` ``{group: rows}`` adds per-group rows after the ``all`` ones."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["group", first] + [f"{m}_{k}" for _, m, _ in columns for k in ("mean", "std", "n")])
    for group, rs in {"all": rows, **(groups or {})}.items():
        for label, stats in rs.items():
            cells = []
            for _, metric, _ in columns:
                st = stats.get(metric) or {}
                cells += [_csv_value(st.get(k)) for k in ("mean", "std", "n")]
            w.writerow([group, label] + cells)
    return buf.getvalue()


def _csv_value(v) -> str:
    return "" if v is None else repr(v)


def closeness(d: float, ref: float) -> float:
    """``c(d, r) = r / (r + d)`` for a distance ``d >= 0``: 1 at 0, 0.5 at ``r``, decreasing."""
    return ref / (ref + max(float(d), 0.0))


def radar_scores(summary: dict[str, dict]) -> dict[str, float]:
    """The five Fig. 5 axes of a summary ``{metric: {"mean", ...}}``, each in [0, 1], higher
    better (formulas in the module docstring); NaN for an axis without any metric."""

    def mean(name):
        st = summary.get(name)
        return None if not st or st.get("mean") is None else float(st["mean"])

    def close(name):
        v = mean(name)
        return None if v is None else closeness(v, RADAR_REFS[name])

    judges = judges_in([summary])
    parts = {
        "image quality": [close("fid_facenet")],
        "privacy": [v for j in judges for v in (
            None if mean(f"reid_{j}") is None else 1.0 - min(max(mean(f"reid_{j}"), 0.0), 1.0),
            None if mean(f"reid_rate_{j}") is None else 1.0 - mean(f"reid_rate_{j}"))],
        "geometry": [close("landmark_nme_68"), close("landmark_nme_51"), mean("emotion_match")],
        "lighting": [close("si_mse"), close("si_l2")],
        "colour": [close("delta_e2000")],
    }
    out = {}
    for axis in RADAR_AXES:
        values = [v for v in parts[axis] if v is not None]
        out[axis] = float(np.mean(values)) if values else math.nan
    return out


def plot_radar(scores: dict[str, dict[str, float]], path: Path, title: str = "") -> None:
    """Fig. 5: one closed polygon per backend over :data:`RADAR_AXES`, radius = score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    angles = np.linspace(0, 2 * np.pi, len(RADAR_AXES), endpoint=False)
    fig, ax = plt.subplots(figsize=(5.5, 5.5), subplot_kw={"polar": True})
    for label, sc in scores.items():
        r = np.array([0.0 if math.isnan(sc[a]) else sc[a] for a in RADAR_AXES])
        ax.plot(np.r_[angles, angles[0]], np.r_[r, r[0]], label=label, linewidth=1.5)
        ax.fill(np.r_[angles, angles[0]], np.r_[r, r[0]], alpha=0.08)
    ax.set_xticks(angles)
    ax.set_xticklabels(RADAR_AXES)
    ax.set_ylim(0, 1)
    ax.set_yticks([0.25, 0.5, 0.75, 1.0])
    ax.legend(loc="upper right", bbox_to_anchor=(1.3, 1.12), fontsize=8)
    if title:
        ax.set_title(title, pad=24, fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    atomic_write(path, buf.getvalue())


def contact_sheet(originals: Path, runs: dict[str, Path], path: Path, count: int = 4,
                  tile: int = 128, context: float = 1.4) -> list[str]:
    """A PNG grid: per row one of the first ``count`` images with a face (from the first run's
    private records), the original then each run's output, all cropped with the original face's crop
    transform (``faces.crop_transform`` at ``context`` face sizes, ``faces.crop_face``) at
    ``tile`` px; a header row names the columns. Returns the relative paths shown."""
    import cv2

    from .faces import crop_face, crop_transform
    from .metrics.evaluate import image_files
    from .metrics.pairing import faces_from_record

    first = next(iter(runs.values()))
    shown: list[tuple[str, object]] = []
    for rel in image_files(first):
        try:
            faces = faces_from_record(first / rel, rel, tile)
        except ValueError:
            continue
        if faces and (originals / rel).is_file():
            shown.append((rel, crop_transform(faces[0].landmarks, tile, context)))
        if len(shown) == count:
            break
    cols = {"original": originals, **runs}
    header = np.full((24, tile * len(cols), 3), 255, np.uint8)
    for i, name in enumerate(cols):
        cv2.putText(header, name[:16], (i * tile + 4, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    (0, 0, 0), 1, cv2.LINE_AA)
    rows = [header]
    for rel, crop in shown:
        tiles = []
        for folder in cols.values():
            try:
                tiles.append(crop_face(load_image(folder / rel).rgb, crop))
            except (ImageError, OSError):  # a missing output: a grey tile
                tiles.append(np.full((tile, tile, 3), 128, np.uint8))
        rows.append(np.concatenate(tiles, axis=1))
    atomic_write(path, encode_image(LoadedImage(np.concatenate(rows, axis=0)), ".png"))
    return [rel for rel, _ in shown]


def stage_inputs(data: Path, out: Path, limit: int | None = None) -> Path:
    """Link the first ``limit`` images of ``data`` (sorted relative paths; all when None) into
    ``out/originals``, keeping their relative paths; returns that folder."""
    from .metrics.evaluate import image_files

    staged = out / "originals"
    inside = Path(out).absolute()
    files = {rel: p for rel, p in image_files(data).items()
             if inside not in (Path(data) / rel).absolute().parents}  # not our own outputs
    for rel in list(files)[:limit]:
        link = staged / rel
        if not link.is_symlink() and not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(files[rel].resolve())
    return staged


def _switch(value: str) -> bool:
    """A spec's on/off value: ``1``, ``true``, ``yes`` or ``on`` (any case) is on."""
    return value.lower() in ("1", "true", "yes", "on")


#: Settings a benchmark spec may set, and how its value is read (``levels``: the photometric
#: pyramid's, ``detail``: detail matching on or off, :class:`~.photometric.PhotometricSettings`).
SPEC_OPTIONS = {"geometry": float, "verify": _switch, "tries": int, "on_fail": str,
                "occluders": _switch, "seed": int, "levels": int, "detail": _switch,
                "unlink": _switch, "same_group": _switch}


def spec_settings(spec: str, device: str = "auto") -> Settings:
    """The :class:`Settings` of a benchmark spec ``BACKEND[:key=value,...]`` (keys of
    :data:`SPEC_OPTIONS`), e.g. ``donor:verify=1``, ``ksame:geometry=0`` or
    ``donor:verify=1,seed=2`` (another sample of donors: ``donor`` chooses each face's among its
    six cheapest by the seed, which moves emotion match by up to 2.5 points). Unset options take
    :class:`Settings`' defaults except ``verify``, off unless asked for, so that every backend is
    measured as it renders."""
    name, _, options = spec.partition(":")
    values = {"verify": False}
    for item in filter(None, options.split(",")):
        key, _, value = item.partition("=")
        if key not in SPEC_OPTIONS:
            raise ValueError(f"{spec}: unknown option {key!r}; choose from {sorted(SPEC_OPTIONS)}")
        values[key] = SPEC_OPTIONS[key](value)
    photometric = PhotometricSettings()
    if "levels" in values:
        photometric = replace(photometric, levels=values.pop("levels"))
    if not values.pop("detail", True):
        photometric = replace(photometric, most_detail=None)
    return Settings(backend=name, device=device, photometric=photometric, **values)


def backend_problem(name: str) -> str | None:
    """Why backend ``name`` (a spec's backend) cannot run here (unknown, or its constructor
    raised ``BackendUnavailable``), or None when it can."""
    from .anonymizers import BackendUnavailable, create_backend

    try:
        create_backend(name.partition(":")[0])
    except KeyError as e:
        return str(e.args[0])
    except BackendUnavailable as e:
        return str(e)
    return None


def peak_rss_mib() -> float:
    """The process's peak resident set size so far (MiB; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(run: Run, originals: Path, out: Path, evaluator, groups: str | None,
            progress: bool, reports: dict[Path, Run], workers: int = 1,
            identities: str | None = None) -> Run:
    """Anonymize ``originals`` into ``run.outdir`` (resuming), keep each image's stage timings
    in ``out/timings.json`` (so a resumed run still reports them) and evaluate the pairs, both
    in ``workers`` processes (CPU seconds are added up over them). A folder already evaluated
    in this call (``reports``) is not evaluated twice."""
    from tqdm import tqdm

    from .batch import anonymize_files
    from .metrics import evaluate_dirs
    from .metrics.evaluate import image_files

    if run.outdir in reports:
        done = reports[run.outdir]
        run.report, run.times, run.errors = done.report, done.times, done.errors
        run.peak_rss_mib, run.cpu = done.peak_rss_mib, done.cpu
        return run
    cache_path = out / "timings.json"
    cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    key = run.outdir.relative_to(out).as_posix()
    run.times = cache.get(key, {})
    total = len(image_files(originals))
    bar = tqdm(total=total, desc=f"anonymize {run.label}", unit="img", disable=not progress,
               dynamic_ncols=True)

    def on_outcome(outcome):
        again = outcome.rel in seen  # anonymized again to unlink it (batch.unlink_run)
        seen.add(outcome.rel)
        if outcome.status == "error":
            run.errors.append(outcome.message)
            if progress:
                tqdm.write(f"error: {outcome.message}")
        elif outcome.timings and again and outcome.rel in run.times:
            before = run.times[outcome.rel]  # its time is the two runs' together
            run.times[outcome.rel] = {k: before.get(k, 0.0) + outcome.timings.get(k, 0.0)
                                      for k in {**before, **outcome.timings}}
        elif outcome.timings:
            run.times[outcome.rel] = outcome.timings
            done.append(outcome.rel)
        if not again:
            bar.update(1)

    done: list[str] = []
    seen: set[str] = set()
    anonymize_files([originals], run.outdir, run.settings, workers=workers, on_outcome=on_outcome)
    bar.close()
    cache[key] = run.times
    atomic_write(cache_path, (json.dumps(cache, indent=0) + "\n").encode())
    bar = tqdm(total=total, desc=f"evaluate {run.label}", unit="pair", disable=not progress,
               dynamic_ncols=True)
    cpu0 = sum(evaluator.cpu_timings.values())
    run.report = evaluate_dirs(originals, run.outdir, groups, evaluator, workers=workers,
                               on_pair=lambda rel, err: bar.update(1), identities=identities)
    bar.close()
    run.cpu = {"cpu_anonymize": per_item(sum(run.times[r]["cpu"] for r in done), len(done)),
               "cpu_evaluate": per_item(sum(evaluator.cpu_timings.values()) - cpu0,
                                        len(run.report["pairs"]))}
    run.errors += [e for e in run.report["errors"] if e not in run.errors]
    run.peak_rss_mib = peak_rss_mib()
    reports[run.outdir] = run
    return run


def per_item(seconds: float, n: int) -> dict:
    """``{"mean": seconds / n, "std": None, "n": n}`` (mean None when n is 0)."""
    return {"mean": seconds / n if n else None, "std": None, "n": n}


def run_stats(run: Run, rels: list[str] | None = None, summary: dict | None = None) -> dict:
    """A table row: the evaluation summary plus the timing pseudo-metrics and peak memory."""
    summary = run.report["summary"] if summary is None else summary
    return {**summary, **time_summary(run.times, rels), **run.cpu,
            "peak_rss_mib": {"mean": run.peak_rss_mib, "std": None, "n": 1}}


def machine() -> dict:
    """Where the benchmark ran: CPU model and cores, torch device and GPU name."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cores": os.cpu_count(), "gpu": gpu, "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__}


def run_benchmark(
    data: Path,
    out: Path,
    backends: list[str],
    ablation: str | None = None,
    limit: int | None = None,
    groups: str | None = None,
    device: str = "auto",
    evaluator=None,
    progress: bool = False,
    sheet_count: int = 4,
    workers: int = 1,
    identities: str | None = None,
) -> dict:
    """Anonymize ``data`` with each backend into ``out/<backend>/``, evaluate, and write
    ``out/results.json``, ``out/tables.md``, ``out/table_<II..VI|timings>.csv``,
    ``out/radar.png`` and ``out/contact_sheet.png``. Returns the JSON results: ``skipped``
    ``{backend: reason}``, ``tables`` ``{name: {"columns", "rows", "groups"}}`` (rows
    ``{label: {metric: {"mean", "std", "n"}}}``), ``radar``, ``errors``, ``unavailable``,
    ``machine``, ``files``. ``workers``: processes for anonymizing and evaluating (0: one per
    core for a large enough folder); wall times per stage are per process, CPU seconds summed.
    ``identities``: a regex naming each file's person (LFW: ``'^([^/]+)/'``), which adds the
    linkability table (``metrics.evaluate.linkability_summary``)."""
    from .faces import resolve_device
    from .metrics import Evaluator

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = datetime.now(timezone.utc)
    originals = stage_inputs(Path(data), out, limit)
    wanted = list(dict.fromkeys(backends + ([ablation] if ablation else [])))
    skipped = {b: p for b in wanted if (p := backend_problem(b)) is not None}
    if evaluator is None and set(wanted) - set(skipped):
        evaluator = Evaluator(device=device)
    reports: dict[Path, Run] = {}
    runs = {b: run_one(Run(b, out / _slug(b), spec_settings(b, device)), originals, out,
                       evaluator, groups, progress, reports, workers, identities)
            for b in backends if b not in skipped}
    abl_runs: dict[str, Run] = {}
    if ablation and ablation not in skipped:
        for variant, photometric in ABLATION.items():
            settings = replace(spec_settings(ablation, device), photometric=photometric)
            full = photometric == Settings().photometric
            folder = (out / _slug(ablation) if full
                      else out / "ablation" / _slug(ablation) / _slug(variant))
            abl_runs[variant] = run_one(Run(variant, folder, settings), originals, out,
                                        evaluator, None, progress, reports, workers)

    judges = judges_in([r.report["summary"] for r in [*runs.values(), *abl_runs.values()]])
    columns = table_columns(judges)
    rows = {b: run_stats(r) for b, r in runs.items()}
    group_rows: dict[str, dict] = {}
    if groups:
        from .metrics.summary import group_label

        for b, r in runs.items():
            members: dict[str, list[str]] = {}
            for p in r.report["pairs"]:
                label = group_label(p["file"], groups) or "(no match)"
                members.setdefault(label, []).append(p["file"])
            for label, summary in r.report.get("groups", {}).items():
                group_rows.setdefault(label, {})[b] = run_stats(r, members[label], summary)
    tables = {}
    for name in ("II", "III", "IV", "V", "timings"):
        tables[name] = {"title": TITLES[name], "columns": columns[name], "rows": rows,
                        "groups": group_rows}
    if identities:
        tables["linkability"] = {"title": TITLES["linkability"], "groups": {},
                                 "columns": columns["linkability"], "rows": rows}
    if abl_runs:
        tables["VI"] = {"title": f"{TITLES['VI']}, backend {ablation}", "columns": columns["VI"],
                        "rows": {v: run_stats(r) for v, r in abl_runs.items()}, "groups": {}}
    radar = {b: {a: None if math.isnan(v) else v for a, v in radar_scores(s).items()}
             for b, s in rows.items()}
    n_images = len(originals_list(originals))
    files = {"results": "results.json", "tables": "tables.md"}
    for name, t in tables.items():
        first = "variant" if name == "VI" else "backend"
        files[f"table_{name}"] = f"table_{name}.csv"
        atomic_write(out / files[f"table_{name}"],
                     csv_table(t["columns"], t["rows"], t["groups"], first).encode())
    if radar:
        files["radar"] = "radar.png"
        plot_radar({b: {a: math.nan if v is None else v for a, v in sc.items()}
                    for b, sc in radar.items()}, out / "radar.png",
                   f"{Path(data).name}: {n_images} images")
    shown = []
    if runs:
        files["contact_sheet"] = "contact_sheet.png"
        shown = contact_sheet(originals, {b: r.outdir for b, r in runs.items()},
                              out / "contact_sheet.png", sheet_count)
    results = {
        "data": str(data), "out": str(out), "backends": backends, "ablation": ablation,
        "limit": limit, "groups": groups, "device": resolve_device(device),
        "date": started.isoformat(timespec="seconds"),
        "seconds": round(time.time() - started.timestamp(), 1),
        "machine": machine(), "images": n_images, "workers": workers,
        "faces": {b: sum(len(p["faces"]) for p in r.report["pairs"]) for b, r in runs.items()},
        "skipped": skipped,
        "errors": {r.label: r.errors for r in [*runs.values(), *abl_runs.values()] if r.errors},
        "unavailable": dict(evaluator.unavailable) if evaluator else {},
        "evaluation_seconds": dict(evaluator.timings) if evaluator else {},
        "evaluation_cpu_seconds": dict(evaluator.cpu_timings) if evaluator else {},
        "tables": tables, "radar": radar, "radar_refs": RADAR_REFS, "contact_sheet": shown,
        "files": files,
    }
    text = json.dumps(results, indent=1, default=_json) + "\n"
    atomic_write(out / "results.json", text.encode())
    atomic_write(out / "tables.md", markdown_report(results).encode())
    return results


def originals_list(originals: Path) -> list[str]:
    from .metrics.evaluate import image_files

    return list(image_files(originals))


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c == "." else "_" for c in text).strip("_").lower()


def _json(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def markdown_report(results: dict) -> str:
    """``tables.md``: the run's facts, skipped backends, every table (and per group), the radar
    scores and the metrics that could not run."""
    m = results["machine"]
    lines = [
        f"# faceanon benchmark: {results['data']}", "",
        f"- date: {results['date']}; {results['seconds']} s in all",
        f"- machine: {m['cpu']}, {m['cores']} cores; device {results['device']}"
        + (f" ({m['gpu']})" if m["gpu"] else "") + f"; torch {m['torch']}",
        f"- images: {results['images']}; faces per backend: {results['faces']}",
        f"- backends: {', '.join(results['backends'])}"
        + (f"; ablation: {results['ablation']}" if results["ablation"] else "")
        + (f"; groups: `{results['groups']}`" if results["groups"] else ""),
    ]
    for name, reason in results["skipped"].items():
        lines.append(f"- skipped {name}: {reason}")
    for label, errs in results["errors"].items():
        lines.append(f"- {label}: {len(errs)} failed files (first: {errs[0]})")
    for name, t in results["tables"].items():
        first = "variant" if name == "VI" else "backend"
        lines += ["", f"## {t['title']}", "", markdown_table(t["columns"], t["rows"], first)]
        for group, rows in t["groups"].items():
            lines += ["", f"{t['title']}, group `{group}`", "",
                      markdown_table(t["columns"], rows, first)]
    if results["radar"]:
        lines += ["", "## Radar scores (Fig. 5; higher is better)", "",
                  markdown_table([(a, a, "mean") for a in RADAR_AXES],
                                 {b: {a: {"mean": v} for a, v in sc.items()}
                                  for b, sc in results["radar"].items()})]
    if results["unavailable"]:
        lines += ["", "## Metrics not computed", ""]
        lines += [f"- `{k}`: {v}" for k, v in results["unavailable"].items()]
    return "\n".join(lines) + "\n"
