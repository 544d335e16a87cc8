"""`garo images`: is the actions/runner release pinned in images/ still one GitHub takes jobs for?

GitHub stops queueing jobs to a self-hosted runner that has not installed a new
runner release within 30 days of its publication; before that, an outdated
runner downloads and installs the new release before its first job, which on
an ephemeral VM means on every job. So a pin that is merely *behind* already
costs every job 30-60 s, and one behind for more than 30 days loses them all.

Two sources, both optional, the worse verdict wins:

* the releases API (``GET /repos/actions/runner/releases``): the only one that
  knows publication dates, so the only one that can tell "past the 30 days";
* the versions GitHub reports for the organisation's registered runners
  (``--org``): runners newer than the pin have updated themselves.

Exit codes (stable, for CI): 0 current, 1 behind but inside the 30 days,
3 past the 30 days (GitHub refuses the pinned runner), 4 could not check.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests

from scaler.agent.metrics import runner_version_counts
from scaler.github.models import Runner

RELEASES_PATH = "/repos/actions/runner/releases"
WINDOW = timedelta(days=30)  # GitHub's grace period for a new runner release
_PIN = re.compile(r'variable\s+"runner_version"\s*\{[^}]*?default\s*=\s*"([^"]*)"', re.S)

Version = tuple[int, int, int]


class Status(enum.IntEnum):
    """A verdict's severity; the value is the command's exit code."""

    CURRENT = 0
    BEHIND = 1
    REFUSED = 3
    UNKNOWN = 4


class CheckError(Exception):
    """A source could not be read; the message says why, never with credentials."""


def parse_version(text: str) -> Version | None:
    """``2.338.0`` or ``v2.338.0`` -> (2, 338, 0); None for anything else."""
    match = re.fullmatch(r"v?([0-9]{1,4})\.([0-9]{1,4})\.([0-9]{1,4})", text.strip())
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


def show(version: Version) -> str:
    return ".".join(map(str, version))


def read_pin(variables: Path) -> Version:
    """The default of ``runner_version`` in images/variables.pkr.hcl."""
    try:
        text = variables.read_text(encoding="utf-8")
    except OSError as exc:
        raise CheckError(f"{variables}: cannot read: {exc.strerror}") from None
    match = _PIN.search(text)
    version = parse_version(match[1]) if match else None
    if version is None:
        raise CheckError(f"{variables}: no runner_version default of the form x.y.z")
    return version


@dataclass(frozen=True)
class Release:
    version: Version
    published_at: datetime


@dataclass(frozen=True)
class Verdict:
    status: Status
    source: str
    message: str


def judge_releases(pin: Version, releases: Iterable[Release], now: datetime) -> Verdict:
    """Compare the pin with published releases; the clock starts at the first release newer than the pin."""
    newer = sorted((r for r in releases if r.version > pin), key=lambda r: r.published_at)
    if not newer:
        return Verdict(Status.CURRENT, "releases", f"{show(pin)} is the newest runner release")
    first, latest = newer[0], max(newer, key=lambda r: r.version)
    deadline = first.published_at + WINDOW
    days = (now - first.published_at).days
    if now >= deadline:
        return Verdict(
            Status.REFUSED,
            "releases",
            f"the image pins {show(pin)}, but {show(first.version)} came out on {first.published_at:%Y-%m-%d} "
            f"({days} days ago): GitHub refuses jobs to runners more than 30 days behind a release. "
            f"Rebuild the image with {show(latest.version)} (docs/images.md, 'Pinning and rolling the runner').",
        )
    return Verdict(
        Status.BEHIND,
        "releases",
        f"the image pins {show(pin)}; {show(latest.version)} is out ({show(first.version)} since "
        f"{first.published_at:%Y-%m-%d}): every VM updates its runner before its job (30-60 s), and from "
        f"{deadline:%Y-%m-%d} GitHub refuses {show(pin)}. Rebuild the image with {show(latest.version)}.",
    )


def judge_runners(pin: Version, runners: Sequence[Runner]) -> Verdict:
    """Compare the pin with what registered runners report (they report the version they run)."""
    counts = runner_version_counts(runners)
    versions = {parsed: (v, n) for v, n in counts.items() if (parsed := parse_version(v)) is not None}
    if not versions:
        return Verdict(Status.UNKNOWN, "runners", f"none of {len(runners)} registered runners reports a version")
    newest = show(max(versions))
    seen = ", ".join(f"{v} x{n}" for _, (v, n) in sorted(versions.items()))
    if max(versions) > pin:
        return Verdict(
            Status.BEHIND,
            "runners",
            f"registered runners report {seen}; the image pins {show(pin)}: runners update themselves to "
            f"{newest} before their jobs. Rebuild the image with {newest}.",
        )
    return Verdict(Status.CURRENT, "runners", f"registered runners report {seen}; none is newer than {show(pin)}")


def fetch_releases(api_url: str, token: str | None = None, session: requests.Session | None = None) -> list[Release]:
    """The latest 100 published runner releases (drafts and pre-releases left out)."""
    from scaler.github.http import ACCEPT, API_VERSION

    headers = {"Accept": ACCEPT, "X-GitHub-Api-Version": API_VERSION}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    url = api_url.rstrip("/") + RELEASES_PATH
    try:
        response = (session or requests.Session()).get(url, params={"per_page": 100}, headers=headers, timeout=15)
    except requests.RequestException as exc:
        raise CheckError(f"releases API unreachable ({type(exc).__name__})") from None
    if response.status_code != 200:
        raise CheckError(f"releases API answered {response.status_code}")
    try:
        items = response.json()
    except ValueError:
        raise CheckError("releases API answered with something that is not JSON") from None
    if not isinstance(items, list):
        raise CheckError("releases API answered with something that is not a list of releases")
    releases = []
    for item in items:
        if not isinstance(item, dict) or item.get("draft") or item.get("prerelease"):
            continue
        version = parse_version(str(item.get("tag_name", "")))
        try:
            published = datetime.fromisoformat(str(item.get("published_at")).replace("Z", "+00:00"))
        except ValueError:
            continue
        if version is not None and published.tzinfo is not None:
            releases.append(Release(version, published))
    return releases


def fetch_runners(org: str, env: Mapping[str, str]) -> list[Runner]:
    """The organisation's runners, as a token (GARO_GITHUB_TOKEN) or App (GARO_GITHUB_APP_ID + key) sees them."""
    from scaler.github.env import client_from_env
    from scaler.github.models import GitHubError

    try:
        client = client_from_env(org, env)
    except ValueError as exc:
        raise CheckError(f"--org: {exc}") from None
    try:
        return list(client.list_runners())
    except (GitHubError, requests.RequestException) as exc:
        raise CheckError(f"cannot list the runners of {org} ({type(exc).__name__})") from None


