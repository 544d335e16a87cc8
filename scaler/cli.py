"""The `garo` command line.

Each subcommand lives next to the code it drives and is imported lazily, so
`garo validate` does not pay for importing Pulumi or gRPC.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from scaler.config import ConfigError, check_across_departments, load_stack_file


@click.group()
@click.version_option(package_name="garo")
def main() -> None:
    """Garo: ephemeral GitHub Actions runners per department."""


@main.command()
@click.argument("stack_files", nargs=-1, required=True, type=click.Path(path_type=Path))
def validate(stack_files: tuple[Path, ...]) -> None:
    """Check Pulumi.<stack>.yaml files; exit 1 with every problem and its key path."""
    failed = False
    configs = []
    for path in stack_files:
        try:
            configs.append(load_stack_file(path))
            click.echo(f"ok: {path}")
        except ConfigError as exc:
            failed = True
            click.echo(str(exc), err=True)
    for issue in check_across_departments(configs):
        failed = True
        click.echo(f"across stacks: {issue}", err=True)
    if failed:
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
