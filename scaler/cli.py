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
        from scaler.config.routing import load_routing_table

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


@main.command()
@click.option("--since", default="2h", show_default=True, help="How far back to look (30m, 2h, 1d).")
@click.option("--dry-run", is_flag=True, help="List what would be redelivered; change nothing.")
@click.option("--again", is_flag=True, help="Also redeliver GUIDs GitHub already holds a failed redelivery of.")
def redeliver(since: str, dry_run: bool, again: bool) -> None:
    """Redeliver App webhooks that never got through (settings: GARO_GITHUB_* env, docs/github.md)."""
    import os

    from scaler.github.deliveries import run
    from scaler.logs import configure

    configure("INFO", "scaler.github.deliveries")  # JSON lines on stderr; alerts key on the summary
    code, lines = run(since, dry_run, os.environ, again=again)
    for line in lines:
        click.echo(line, err=line.startswith(("error:", "failed")))
    sys.exit(code)


@main.command()
@click.argument("stack_file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Every resource with all its inputs, as JSON.")
def plan(stack_file: Path, as_json: bool) -> None:
    """Run the Pulumi program offline (mocks) and list what STACK_FILE would declare."""
    import pulumi

    from scaler.plan import plan as run_plan
    from scaler.plan import render_json, render_table

    try:
        result = run_plan(stack_file)
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    except pulumi.RunError as exc:
        click.echo(f"{stack_file}: the program failed: {exc}", err=True)
        sys.exit(1)
    click.echo(render_json(result) if as_json else render_table(result), nl=False)


@main.command()
@click.argument("stack", required=False)
@click.option("--from-file", type=click.Path(path_type=Path), help="JSON saved from `pulumi stack output --json`.")
def outputs(stack: str | None, from_file: Path | None) -> None:
    """Print a stack's portal outputs after checking them against docs/portal-outputs.schema.json."""
    import json

    from scaler.outputs import OutputsError, portal_outputs, read_outputs

    try:
        portal = portal_outputs(read_outputs(stack, from_file))
    except OutputsError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    click.echo(json.dumps(portal, indent=2, sort_keys=True))


@main.command()
@click.option("--stack", help="Department stack file (default: $GARO_STACK_FILE).")
@click.option("--bus", help="sqlite:///path or pubsub://project/subscription (default: $GARO_BUS).")
@click.option("--metrics-port", type=int, envvar="GARO_METRICS_PORT", help="Serve Prometheus metrics on this port.")
@click.option("--log-level", default="INFO", show_default=True)
@click.option("--once", is_flag=True, help="Reconcile, handle one batch until it is durable (max 2 min), then exit.")
def agent(stack: str | None, bus: str | None, metrics_port: int | None, log_level: str, once: bool) -> None:
    """Run the department's scaler (settings: --stack or GARO_STACK_CONFIG, GARO_* env; docs/agent.md)."""
    from scaler.agent.cli import run_agent

    run_agent(stack, bus, metrics_port, log_level, once)


@main.command()
@click.option("--stack", help="Department stack file (default: $GARO_STACK_FILE).")
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
def reconcile(stack: str | None, dry_run: bool) -> None:
    """One reconcile pass over VMs, runners and queued jobs (deletions need two passes)."""
    from scaler.agent.cli import run_reconcile

    run_reconcile(stack, dry_run)


@main.command()
@click.argument("stack_file", required=False, type=click.Path(path_type=Path))
@click.option(
    "--metrics-url",
    help="The agent's metrics endpoint (default: http://127.0.0.1:$GARO_METRICS_PORT/metrics, port 9100).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(stack_file: Path | None, metrics_url: str | None, as_json: bool) -> None:
    """Per group: queued jobs, oldest waiting job, VMs by state, kept VMs, JIT budget left."""
    from scaler.agent.cli import run_status

    run_status(stack_file, metrics_url, as_json)


@main.command()
@click.argument("vm")
@click.option("--stack", help="Department stack file (default: $GARO_STACK_FILE).")
@click.option("--for", "duration", default="2h", show_default=True, help="How long to keep it (at most keepFor).")
@click.option("--release", is_flag=True, help="Remove the keep: the agent may delete the VM again.")
def keep(vm: str, stack: str | None, duration: str, release: bool) -> None:
    """Keep VM for debugging: no reconcile, time-to-live or completed job deletes it until the keep expires."""
    from scaler.agent.cli import run_keep

    run_keep(vm, stack, duration, release)


@main.command()
@click.option(
    "--variables",
    default="images/variables.pkr.hcl",
    show_default=True,
    type=click.Path(path_type=Path),
    help="Packer variables holding the runner pin.",
)
@click.option("--org", help="Also compare with the versions the org's registered runners report (GARO_GITHUB_*).")
@click.option("--no-releases", is_flag=True, help="Do not ask the releases API (offline, or runners only).")
def images(variables: Path, org: str | None, no_releases: bool) -> None:
    """Is the pinned actions/runner current? Exit 0 yes, 1 behind, 3 refused by GitHub, 4 cannot tell."""
    import os

    from scaler.images import run

    code, lines = run(variables, os.environ, org=org, releases=not no_releases)
    for line in lines:
        click.echo(line, err=code != 0 and line.startswith(("error:", "releases: cannot", "runners: cannot")))
    sys.exit(code)


@main.command()
@click.option(
    "--cloud",
    type=click.Choice(["local", "aws"]),
    default="local",
    show_default=True,
    help="aws: the agent's AwsBackend against a moto server (needs moto[server]).",
)
def demo(cloud: str) -> None:
    """Run the whole loop locally: webhook, embedded bus, agent, simulated fleet and GitHub."""
    from scaler.demo import run_demo

    if cloud == "aws":
        from scaler.demo.aws import MotoMissing

        try:
            sys.exit(run_demo(cloud=cloud))
        except MotoMissing as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
    sys.exit(run_demo())


def _add_history() -> None:
    from scaler.history.cli import history

    main.add_command(history)


def _add_simulate() -> None:
    from scaler.simulate.cli import simulate

    main.add_command(simulate)


_add_history()
_add_simulate()


if __name__ == "__main__":  # pragma: no cover
    main()
