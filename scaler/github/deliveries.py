"""Redeliver webhooks GitHub failed to deliver (`garo redeliver --since 2h [--dry-run]`).

GitHub does not retry a failed webhook delivery. Reconcile makes a lost
`queued` event harmless eventually, but asking GitHub to redeliver is faster
and cheaper, e.g. after the webhook service was down. The sweeper reads the
App's delivery log (App JWT, not an installation token), groups attempts by
GUID (a redelivery keeps its GUID), and redelivers the latest attempt of each
GUID that never succeeded. Redeliveries are safe: the webhook de-duplicates on GUID.

At most one redelivery per GUID, decided from what GitHub records rather than
local state (there is no database): GitHub lists every redelivery as a new
attempt with ``redelivery: true``, so a GUID that already has one (asked by an
earlier sweep or by a person) is left alone. Runs every 5 minutes over the
whole 3-day window therefore never redeliver a GUID twice; ``--again`` lifts
the rule for an operator after a long outage. With ``GARO_WEBHOOK_URL`` set,
the one redelivery is not spent while the webhook cannot publish: a sweep
whose ``/readyz`` probe fails redelivers nothing and reports
``webhook_not_ready``. Each run ends with one structured log line
(``redeliver: sweep finished``, with ``outcome`` and the counts) for alerts.

Settings come from the environment, so it runs from a laptop or a scheduled job:

* ``GARO_GITHUB_APP_ID`` - the App's numeric id (required)
* ``GARO_GITHUB_PRIVATE_KEY`` - the App's PEM private key, or
  ``GARO_GITHUB_PRIVATE_KEY_FILE`` - a path to it (one of the two is required)
* ``GARO_GITHUB_API_URL`` - API base URL (default https://api.github.com;
  GHES: https://<host>/api/v3)
* ``GARO_WEBHOOK_URL`` - the webhook service's base URL; when set, a sweep
  first asks its ``/readyz`` (optional)
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlparse

import requests

from scaler.github.auth import AppCredentials
from scaler.github.env import api_url_from_env, app_from_env
from scaler.github.http import GitHubHttp, raise_for
from scaler.github.models import GitHubError

log = logging.getLogger(__name__)

PER_PAGE = 100
MAX_PAGES = 200  # 20,000 deliveries; GitHub keeps three days of them
#: GitHub.com lets deliveries of the past 3 days be redelivered (GHES: 7); the scheduled sweep looks this far back.
REDELIVERY_WINDOW = "3d"
READY_TIMEOUT = 10.0
SUMMARY = "redeliver: sweep finished"
_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_NEXT = re.compile(r'<([^>]+)>;\s*rel="next"')


@dataclass(frozen=True)
class Delivery:
    id: int
    guid: str
    delivered_at: datetime
    status_code: int
    status: str
    event: str = ""
    action: str | None = None
    redelivery: bool = False  # GitHub's flag: this attempt was asked for, not GitHub's own first try

    @property
    def ok(self) -> bool:
        """GitHub counts only a 2xx answer as delivered (status "OK"); 0 means no answer at all."""
        return 200 <= self.status_code < 300 and self.status.upper() == "OK"


@dataclass
class SweepReport:
    since: datetime
    dry_run: bool
    scanned: int = 0
    redelivered: list[Delivery] = field(default_factory=list)
    skipped: int = 0  # GUIDs delivered successfully at least once
    already_redelivered: int = 0  # GUIDs GitHub already holds a redelivery of: never asked for twice
    failed: list[tuple[Delivery, str]] = field(default_factory=list)
    webhook_ready: bool = True

    @property
    def outcome(self) -> str:
        """One word for alerts: ok, failed (a redelivery was refused) or webhook_not_ready."""
        if not self.webhook_ready:
            return "webhook_not_ready"
        return "failed" if self.failed else "ok"

    def summary(self) -> str:
        verb = "would redeliver" if self.dry_run else "redelivered"
        head = "webhook not ready: redelivered nothing; " if not self.webhook_ready else ""
        return (
            f"{head}{verb} {len(self.redelivered)}, skipped {self.skipped}, "
            f"already redelivered {self.already_redelivered}, failed {len(self.failed)} "
            f"({self.scanned} deliveries since {self.since.isoformat(timespec='seconds')})"
        )

    def log_fields(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "dry_run": self.dry_run,
            "scanned": self.scanned,
            "redelivered": len(self.redelivered),
            "skipped": self.skipped,
            "already_redelivered": self.already_redelivered,
            "failed": len(self.failed),
        }


def parse_duration(text: str) -> timedelta:
    """'90s', '30m', '2h', '3d' -> timedelta."""
    match = _DURATION.match(text.strip())
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"expected a duration like 30m, 2h or 1d, got {text!r}")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def _parse(item: Mapping[str, Any]) -> Delivery | None:
    try:
        when = datetime.fromisoformat(str(item["delivered_at"]).replace("Z", "+00:00"))
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return Delivery(
            id=int(item["id"]),
            guid=str(item["guid"]),
            delivered_at=when,
            status_code=int(item.get("status_code") or 0),
            status=str(item.get("status") or ""),
            event=str(item.get("event") or ""),
            action=item.get("action"),
            redelivery=item.get("redelivery") is True,
        )
    except (KeyError, TypeError, ValueError):
        log.warning("redeliver: skipping an unreadable delivery record (id %r)", item.get("id"))
        return None


class DeliverySweeper:
    """Finds and redelivers failed App webhook deliveries."""

    def __init__(self, app: AppCredentials, http: GitHubHttp, webhook_url: str = "") -> None:
        self.app = app
        self.http = http
        self.webhook_url = webhook_url.rstrip("/")

    def __repr__(self) -> str:
        return f"DeliverySweeper({self.app!r}, {self.http!r})"

    def _auth(self) -> str:
        return f"Bearer {self.app.jwt()}"

    def deliveries_since(self, since: datetime) -> list[Delivery]:
        """Every delivery attempt at or after `since` (newest first, as GitHub lists them)."""
        found: list[Delivery] = []
        params: dict[str, str | int] = {"per_page": PER_PAGE}
        for _ in range(MAX_PAGES):
            response = self.http.request(
                "GET", "/app/hook/deliveries", endpoint="/app/hook/deliveries", auth=self._auth, params=params
            )
            raise_for(response, "GET", "/app/hook/deliveries")
            page = [d for d in (_parse(item) for item in response.json() or []) if d is not None]
            found.extend(d for d in page if d.delivered_at >= since)
            # Only the cursor is taken from the Link header: the request stays on our base URL.
            match = _NEXT.search(response.headers.get("Link", ""))
            cursor = parse_qs(urlparse(match.group(1)).query).get("cursor", [None])[0] if match else None
            if not page or not cursor or min(d.delivered_at for d in page) < since:
                break
            params = {"per_page": PER_PAGE, "cursor": cursor}
        return found

    def redeliver(self, delivery_id: int) -> None:
        path = f"/app/hook/deliveries/{int(delivery_id)}/attempts"
        response = self.http.request(
            "POST", path, endpoint="/app/hook/deliveries/{delivery_id}/attempts", auth=self._auth
        )
        raise_for(response, "POST", path)

    def webhook_is_ready(self) -> bool:
        """The webhook's ``/readyz`` answers 200 (its bus accepts events); True when no URL is set."""
        if not self.webhook_url:
            return True
        try:
            response = requests.get(f"{self.webhook_url}/readyz", timeout=READY_TIMEOUT)
        except requests.RequestException as exc:
            log.warning("redeliver: webhook readiness probe failed", extra={"error": type(exc).__name__})
            return False
        return response.status_code == 200

    def sweep(self, since: datetime, dry_run: bool = False, again: bool = False) -> SweepReport:
        """Redeliver each GUID in the window that never succeeded, once (``again``: also a second time)."""
        deliveries = self.deliveries_since(since)
        report = SweepReport(since=since, dry_run=dry_run, scanned=len(deliveries))
        latest: dict[str, Delivery] = {}
        delivered: set[str] = set()
        redelivered: set[str] = set()
        for d in deliveries:
            current = latest.get(d.guid)
            if current is None or (d.delivered_at, d.id) > (current.delivered_at, current.id):
                latest[d.guid] = d
            if d.ok:
                delivered.add(d.guid)
            if d.redelivery:
                redelivered.add(d.guid)
        todo: list[Delivery] = []
        for guid, last in sorted(latest.items(), key=lambda kv: kv[1].delivered_at):
            # One success is enough: a failed manual redelivery after it changes nothing.
            if guid in delivered:
                report.skipped += 1
            elif guid in redelivered and not again:
                report.already_redelivered += 1
            else:
                todo.append(last)
        if todo and not dry_run and not self.webhook_is_ready():
            report.webhook_ready = False
            return report
        for last in todo:
            guid = last.guid
            if not dry_run:
                try:
                    self.redeliver(last.id)
                except GitHubError as exc:
                    report.failed.append((last, str(exc)))
                    continue
            log.info(
                "redeliver: %s %s (%s, last status %s)",
                "would redeliver" if dry_run else "redelivered",
                guid,
                last.event,
                last.status_code,
                extra={"delivery": guid, "delivery_id": last.id},
            )
            report.redelivered.append(last)
        return report


