"""``faceanon anonymize``, ``faceanon demo`` and ``faceanon backends``."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from tqdm import tqdm

from ..anonymizers import DEFAULT_BACKEND, BackendUnavailable, available_backends
from ..engines import Engine
from ..images import MAX_PIXELS
from ..photometric import MOST_DETAIL, PYRAMID_LEVELS, PhotometricSettings
from ..pipeline import DEFAULT_GEOMETRY, Settings
from ..tracking import TrackSettings
from ..verify import MIN_JUDGED_SIZE, ON_FAIL, VerificationError
from ..video import VideoSettings
from ..weights import WeightsError
from . import detector_options, engine_options, main


def settings_options(f):
    """The options that build a :class:`Settings`, shared by every command that anonymizes."""
    options = [
        click.option("--backend", default=DEFAULT_BACKEND, show_default=True,
                     type=click.Choice(sorted(available_backends())), help="Anonymizing backend."),
        click.option("--seed", default=0, show_default=True, help="Same seed, same output."),
        click.option("--relight/--no-relight", default=True, show_default=True,
                     help="Retinex relighting with the original's shading."),
        click.option("--pyramid/--no-pyramid", default=True, show_default=True,
                     help="Laplacian-pyramid refinement of the relit face."),
        click.option("--color-transfer/--no-color-transfer", default=True, show_default=True,
                     help="Cb/Cr statistics transfer from the original face."),
        click.option("--detail-match/--no-detail-match", default=True, show_default=True,
                     help="With --verify, blur a new face that holds more than twice the "
                          "original's fine detail down to that on its first two tries (a crisp "
                          "face in a soft photo)."),
        click.option("--levels", default=PYRAMID_LEVELS, show_default=True,
                     help="Laplacian pyramid depth."),
        click.option("--geometry", default=DEFAULT_GEOMETRY, show_default=True,
                     type=click.FloatRange(0.0, 1.0),
                     help="Identity-neutral geometry: 0 keeps the original's landmarks (the "
                          "paper), 1 replaces their identity component by the donor's."),
        click.option("--donors", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="Donor bank (faceanon donors build); default: the shipped one."),
        click.option("--verify/--no-verify", default=True, show_default=True,
                     help="Score every replaced face with the identity judges; retry, then "
                          "fail closed."),
        click.option("--on-fail", default="blur", show_default=True, type=click.Choice(ON_FAIL),
                     help="A face still matched after every try: blur it away, mask it, or "
                          "write no output (error)."),
        click.option("--unlink/--no-unlink", default=True, show_default=True,
                     help="With --verify, after the run anonymize again each face that a judge "
                          "links to another image's face of the same person."),
        click.option("--same-group/--any-group", default=False, show_default=True,
                     help="donor backend: keep each face's apparent group (a head's reading of "
                          "UTKFace's race code) in its donor, but when it is redone to unlink it; "
                          "costs expression, and more faces fail closed."),
        click.option("--verify-threshold", "verify_thresholds", multiple=True,
                     metavar="JUDGE=COSINE",
                     help="Override a judge's verification threshold (repeatable); default: "
                          "its FAR 1e-3 threshold from models/manifest.json."),
        *detector_options("--threshold"),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def video_options(f):
    """The options of a :class:`~fiftyone_faceanon.video.VideoSettings`."""
    defaults, tracking = VideoSettings(), TrackSettings()
    options = [
        click.option("--detect-every", default=tracking.detect_every, show_default=True,
                     type=click.IntRange(1), help="Videos: run the face detector on every N-th "
                     "frame and track faces in between (1: every frame)."),
        click.option("--video-quality", default=defaults.quality, show_default=True,
                     type=click.IntRange(0, 51),
                     help="Videos: the encoder's CRF (H.264; VP9 for .webm), lower is better."),
        click.option("--strip-audio", is_flag=True, help="Videos: write no audio track."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def build_video_settings(detect_every, video_quality, strip_audio) -> VideoSettings:
    return VideoSettings(tracking=TrackSettings(detect_every=detect_every),
                         quality=video_quality, strip_audio=strip_audio)


def build_settings(backend, seed, relight, pyramid, color_transfer, detail_match, levels,
                   geometry, donors, verify, on_fail, unlink, same_group, verify_thresholds,
                   detector, threshold, min_face_size, device, any_roll) -> Settings:
    from ..gate import GateError, parse_threshold_overrides

    try:
        overrides = parse_threshold_overrides(verify_thresholds, "--verify-threshold")
    except GateError as e:
        raise click.UsageError(str(e)) from None
    try:
        return Settings(
            backend=backend, seed=seed, detector=detector, threshold=threshold,
            min_face_size=min_face_size, device=device, any_roll=any_roll,
            photometric=PhotometricSettings(relight, pyramid, color_transfer, levels=levels,
                                            most_detail=MOST_DETAIL if detail_match else None),
            geometry=geometry, donors=str(donors) if donors else None, verify=verify,
            on_fail=on_fail, verify_thresholds=tuple(sorted(overrides.items())), unlink=unlink,
            same_group=same_group,
        )
    except ValueError as e:
        raise click.UsageError(str(e)) from None


def run_anonymize(inputs: list[Path], outdir: Path, settings: Settings, workers: int,
                  overwrite: bool, allow_inside: bool, max_pixels: int,
                  gallery: Path | None = None, engine: Engine | str = "local",
                  video: VideoSettings = VideoSettings()) -> int:
    """Run with a progress bar (files, and frames of a video when it runs in this process),
    print one line per failure, return the exit code. With ``gallery``, every original face
    processed is added to that identity gallery. ``engine``: where the jobs run
    (``fiftyone_faceanon.engines``)."""
    from ..batch import UsageError, anonymize_files
    from ..gate import GateError, load_gallery, save_gallery

    try:
        gal = load_gallery(gallery) if gallery else None
    except GateError as e:
        raise click.UsageError(str(e)) from None

    counts = {"ok": 0, "no_face": 0, "skipped": 0, "unverified": 0, "error": 0}
    bar = tqdm(desc="anonymize", unit="file", file=sys.stderr, dynamic_ncols=True)
    frames = {}

    def on_progress(stage, done, total):
        if stage not in frames:
            for old in frames.values():
                old.close()
            frames.clear()
            if stage == "unlink":  # the images redone after the run, round by round
                bar.close()
                frames[stage] = tqdm(desc="unlink (one person's faces kept apart)", unit="file",
                                     file=sys.stderr, dynamic_ncols=True)
            else:
                frames[stage] = tqdm(desc=f"  video {stage}", unit="frame", total=total,
                                     file=sys.stderr, dynamic_ncols=True, leave=False,
                                     position=1)
        if done == 0:
            frames[stage].reset(total)
        frames[stage].update(done - frames[stage].n)

    def on_outcome(outcome):
        if "unlink" not in frames:
            for old in frames.values():
                old.close()
            frames.clear()
            counts[outcome.status] += 1
            bar.update(1)
            bar.set_postfix(counts, refresh=False)
        if outcome.status in ("error", "unverified"):
            tqdm.write(f"{outcome.status}: {outcome.message}", file=sys.stderr)
        if gal is not None and outcome.identity:
            gal.add(outcome.identity["sha256"], outcome.identity["embeddings"])

    try:
        from ..batch import collect_jobs

        bar.total = len(collect_jobs(inputs, outdir, allow_inside))
        outcomes = anonymize_files(inputs, outdir, settings, workers, overwrite, allow_inside,
                                   max_pixels, on_outcome, gallery=gal is not None,
                                   engine=engine, video=video, on_progress=on_progress)
    except UsageError as e:
        bar.close()
        raise click.UsageError(str(e)) from None
    except (BackendUnavailable, WeightsError, VerificationError) as e:
        bar.close()
        raise click.ClickException(f"backend {settings.backend}: {e}") from None
    bar.close()
    for old in frames.values():
        old.close()
    counts = {status: sum(o.status == status for o in outcomes) for status in counts}
    unjudged = sum(o.unjudged for o in outcomes)  # faces too small for the judges
    covered = sum(o.covered for o in outcomes)  # video tracks covered with no donor tried
    if gal is not None:
        save_gallery(gal, gallery)
    click.echo(
        f"{counts['ok']} anonymized, {counts['no_face']} without a face, "
        f"{counts['skipped']} already done, {counts['unverified']} unverified (fail-closed), "
        f"{counts['error']} failed -> {outdir}",
        err=True,
    )
    if unjudged:
        click.echo(f"note: {unjudged} face(s) under {MIN_JUDGED_SIZE} px replaced over the wide "
                   "region but not judged (too small for the judges; status too_small in the "
                   "sidecars)", err=True)
    if covered:
        click.echo(f"note: {covered} video track(s) that the detector confirmed on "
                   "fewer than half of their detection frames covered (blurred or masked) "
                   "instead of given a donor face (status covered:<how> in the sidecars)",
                   err=True)
    return 1 if counts["error"] or counts["unverified"] else 0


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--outdir", required=True, type=click.Path(path_type=Path),
              help="Output folder; the input tree is mirrored into it.")
@settings_options
@video_options
@click.option("--workers", default=0, show_default=True,
              help="Processes (Ray workers with --engine ray); 0: one per CPU core when there "
                   "are enough images.")
@engine_options
@click.option("--overwrite", is_flag=True, help="Redo images that are already done.")
@click.option("--allow-inside", is_flag=True, help="Allow OUTDIR inside an input folder.")
@click.option("--max-pixels", default=MAX_PIXELS, show_default=True,
              help="Refuse images larger than this (decompression bombs).")
@click.option("--gallery", type=click.Path(dir_okay=False, path_type=Path),
              help="Also add every original face to this identity gallery (faceanon gate).")
def anonymize(inputs, outdir, workers, engine, overwrite, allow_inside, max_pixels, gallery,
              detect_every, video_quality, strip_audio, **kw):
    """Anonymize the faces of image and video files and folders into OUTDIR.

    Writes each image or video (no metadata of the original) and a public JSON sidecar beside
    it (the anonymized geometry only; for a video its tracks and per frame its faces); the
    private record of each original goes to OUTDIR.private, outside the tree to release. In a
    video each tracked person keeps one fake identity. A rerun skips what is done. Exit code 1
    when any file failed or a face was still matched by a judge after every try (handled per
    --on-fail).
    """
    settings = build_settings(**kw)
    video = build_video_settings(detect_every, video_quality, strip_audio)
    sys.exit(run_anonymize(list(inputs), outdir, settings, workers, overwrite, allow_inside,
                           max_pixels, gallery, engine, video))


@main.command()
@click.option("-o", "--outdir", default=Path("out/demo"), show_default=True,
              type=click.Path(path_type=Path))
@settings_options
def demo(outdir, **kw):
    """Anonymize the bundled demo photos (scikit-image's astronaut and cameraman, matplotlib's
    Grace Hopper: public domain) from OUTDIR/input into OUTDIR/anonymized."""
    from ..demo import write_demo_inputs

    src = write_demo_inputs(outdir / "input")
    code = run_anonymize([src], outdir / "anonymized", build_settings(**kw), 1, False, False,
                         MAX_PIXELS)
    click.echo(f"originals: {src}\nanonymized: {outdir / 'anonymized'}")
    sys.exit(code)


@main.command()
def backends():
    """List the anonymizing backends."""
    for name, description in sorted(available_backends().items()):
        mark = "*" if name == DEFAULT_BACKEND else " "
        click.echo(f"{mark} {name:10s} {description}")
