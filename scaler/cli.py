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
@click.argument("stack_files", nargs=-1, required=False, type=click.Path(path_type=Path))
@click.option("--routes", "routes", multiple=True, type=click.Path(path_type=Path), help="Also check routing tables.")
def validate(stack_files: tuple[Path, ...], routes: tuple[Path, ...]) -> None:
    """Check Pulumi.<stack>.yaml files; exit 1 with every problem and its key path."""
    if not stack_files and not routes:
        raise click.UsageError("give stack files and/or --routes <routing table>")
    failed = False
    for table in routes:
        from scaler.routing import load_routing_table

        try:
            load_routing_table(table)
            click.echo(f"ok: {table}")
        except ConfigError as exc:
            failed = True
            click.echo(str(exc), err=True)
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


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("gunicorn_args", nargs=-1, type=click.UNPROCESSED)
def webhook(gunicorn_args: tuple[str, ...]) -> None:
    """Serve the webhook intake under gunicorn (settings: GARO_* environment, docs/webhook.md)."""
    from scaler.webhook.serve import run

    run(gunicorn_args)


if __name__ == "__main__":  # pragma: no cover
    main()
