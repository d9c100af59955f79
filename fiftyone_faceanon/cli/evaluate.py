"""``faceanon evaluate ORIG ANON``: the metrics suite over two folders paired by relative path,
images and videos."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from tqdm import tqdm

from ..images import atomic_write
from ..metrics.video import DEFAULT_FRAME_STEP
from . import engine_options, main


def format_table(summary: dict) -> str:
    """``metric  mean  std  n`` lines of a report's summary."""
    lines = [f"{'metric':26s} {'mean':>12s} {'std':>12s} {'n':>6s}"]
    fmt = lambda v: "-" if v is None else f"{v:12.5g}"  # noqa: E731
    for name, s in summary.items():
        lines.append(f"{name:26s} {fmt(s['mean']):>12s} {fmt(s['std']):>12s} {s['n']:6d}")
    return "\n".join(lines)


def _frames(frames: list[int], lead: str = ": ", most: int = 12) -> str:
    """``<lead>3, 4, 9 ... (+N)``: the first ``most`` frames of a list after ``lead``, or
    nothing for none."""
    if not frames:
        return ""
    shown = ", ".join(map(str, frames[:most]))
    return lead + shown + (f" ... (+{len(frames) - most})" if len(frames) > most else "")


def _where(s: dict) -> str:
    """`` (frame T, track K)`` of a summary's worst value, or nothing."""
    if s["worst_frame"] is None:
        return ""
    return f" (frame {s['worst_frame']}, track {s['worst_track']})"


def format_video(pair: dict) -> str:
    """The lines of a video pair of a report: its per-frame metrics (mean and worst frame, the
    main ones) and its temporal metrics. Frames count from 0."""
    v, fmt = pair["video"], lambda x: "-" if x is None else f"{x:.4g}"  # noqa: E731
    t = v["temporal"]
    lines = [f"video {pair['file']}: {v['frames']} frames, suite on every {v['frame_step']}th "
             f"({len(v['evaluated_frames'])} frames, {len(pair['faces'])} faces)"]
    for name in ("reid_facenet_casia", "reid_dlib", "landmark_nme_68", "delta_e2000"):
        if name in v["per_frame"]:
            m = v["per_frame"][name]
            lines.append(f"  {name:24s} mean {fmt(m['mean'])}, worst {fmt(m['worst'])} "
                         f"(frame {m['worst_frame']})")
    for judge, s in t["leaked_frames"].items():
        lines.append(f"  leaked frames {judge:14s} {s['count']} of {s['judged_frames']} judged "
                     f"(cos >= {s['threshold']:.4g}; mean {fmt(s['mean'])}, worst "
                     f"{fmt(s['worst'])}{_where(s)}; {s['not_judged']} faces not judged)"
                     f"{_frames(s['frames'])}")
    u = t["unreplaced_faces"]
    lines.append(f"  unreplaced faces {u['count']} of {u['detected']} detected"
                 f"{_frames(u['frames'], ': frames ')}")
    for judge, s in t["stability"].items():
        lines.append(f"  stability {judge:18s} mean {fmt(s['mean'])}, worst {fmt(s['worst'])}"
                     f"{_where(s)}; {s['count']} frames below the LFW same-person mean "
                     f"{fmt(s['same_person_mean'])}{_frames(s['frames'])}; the original: "
                     f"mean {fmt(s['original_mean'])}, worst {fmt(s['original_worst'])}, "
                     f"{len(s['original_frames'])} frames below{_frames(s['original_frames'])}")
    j = t["jitter"]
    lines.append(f"  jitter (IOD/frame)          original {fmt(j['original_mean'])}, output "
                 f"{fmt(j['output_mean'])}, ratio {fmt(j['ratio'])} (target <= {j['target']}); "
                 f"worst excess {fmt(j['worst'])}{_where(j)}; {j['count']} frames over "
                 f"{j['target']}x")
    return "\n".join(lines)


@main.command()
@click.argument("orig", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("anon", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the JSON report here.")
@click.option("--groups", metavar="REGEX",
              help="Summarise per group too: the regex's first group in each relative path "
                   r"(e.g. UTKFace's race code: '^\d+_\d+_(\d)_').")
@click.option("--threshold", default=0.9, show_default=True,
              help="MTCNN probability for detection on both images.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--workers", default=0, show_default=True,
              help="Processes (Ray workers with --engine ray); 0: one per CPU core when there "
                   "are enough pairs.")
@click.option("--frame-step", default=DEFAULT_FRAME_STEP, show_default=True,
              type=click.IntRange(min=1),
              help="Videos: the per-frame suite runs on every this many frames (the temporal "
                   "metrics on every frame).")
@engine_options
def evaluate(orig, anon, out, groups, threshold, device, workers, frame_step, engine):
    """Score the anonymized images and videos in ANON against the originals in ORIG (same
    relative paths).

    Faces come from each anonymized file's private record (ANON.private/REL.json) when present,
    else, for an image, from detection; a video needs its record (its tracks). A video also gets
    its temporal metrics: leaked frames, unreplaced faces, identity stability and jitter
    (docs/metrics.md). Prints a summary table and the videos' figures; exit code 1 when any
    file was unpaired or unreadable.
    """
    from ..metrics import Evaluator, evaluate_dirs
    from ..metrics.evaluate import media_files

    total = len(set(media_files(orig)) | set(media_files(anon)))
    evaluator = Evaluator(device=device, threshold=threshold)
    bar = tqdm(total=total, desc="evaluate", unit="pair", file=sys.stderr, dynamic_ncols=True)
    frames = tqdm(desc="  video", unit="frame", file=sys.stderr, dynamic_ncols=True,
                  leave=False, position=1, disable=None)

    def on_frame(rel, done, total):
        if frames.total != total or done < frames.n:
            frames.reset(total)
            frames.set_description(f"  {rel}", refresh=False)
        frames.update(done - frames.n)

    def on_pair(rel, error):
        if error:
            tqdm.write(f"error: {error}", file=sys.stderr)
        bar.update(1)

    report = evaluate_dirs(orig, anon, groups, evaluator, on_pair=on_pair, workers=workers,
                           engine=engine, frame_step=frame_step, on_frame=on_frame)
    frames.close()
    bar.close()
    if out:
        atomic_write(out, (json.dumps(report, indent=1) + "\n").encode())
    click.echo(format_table(report["summary"]))
    for label, summary in report.get("groups", {}).items():
        click.echo(f"\ngroup {label}\n{format_table(summary)}")
    for pair in report["pairs"]:
        if "video" in pair:
            click.echo("\n" + format_video(pair))
    for name, reason in report["unavailable"].items():
        click.echo(f"unavailable: {name}: {reason}")
    faces = sum(len(p["faces"]) for p in report["pairs"])
    click.echo(f"{len(report['pairs'])} pairs, {faces} faces, {len(report['errors'])} errors"
               + (f" -> {out}" if out else ""), err=True)
    sys.exit(1 if report["errors"] else 0)
