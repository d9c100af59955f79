"""The ``@faceanon/faceanon`` FiftyOne plugin: forms and wiring over :mod:`fiftyone_faceanon.fiftyone_api`.

Every operator acts on ``ctx.target_view()``, reports progress with ``ctx.set_progress``, runs
immediately or delegated (the form defaults to delegated above ``LARGE_VIEW`` samples) and can be
called from Python with the same parameters as its API function::

    op = foo.get_operator("@faceanon/faceanon/anonymize_faces")
    op(dataset, output_dir="/tmp/anon", backend="blur", workers=2, delegate=False)
"""

from __future__ import annotations

import inspect
from pathlib import Path

import fiftyone as fo
import fiftyone.operators as foo
import fiftyone.operators.types as types

from fiftyone_faceanon import fiftyone_api as api
from fiftyone_faceanon.anonymizers import available_backends
from fiftyone_faceanon.engines import ENGINES

#: Views with more samples than this default to delegated execution in the App.
LARGE_VIEW = 50


def _default(fn, name: str):
    return inspect.signature(fn).parameters[name].default


def _engine_inputs(inputs: types.Object, fn, unit: str) -> None:
    """The ``workers`` count and the ``engine`` (with its ``ray_address``) that runs them."""
    inputs.int("workers", min=0, default=_default(fn, "workers"), label="Worker processes",
               description="Processes or Ray workers, each loading its own models; 0: one per "
                           f"CPU core when each gets 32 {unit} or more (as the faceanon CLI), "
                           "else one")
    inputs.enum("engine", list(ENGINES), default=_default(fn, "engine"), label="Engine",
                description="local: processes on this machine; ray: workers on a Ray cluster "
                            "(a delegated operation submits there); auto: ray when RAY_ADDRESS "
                            "is set", view=types.DropdownView())
    inputs.str("ray_address", label="Ray address (optional)",
               description="HOST:PORT of the Ray cluster; default RAY_ADDRESS, else a Ray "
                           "instance started on this machine")


class _FaceanonOperator(foo.Operator):
    """Shared wiring: execution options, the Python call, and the API call with progress."""

    api_function = None
    #: ``name``, ``label``, ``description`` and ``icon`` of the operator's config.
    config_fields: dict = {}

    @property
    def config(self):
        return foo.OperatorConfig(**self.config_fields, dynamic=True,
                                  allow_delegated_execution=True)

    def execute(self, ctx):
        return self.run_api(ctx)

    def resolve_execution_options(self, ctx):
        return foo.executor.ExecutionOptions(
            allow_immediate_execution=True, allow_delegated_execution=True,
            default_choice_to_delegated=len(ctx.target_view()) > LARGE_VIEW)

    def __call__(self, sample_collection, delegate: bool = False, **params):
        """Run on ``sample_collection`` with the API function's keyword parameters; queued for
        the delegated operation service when ``delegate``."""
        return foo.execute_operator(self.uri, ctx={"view": sample_collection.view(),
                                                   "params": params},
                                    request_delegation=delegate)

    def run_api(self, ctx, defaults: dict | None = None):
        fn = type(self).api_function
        known = inspect.signature(fn).parameters
        kwargs = {**(defaults or {}),
                  **{k: v for k, v in ctx.params.items() if k in known and k != "progress"}}

        def progress(done: float, total: int) -> None:
            """``done`` may count a fraction of a video being processed."""
            part = f" (and {done % 1:.0%} of a video)" if done % 1 else ""
            ctx.set_progress(progress=done / max(total, 1),
                             label=f"{int(done)}/{total} samples{part}")

        return fn(ctx.target_view(), progress=progress, **kwargs)

    def form(self, ctx, inputs: types.Object, label: str):
        ctx.target_view()  # opts the form into the system's view-target choice
        return types.Property(inputs, view=types.View(label=label))

    def resolve_output(self, ctx):
        outputs = types.Object()
        for name, value in (ctx.results or {}).items():
            if isinstance(value, (int, float)):
                outputs.float(name, label=name)
            else:
                outputs.str(name, label=name)
        return types.Property(outputs)