def sweeper_from_env(env: Mapping[str, str]) -> DeliverySweeper:
    """Build a sweeper from GARO_GITHUB_* variables; ValueError names what is missing."""
    app = app_from_env(env)
    api_url = api_url_from_env(env)
    webhook_url = env.get("GARO_WEBHOOK_URL", "").strip()
    if webhook_url and urlparse(webhook_url).scheme not in ("http", "https"):
        raise ValueError("GARO_WEBHOOK_URL must be the webhook's http(s) base URL")
    return DeliverySweeper(app, GitHubHttp(api_url), webhook_url)


def run(since: str, dry_run: bool, env: Mapping[str, str], again: bool = False) -> tuple[int, list[str]]:
    """The `garo redeliver` command: returns the exit code and the lines to print.

    Every run, whatever its end, logs one ``redeliver: sweep finished`` line
    whose ``outcome`` (ok, failed, webhook_not_ready, error) alerts key on;
    the exit code is 0 only for ``ok``, so a scheduled job's execution fails too.
    """
    try:
        window = parse_duration(since)
        sweeper = sweeper_from_env(env)
        report = sweeper.sweep(datetime.now(UTC) - window, dry_run=dry_run, again=again)
    except (ValueError, GitHubError) as exc:
        log.error(SUMMARY, extra={"outcome": "error", "error": type(exc).__name__})
        return 1, [f"error: {exc}"]
    log.log(logging.INFO if report.outcome == "ok" else logging.ERROR, SUMMARY, extra=report.log_fields())
    verb = "would redeliver" if dry_run else "redelivered"
    lines = [
        f"{verb} {d.guid} ({d.event}{'.' + d.action if d.action else ''}, last status {d.status_code})"
        for d in report.redelivered
    ]
    lines += [f"failed {d.guid}: {error}" for d, error in report.failed]
    lines.append(report.summary())
    return (0 if report.outcome == "ok" else 1), lines
