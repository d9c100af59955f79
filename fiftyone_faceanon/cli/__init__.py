"""The ``faceanon`` command: a thin click group; each subcommand lives in its own module."""

import functools

import click

from .. import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="faceanon")
def main() -> None:
    """Anonymize the faces of an image dataset while keeping pose, expression, light and tone."""


def detector_options(threshold_flag: str) -> list:
    """The face detector's options, shared by every command that finds faces; ``threshold_flag``
    names the MTCNN probability option (``gate`` keeps ``--threshold`` for the judges)."""
    return [
        click.option("--detector", default="mtcnn", show_default=True,
                     type=click.Choice(["mtcnn", "dlib"])),
        click.option(threshold_flag, default=0.9, show_default=True,
                     help="Minimum MTCNN face probability."),
        click.option("--min-face-size", default=20, show_default=True,
                     type=click.IntRange(min=12),
                     help="Smallest face the detector looks for, in pixels. Larger is faster "
                          "on large photos (a 25 MP photo: 22 s of detection at 20, 10 s at "
                          "40, on 2 cores), and a smaller face is left as it is."),
        click.option("--device", default="auto", show_default=True,
                     help="auto, cpu, cuda or cuda:N."),
        click.option("--any-roll/--upright-only", default=True, show_default=True,
                     help="Also find faces turned sideways or upside down (people lying down, "
                          "photos stored turned): the detector runs on each quarter turn, "
                          "about four times the detection time. Videos: upright only."),
    ]


def engine_options(f):
    """``--engine``, ``--ray-address``, ``--ray-cpus`` and ``--ray-gpus``, shared by the commands
    that run jobs (:mod:`fiftyone_faceanon.engines`): the command receives them as one ``engine``
    argument, an ``Engine`` already connected (else the command stops with a one-line error)."""
    from ..engines import ENGINES

    @functools.wraps(f)
    def command(*args, engine, ray_address, ray_cpus, ray_gpus, **kwargs):
        from ..engines import EngineError, as_engine

        try:
            chosen = as_engine(engine, ray_address, ray_cpus, ray_gpus)
        except ValueError as e:
            raise click.UsageError(str(e)) from None
        try:
            chosen.connect()
        except EngineError as e:
            raise click.ClickException(str(e)) from None
        return f(*args, engine=chosen, **kwargs)

    options = [
        click.option("--engine", type=click.Choice(ENGINES), default="local", show_default=True,
                     help="Where the jobs run: processes on this machine, a Ray cluster, or "
                          "auto (ray when --ray-address or RAY_ADDRESS gives an address)."),
        click.option("--ray-address", metavar="ADDRESS",
                     help="Ray cluster to join (HOST:PORT); default RAY_ADDRESS, else a Ray "
                          "instance started here."),
        click.option("--ray-cpus", default=1.0, show_default=True,
                     help="CPUs each Ray worker reserves."),
        click.option("--ray-gpus", default=0.0, show_default=True,
                     help="GPUs each Ray worker reserves."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


from . import anonymize  # noqa: E402,F401  (registers the subcommands on main)
from . import gate  # noqa: E402,F401
from . import plugin  # noqa: E402,F401
from . import gan  # noqa: E402,F401
from . import evaluate  # noqa: E402,F401
from . import benchmark  # noqa: E402,F401
from . import donors  # noqa: E402,F401