class AnonymizeFaces(_FaceanonOperator):
    api_function = staticmethod(api.anonymize_samples)

    config_fields = dict(
        name="anonymize_faces", label="Anonymize faces",
        description="Replace every face with a feature-preserving anonymized one",
        icon="face_retouching_off")

    def resolve_input(self, ctx):
        fn = api.anonymize_samples
        inputs = types.Object()
        backends = sorted(available_backends())
        inputs.enum("backend", backends, default=_default(fn, "backend"), label="Backend",
                    description="; ".join(f"{k}: {v}" for k, v in sorted(
                        available_backends().items())), view=types.DropdownView())
        inputs.int("seed", min=0, default=_default(fn, "seed"), label="Seed",
                   description="Same seed, same output")
        for name, text in (("relight", "Retinex relighting with the original's shading"),
                           ("pyramid", "Laplacian-pyramid refinement of the relit face"),
                           ("color_transfer", "Cb/Cr statistics transfer from the original"),
                           ("detail_match", "With verification, blur a new face that holds "
                                            "more than twice the original's fine detail down "
                                            "to that")):
            inputs.bool(name, default=_default(fn, name), label=name.replace("_", " "),
                        description=text)
        inputs.float("geometry", min=0.0, max=1.0, default=_default(fn, "geometry"),
                     label="Identity-neutral geometry",
                     description="0 keeps the original's landmarks (the paper); 1 replaces their "
                                 "identity component by the donor's")
        inputs.str("donors", default=None, required=False, label="Donor bank",
                   description="A bank built with `faceanon donors build`; empty: the shipped one")
        inputs.bool("verify", default=_default(fn, "verify"), label="Verify",
                    description="Score every replaced face with the identity judges; retry, then "
                                "fail closed")
        inputs.enum("on_fail", ["blur", "mask", "error"], default=_default(fn, "on_fail"),
                    label="On failed verification",
                    description="A face still matched after every try: blur it away, mask it, "
                                "or write no output (error)")
        inputs.bool("unlink", default=_default(fn, "unlink"), label="Keep one person's faces apart",
                    description="With verification, anonymize again each face that a judge "
                                "links to another sample's face of the same person")
        inputs.bool("same_group", default=_default(fn, "same_group"),
                    label="Keep each face's apparent group",
                    description="donor backend: a donor of the face's apparent group, but "
                                "when it is redone to unlink it (costs expression; more faces "
                                "fail closed)")
        inputs.enum("detector", ["mtcnn", "dlib"], default=_default(fn, "detector"),
                    label="Face detector")
        inputs.str("device", default=_default(fn, "device"), label="Device",
                   description="auto, cpu, cuda or cuda:N")
        inputs.bool("any_roll", default=_default(fn, "any_roll"), label="Faces at any roll",
                    description="Images: also find faces turned sideways or upside down "
                                "(about four times the detection time)")
        inputs.int("detect_every", min=1, default=_default(fn, "detect_every"),
                   label="Videos: detect every N-th frame",
                   description="Run the face detector on every N-th frame and track faces in "
                               "between (1: every frame)")
        inputs.int("video_quality", min=0, max=51, default=_default(fn, "video_quality"),
                   label="Videos: quality (CRF)",
                   description="The encoder's CRF (H.264; VP9 for .webm), lower is better")
        inputs.bool("strip_audio", default=_default(fn, "strip_audio"),
                    label="Videos: strip audio", description="Write no audio track")
        output_dir = ctx.params.get("output_dir") or api.default_output_dir(ctx.dataset)
        bad = Path(output_dir).expanduser().is_file()
        inputs.str("output_dir", default=api.default_output_dir(ctx.dataset),
                   label="Output directory", invalid=bad,
                   error_message=f"{output_dir} is a file, not a directory",
                   description="Anonymized images and videos are written here, never over "
                               "the originals")
        inputs.bool("overwrite", default=False, label="Overwrite",
                    description="Redo samples that are already anonymized with these settings")
        _engine_inputs(inputs, fn, "samples")
        return self.form(ctx, inputs, "Anonymize faces")

    def execute(self, ctx):
        summary = self.run_api(ctx, {"output_dir": api.default_output_dir(ctx.dataset)})
        return {**{k: v for k, v in summary.items() if k != "errors"},
                "errors": "\n".join(summary["errors"])}


