"""``faceanon gallery add`` and ``faceanon gate``: thin adapters over :mod:`fiftyone_faceanon.gate`.

Nothing heavy is imported here: torch, dlib and the judges load inside the commands, and only
when an image is not in the embedding cache. Exit codes of ``gate``: 0 nothing blocks, 1
something blocks, 2 usage or configuration error.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from . import detector_options, main

GALLERY_HELP = "Gallery file (biometric data: kept 0600, never inside a git work tree)."


def _fail(message: str) -> None:
    click.echo(f"faceanon: error: {message}", err=True)
    sys.exit(2)


def detect_options(f):
    """Detector options shared by ``gallery add`` and ``gate``."""
    for option in reversed(detector_options("--face-threshold")):
        f = option(f)
    return f


def video_options(f):
    """How videos are sampled (:class:`fiftyone_faceanon.gate.VideoCheck`), shared by
    ``gallery add`` and ``gate``."""
    from ..gate import VideoCheck

    options = [
        click.option("--every", default=VideoCheck.every, show_default=True,
                     type=click.IntRange(1),
                     help="Videos: detect faces, and check every face, on every N-th frame; "
                          "faces are tracked through the frames in between."),
        click.option("--track-margin", type=click.FloatRange(0.0, 2.0),
                     help="Videos: a tracked person whose worst sampled face is within this "
                          "cosine below a judge's threshold is checked on every frame (2: "
                          "every track); default per judge: its calibrated FAR 1e-3 threshold "
                          "minus its best-accuracy one."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _progress(total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="file", file=sys.stderr, dynamic_ncols=True,
                disable=total < 2)


@main.group()
def gallery():
    """The identity gallery of the people who must not be recognisable."""


@gallery.command("add")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--gallery", "gallery_path", required=True, envvar="FACEANON_GALLERY",
              type=click.Path(dir_okay=False, path_type=Path), help=GALLERY_HELP)
@detect_options
@video_options
def gallery_add(inputs, gallery_path, detector, face_threshold, min_face_size, device,
                any_roll, every, track_margin):
    """Add every face of IMAGES_OR_DIRS (images and videos) to the gallery: each available
    judge's embedding and the source file's sha256 (never the image or its path); of a video,
    each tracked person's largest sampled face."""
    from ..gate import (DetectSettings, Embedder, GateError, VideoCheck, expand_inputs,
                        load_gallery, save_gallery)

    try:
        gal = load_gallery(gallery_path)
        embedder = Embedder(sorted(gal.embeddings) or None,
                            DetectSettings(detector, face_threshold, min_face_size, device,
                                           any_roll),
                            video=VideoCheck(every, track_margin))
        files = expand_inputs(inputs)
        errors = faces = 0
        with _progress(len(files), "gallery") as bar:
            def on_file(item):
                nonlocal errors, faces
                if item.error or item.failed:
                    errors += 1
                    bar.write(f"error: {item.error or item.path}: "
                              + "; ".join(f"{j}: {r}" for j, r in item.failed.items()),
                              file=sys.stderr)
                elif len(item.boxes):
                    embeddings = item.gallery_embeddings()
                    faces += len(next(iter(embeddings.values())))
                    gal.add(item.sha256, embeddings)
                bar.update(1)

            embedder.embed_files(files, on_file)
        for name, reason in sorted(embedder.unavailable.items()):
            click.echo(f"judge {name} unavailable: {reason}", err=True)
        save_gallery(gal, gallery_path)
    except GateError as e:
        _fail(str(e))
    click.echo(f"{faces} faces from {len(files)} files added; gallery now "
               + ", ".join(f"{j}: {n}" for j, n in gal.sizes().items()), err=True)
    sys.exit(1 if errors else 0)


@main.command()
@click.argument("files", nargs=-1, type=click.Path(dir_okay=True, path_type=Path))
@click.option("--gallery", "gallery_path", required=True, envvar="FACEANON_GALLERY",
              type=click.Path(dir_okay=False, path_type=Path), help=GALLERY_HELP)
@click.option("--threshold", "thresholds", multiple=True, metavar="JUDGE=VALUE",
              help="Override a judge's cosine threshold (repeatable); default: its FAR 1e-3 "
                   "threshold, or [tool.faceanon.gate] thresholds in pyproject.toml.")
@click.option("--baseline", type=click.Path(dir_okay=False, path_type=Path),
              help="Reviewed findings (file sha256 + face + judge) that no longer block.")
@click.option("--update-baseline", is_flag=True,
              help="Add every current finding to --baseline (then nothing reviewed blocks).")
@click.option("--allow-unverifiable", is_flag=True,
              help="Let faces that cannot be checked (unreadable image, failing judge) pass.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the full report as JSON.")
@click.option("--sarif", "sarif_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write blocking faces as SARIF 2.1.0.")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the embedding cache.")
@click.option("-q", "--quiet", is_flag=True, help="Table rows only for faces that do not pass.")
@detect_options
@video_options
def gate(files, gallery_path, thresholds, baseline, update_baseline, allow_unverifiable,
         json_path, sarif_path, no_cache, quiet, detector, face_threshold, min_face_size,
         device, any_roll, every, track_margin):
    """Block images and videos whose faces are still too similar to someone in the gallery.

    A video is checked on every --every-th frame, by tracked person; a person whose worst
    sampled face comes within --track-margin of a judge's threshold is checked on every frame.
    Exit 0 when nothing blocks, 1 when a face blocks (or cannot be checked), 2 on a usage or
    configuration error. Meant as a pre-commit hook (hook id faceanon-gate).
    """
    from .. import gate as G
    from ..metrics.identity import cache_dir, judge_thresholds

    if update_baseline and baseline is None:
        _fail("--update-baseline needs --baseline FILE")
    try:
        gal = G.load_gallery(gallery_path)
        if not gal.embeddings:
            raise G.GateError(f"{gallery_path}: empty or missing gallery; build it with "
                              "'faceanon gallery add' or 'faceanon anonymize --gallery'")
        config = G.read_config()
        limits = G.resolve_thresholds(gal.embeddings, judge_thresholds(),
                                      config.get("thresholds", {}),
                                      G.parse_threshold_overrides(thresholds))
        previous = G.load_baseline(baseline)
    except G.GateError as e:
        _fail(str(e))
    paths = G.expand_inputs(files)
    embedder = G.Embedder(sorted(limits), G.DetectSettings(detector, face_threshold,
                                                            min_face_size, device, any_roll),
                          None if no_cache else cache_dir(), G.VideoCheck(every, track_margin))
    try:
        with _progress(len(paths), "gate") as bar:
            embedded = embedder.embed_files(paths, lambda item: bar.update(1), gal, limits)
    except G.GateError as e:
        _fail(str(e))
    report = G.check(embedded, gal, limits, G.baseline_keys(previous), allow_unverifiable)
    if update_baseline:
        new = G.updated_baseline(previous, report)
        G.write_json(baseline, new)
        report = G.check(embedded, gal, limits, G.baseline_keys(new["findings"]),
                         allow_unverifiable)
    click.echo(G.table(report, only_findings=quiet), err=True)
    if json_path:
        G.write_json(json_path, G.to_json(report))
    if sarif_path:
        G.write_json(sarif_path, G.to_sarif(report))
    sys.exit(report.exit_code())
