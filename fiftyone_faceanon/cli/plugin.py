"""``faceanon plugin install``: make the ``@faceanon/faceanon`` FiftyOne plugin visible."""

from __future__ import annotations

from pathlib import Path

import click

from . import main


@main.group()
def plugin() -> None:
    """The FiftyOne plugin (operators for the App and for Python)."""


@plugin.command()
@click.option("--plugins-dir", type=click.Path(path_type=Path), default=None,
              help="Install here instead of fiftyone's plugins_dir (FIFTYONE_PLUGINS_DIR).")
@click.option("--copy", is_flag=True, help="Copy the files instead of linking them.")
def install(plugins_dir, copy):
    """Link (or copy) the plugin into fiftyone's plugins directory."""
    from ..fiftyone_api import PLUGIN_NAME, install_plugin

    dst = install_plugin(plugins_dir, copy)
    click.echo(f"{PLUGIN_NAME} installed at {dst}; check with `fiftyone operators list`")
