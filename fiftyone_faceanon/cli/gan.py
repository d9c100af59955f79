"""``faceanon prepare-data``, ``faceanon train`` and ``faceanon export-dp68``: thin adapters over
:mod:`fiftyone_faceanon.gan`."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from tqdm import tqdm

from . import main


@main.command("prepare-data")
@click.option("--data", default=Path("../shared/data"), show_default=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The shared data folder (lfw/, utkface/).")
@click.option("-o", "--out", default=Path(".data/dp68_128"), show_default=True,
              type=click.Path(file_okay=False, path_type=Path), help="Shard folder.")
@click.option("--size", default=128, show_default=True, help="Crop size in pixels.")
@click.option("--limit", default=None, type=int, help="Only the first N photos of the split.")
@click.option("--quality", default=70, show_default=True, help="WebP quality of the crops.")
@click.option("--device", default="auto", show_default=True, help="Detector device.")
def prepare_data(data, out, size, limit, quality, device):
    """Crop the training split's faces into shards for `faceanon train`."""
    from ..gan.data import prepare, training_files

    bar = tqdm(desc="prepare-data", unit="photo", file=sys.stderr, dynamic_ncols=True)
    errors = 0

    def on_file(path, status, message):
        nonlocal errors
        if status == "error":
            errors += 1
            tqdm.write(f"error: {message}", file=sys.stderr)
        bar.update(1)

    files = training_files(data)[:limit]
    bar.total = len(files)
    index = prepare(files, data, out, size, quality=quality, device=device, on_file=on_file)
    bar.close()
    click.echo(f"{index['faces']} faces from {index['photos']} photos, dropped {index['dropped']}, "
               f"{index['bytes'] / 2**20:.1f} MiB -> {out}", err=True)
    sys.exit(1 if errors else 0)


@main.command()
@click.option("--shards", required=True, type=click.Path(exists=True, file_okay=False,
              path_type=Path), help="Folder written by `faceanon prepare-data`.")
@click.option("--run-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run folder: checkpoint, log.jsonl, samples/. An existing run continues.")
@click.option("--preset", default="base", show_default=True,
              type=click.Choice(["tiny", "cpu", "base"]), help="Config of a fresh run.")
@click.option("--steps", type=int, help="Total steps to reach (default: the preset's).")
@click.option("--minutes", type=float, help="Stop (with a checkpoint) after this long.")
@click.option("--resolution", type=int, help="Train at this size (crops are resized).")
@click.option("--batch", type=int, help="Batch size per process.")
@click.option("--limit", type=int, help="Use only the first N faces.")
@click.option("--device", default="auto", show_default=True)
@click.option("--threads", type=int, help="torch CPU threads.")
@click.option("--channels-last", is_flag=True,
              help="Weights and batches in the (N, H, W, C) layout (faster on some GPUs).")
@click.option("--start-from", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A new run starts from this portable state (e.g. the one kept in models/).")
def train(shards, run_dir, preset, steps, minutes, resolution, batch, limit, device, threads,
          channels_last, start_from):
    """Train the dp68 generator (resumable; for several GPUs use torchrun with
    `python -m fiftyone_faceanon.gan.train`, which takes the same options)."""
    from ..gan.train import train as run_training

    bar = tqdm(desc="train", unit="step", file=sys.stderr, dynamic_ncols=True)

    def on_log(record):
        bar.n = record["step"]
        bar.set_postfix({k: round(v, 3) for k, v in record.items() if k != "step"}, refresh=True)

    result = run_training(shards, run_dir, preset, steps, minutes, resolution, batch, limit,
                          device, threads, channels_last, start_from, on_log)
    bar.close()
    click.echo(f"step {result['step']}, {result['train_seconds']:.0f} s of training -> {run_dir}",
               err=True)


#: What the dp68 weights are trained on and their licence, for their manifest entries.
TRAINING_DATA = ("faceanon prepare-data: LFW peopleDevTrain.txt identities + UTKFace crop_part1 "
                 "(training split; LFW peopleDevTest never used)")
LICENCE = "weights derived from LFW (research use) and UTKFace (non-commercial research)"


@main.command("export-dp68")
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--metrics", "metrics_json", type=click.Path(exists=True, path_type=Path),
              help="JSON of the metrics the model reached, stored in the manifest.")
@click.option("--note", default="", help="Free text for the manifest entry.")
def export_dp68(checkpoint, metrics_json, note):
    """Ship CHECKPOINT's EMA generator (float16) as models/dp68_<S>.pt with a manifest entry."""
    import json

    from ..gan.train import export
    from ..weights import models_dir, record

    try:
        path, meta = export(checkpoint, models_dir())
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    name = path.name
    metrics = json.loads(metrics_json.read_text()) if metrics_json else "pending"
    entry = record(
        name, **meta, kind="dp68 generator (EMA, float16)",
        source=f"trained here: faceanon train, exported from {checkpoint.name}",
        training_data=TRAINING_DATA, licence=LICENCE, metrics=metrics, note=note,
    )
    click.echo(json.dumps({name: entry}, indent=2))


@main.command("keep-dp68-state")
@click.argument("portable", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--note", default="", help="Free text for the manifest entry.")
def keep_dp68_state(portable, note):
    """Keep a run's PORTABLE state (portable.pt) in models/training/ with a manifest entry, so
    the next GPU session continues the run instead of starting again (scripts/train_dp68_gpu.sh
    starts from it); it is not a model the backend uses, and not in the wheel."""
    import json

    from ..gan.train import keep_state
    from ..weights import models_dir, record

    try:
        path, meta = keep_state(portable, models_dir())
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    name = path.relative_to(models_dir()).as_posix()
    entry = record(
        name, **meta, kind="dp68 training state (EMA G and D, bfloat16; no optimiser state)",
        source=f"trained here: faceanon train, the run's {portable.name}",
        training_data=TRAINING_DATA, licence=LICENCE,
        metrics="none: a training state, continued by the next GPU session; export-dp68 makes "
                "the generator that is evaluated",
        note=note,
    )
    click.echo(json.dumps({name: entry}, indent=2))