class ComputeAnonymizationMetrics(_FaceanonOperator):
    api_function = staticmethod(api.evaluate_samples)

    config_fields = dict(
        name="compute_anonymization_metrics", label="Compute anonymization metrics",
        description="Re-identification, landmarks, emotion, lighting and colour metrics "
                    "as per-sample fields and a dataset run",
        icon="query_stats")

    def resolve_input(self, ctx):
        fn = api.evaluate_samples
        inputs = types.Object()
        key = ctx.params.get("run_key", _default(fn, "run_key"))
        inputs.str("run_key", default=_default(fn, "run_key"), label="Run key",
                   invalid=not str(key).isidentifier(),
                   error_message="a run key is a Python identifier",
                   description="The dataset-level summary is saved as a run under this key")
        inputs.str("device", default=_default(fn, "device"), label="Device")
        inputs.bool("overwrite", default=_default(fn, "overwrite"), label="Overwrite run")
        inputs.int("frame_step", min=1, default=_default(fn, "frame_step"),
                   label="Videos: per-frame metrics on every N-th frame",
                   description="The temporal metrics (leaked frames, unreplaced faces, "
                               "stability, jitter) run on every frame")
        _engine_inputs(inputs, fn, "batches of 8 samples")
        return self.form(ctx, inputs, "Compute anonymization metrics")


class FlagReidentifiableFaces(_FaceanonOperator):
    api_function = staticmethod(api.flag_reidentifiable)

    config_fields = dict(
        name="flag_reidentifiable_faces", label="Flag re-identifiable faces",
        description="Tag samples whose faces a judge still re-identifies",
        icon="flag")

    def resolve_input(self, ctx):
        fn = api.flag_reidentifiable
        inputs = types.Object()
        inputs.enum("operating_point", list(api.OPERATING_POINTS),
                    default=_default(fn, "operating_point"), label="Threshold",
                    description="Which calibrated threshold of each judge to apply")
        inputs.str("tag", default=_default(fn, "tag"), label="Tag")
        return self.form(ctx, inputs, "Flag re-identifiable faces")


class ExportAnonymizedRelease(_FaceanonOperator):
    api_function = staticmethod(api.export_anonymized_release)

    config_fields = dict(
        name="export_anonymized_release", label="Export anonymized release",
        description="New dataset with only the anonymized media and the labels",
        icon="ios_share")

    def resolve_input(self, ctx):
        inputs = types.Object()
        name = ctx.params.get("name") or f"{ctx.dataset.name}-anonymized"
        taken = fo.dataset_exists(name) and not ctx.params.get("overwrite", False)
        inputs.str("name", default=f"{ctx.dataset.name}-anonymized", label="Release dataset",
                   invalid=taken, error_message=f"{name} exists; tick overwrite")
        inputs.str("export_dir", label="Export directory (optional)",
                   description="Also write the release here as a FiftyOneDataset")
        inputs.bool("overwrite", default=False, label="Overwrite")
        return self.form(ctx, inputs, "Export anonymized release")

    def execute(self, ctx):
        release = self.run_api(ctx, {"name": f"{ctx.dataset.name}-anonymized"})
        return {"name": release.name, "samples": len(release)}


def register(p):
    for cls in (AnonymizeFaces, ComputeAnonymizationMetrics, FlagReidentifiableFaces,
                ExportAnonymizedRelease):
        p.register(cls)
