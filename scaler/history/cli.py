"""`garo history export|import|generate|check`: the job history `garo simulate` replays.

Imports are lazy so `garo --help` does not load requests or sqlite code.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click


@click.group()
def history() -> None:
    """Job history for `garo simulate` (one JSON job per line; docs/simulate.md)."""


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def _report_rejected(kind: str, reasons: list[str], skip_bad: bool) -> None:
    """Print what was rejected; exit 1 unless --skip-bad (then it is still counted and shown)."""
    for reason in reasons[:20]:
        click.echo(f"rejected: {reason}", err=True)
    if len(reasons) > 20:
        click.echo(f"rejected: ... and {len(reasons) - 20} more", err=True)
    if reasons and not skip_bad:
        _fail(f"{len(reasons)} {kind} rejected (listed above); pass --skip-bad to accept the rest")


@history.command()
@click.option("--org", required=True, help="The organisation whose workflow jobs to export.")
@click.option("--since", required=True, help="How far back: 30d, 12h, or an ISO date (2026-10-01).")
@click.option("--repos", multiple=True, help="Only these repositories (name or owner/name; repeat or comma-separate).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="The JSONL file to write.")
@click.option("--reserve", default=0.2, show_default=True, help="Share of the installation's hourly budget left alone.")
@click.option("--skip-bad", is_flag=True, help="Exit 0 even if GitHub returned jobs that are not valid records.")
def export(org: str, since: str, repos: tuple[str, ...], out: Path, reserve: float, skip_bad: bool) -> None:
    """Pull workflow runs and their jobs from GitHub (GARO_GITHUB_TOKEN or App; resumable; progress on stderr)."""
    from datetime import UTC, datetime

    from scaler.github.env import client_from_env
    from scaler.github.models import GitHubError
    from scaler.github.ratelimit import SystemClock
    from scaler.history.export import Exporter, ExportError, parse_since
    from scaler.history.github_jobs import Pacer, RunsReader

    names = [n.strip() for item in repos for n in item.split(",") if n.strip()]
    chosen = sorted({n if "/" in n else f"{org}/{n}" for n in names}) or None
    try:
        client = client_from_env(org, os.environ)
        clock = SystemClock()
        reader = RunsReader(client, Pacer(client.http, clock, reserve=reserve, slow_below=max(reserve, 0.5)))
        exporter = Exporter(
            reader,
            out,
            org=org,
            since=parse_since(since, datetime.now(UTC)),
            repos=chosen,
            progress=lambda line: click.echo(line, err=True),
            clock=clock,
        )
        report = exporter.run()
    except (ExportError, ValueError) as exc:
        _fail(str(exc))
        return
    except GitHubError as exc:
        _fail(f"{exc}; progress is saved: run the same command again to resume")
        return
    except KeyboardInterrupt:
        _fail("interrupted; progress is saved: run the same command again to resume")
        return
    click.echo(f"{out}: {report.summary()}", err=True)
    _report_rejected("jobs", report.rejected, skip_bad)


@history.command(name="import")
@click.option("--bus", "bus", help="The embedded bus: sqlite://<path> (as GARO_BUS) or a file path.")
@click.option("--log", "logs", multiple=True, type=click.Path(path_type=Path), help="A webhook JSON log file; repeat.")
@click.option("--department", help="Only this department's jobs.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="The JSONL file to write (new).")
@click.option("--skip-bad", is_flag=True, help="Write the good jobs and exit 0 even if some events were rejected.")
def import_(bus: str | None, logs: tuple[Path, ...], department: str | None, out: Path, skip_bad: bool) -> None:
    """Rebuild job history from the embedded bus or the webhook's JSON logs."""
    from scaler.history.importer import HistoryImportError, ImportReport, import_bus, import_logs

    if (bus is None) == (not logs):
        raise click.UsageError("give either --bus or --log")
    if out.exists():
        _fail(f"{out} exists; choose another --out")
    reports: list[ImportReport] = []
    try:
        if bus is not None:
            from scaler.bus.url import parse_bus_url

            path = parse_bus_url(bus).path if bus.startswith("sqlite://") else bus
            reports.append(import_bus(Path(path), department))
        for log in logs:
            with open(log, encoding="utf-8", errors="replace") as stream:
                reports.append(import_logs(stream, str(log), department))
    except (HistoryImportError, OSError, ValueError) as exc:
        _fail(str(exc))
    records = {r.id: r for report in reports for r in report.records}
    rejected = [reason for report in reports for reason in report.rejected]
    for report in reports:
        click.echo(report.summary(), err=True)
    _report_rejected("events or jobs", rejected, skip_bad)  # without --skip-bad: exit before writing anything
    with out.open("x", encoding="utf-8") as stream:
        for record in sorted(records.values(), key=lambda r: (r.created_at, r.id)):
            stream.write(record.to_line())
    click.echo(f"{out}: {len(records)} jobs", err=True)


@history.command()
@click.option("--days", default=30, show_default=True, help="Length of the trace.")
@click.option("--jobs-per-day", default=1700.0, show_default=True, help="Mean jobs per day (weekends included).")
@click.option("--seed", required=True, type=int, help="The same seed and options give the same trace.")
@click.option("--start", default="2026-11-02", show_default=True, help="First day (UTC), an ISO date.")
@click.option("--tz-offset", default=0.0, show_default=True, help="The office's hours from UTC.")
@click.option("--matrix-share", default=0.05, show_default=True, help="Share of runs that are matrix bursts.")
@click.option("--repositories", default=20, show_default=True, help="How many synthetic repositories.")
@click.option("--labels", "label_mix", help="Label mix: 'self-hosted,linux,small=0.7;self-hosted,linux,large=0.3'.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="The JSONL file to write (new).")
def generate(
    days: int,
    jobs_per_day: float,
    seed: int,
    start: str,
    tz_offset: float,
    matrix_share: float,
    repositories: int,
    label_mix: str | None,
    out: Path,
) -> None:
    """Write a synthetic trace (source: synthetic; never mistaken for real history)."""
    from datetime import UTC, datetime

    from scaler.history.generate import DEFAULT_LABELS, TraceShape, parse_label_mix
    from scaler.history.generate import generate as make_trace

    try:
        shape = TraceShape(
            days=days,
            jobs_per_day=jobs_per_day,
            start=datetime.fromisoformat(start).replace(tzinfo=UTC),
            tz_offset_hours=tz_offset,
            matrix_share=matrix_share,
            repositories=repositories,
            labels=parse_label_mix(label_mix) if label_mix else DEFAULT_LABELS,
        )
    except ValueError as exc:
        _fail(str(exc))
        return
    if out.exists():
        _fail(f"{out} exists; choose another --out")
    records = sorted(make_trace(shape, seed), key=lambda r: (r.created_at, r.id))
    with out.open("x", encoding="utf-8") as stream:
        for record in records:
            stream.write(record.to_line())
    click.echo(f"{out}: {len(records)} synthetic jobs over {days} days (seed {seed})", err=True)


@history.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--skip-bad", is_flag=True, help="Exit 0 even with bad lines (they are still counted and listed).")
def check(path: Path, skip_bad: bool) -> None:
    """Read a history file strictly: every bad line with its number; exit 1 if any (unless --skip-bad)."""
    from scaler.history.record import HistoryError, read_history

    try:
        report = read_history(path, skip_bad=True)
    except HistoryError as exc:
        _fail(str(exc))
        return
    for line in report.error_lines():
        click.echo(line, err=True)
    click.echo(report.summary())
    if report.errors and not skip_bad:
        sys.exit(1)
