"""``python -m app.tools check [DIR …]``: validate tool files and list what loads.

Exit code 0 when every file loads, 1 when one does not (each error names file and field).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from app.tools.loader import load_toolbox


@click.group()
def cli() -> None:
    """Tool definitions."""


@cli.command("check")
@click.argument("directories", nargs=-1, type=click.Path(path_type=Path))
def check(directories: tuple[Path, ...]) -> None:
    """Load the built-in tools and those of DIRECTORIES; print each tool and each error."""
    box = load_toolbox(list(directories))
    for tool in box.all():
        click.echo(f"ok     {tool.id} {tool.version}  ({tool.path})")
    for error in box.errors:
        click.echo(f"error  {error}", err=True)
    sys.exit(1 if box.errors else 0)


if __name__ == "__main__":
    cli(prog_name="python -m app.tools")
