"""The ``faceanon`` command: a thin click group; each subcommand lives in its own module."""

import click

from .. import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="faceanon")
def main() -> None:
    """Anonymize the faces of an image dataset while keeping pose, expression, light and tone."""


from . import anonymize  # noqa: E402,F401  (registers the subcommands on main)
from . import gate  # noqa: E402,F401
from . import plugin  # noqa: E402,F401
from . import gan  # noqa: E402,F401
from . import evaluate  # noqa: E402,F401
from . import benchmark  # noqa: E402,F401