def run(
    variables: Path,
    env: Mapping[str, str],
    *,
    org: str | None = None,
    releases: bool = True,
    now: datetime | None = None,
) -> tuple[int, list[str]]:
    """The `garo images` command: the exit code and the lines to print."""
    try:
        pin = read_pin(variables)
    except CheckError as exc:
        return Status.UNKNOWN, [f"error: {exc}"]
    api_url = env.get("GARO_GITHUB_API_URL", "") or "https://api.github.com"
    now = now or datetime.now(UTC)
    verdicts: list[Verdict] = []
    lines = [f"pinned: actions/runner {show(pin)} ({variables})"]
    if releases:
        try:
            verdicts.append(judge_releases(pin, fetch_releases(api_url, env.get("GARO_GITHUB_TOKEN") or None), now))
        except CheckError as exc:
            lines.append(f"releases: cannot check: {exc}")
    if org:
        try:
            verdicts.append(judge_runners(pin, fetch_runners(org, env)))
        except CheckError as exc:
            lines.append(f"runners: cannot check: {exc}")
    lines += [f"{v.source}: {v.status.name.lower()}: {v.message}" for v in verdicts]
    known = [v.status for v in verdicts if v.status is not Status.UNKNOWN]
    if not known:
        lines.append("error: no source could tell whether the pin is current")
        return Status.UNKNOWN, lines
    return max(known), lines
