"""The ``faceanon`` command: a thin click group; each subcommand lives in its own module."""

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
        click.option("--device", default="auto", show_default=True,
                     help="auto, cpu, cuda or cuda:N."),
    ]


from . import anonymize  # noqa: E402,F401  (registers the subcommands on main)
from . import gate  # noqa: E402,F401
from . import plugin  # noqa: E402,F401
from . import gan  # noqa: E402,F401
from . import evaluate  # noqa: E402,F401
from . import benchmark  # noqa: E402,F401
from . import donors  # noqa: E402,F401
