"""Reading workflow runs and jobs from GitHub's REST API, within the installation's budget.

The calls go through `scaler.github` (its retries, its 403/429 handling that
waits what `Retry-After` or `x-ratelimit-reset` say, its token cache). What is
added here is pacing: the export shares the installation's hourly budget with
the agent, which needs it for JIT configs, so it never spends the last
`reserve` of it and spreads what is left over the time to the reset once it
runs low, instead of running into 403s.

Pagination follows GitHub's `Link: <...>; rel="next"` header, but only the
page number is taken from it: the request stays on the configured API URL, so
a credential never goes to a host a response named.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlparse

from scaler.github.client import GitHubClient
from scaler.github.http import GitHubHttp, raise_for
from scaler.github.ratelimit import Clock
from scaler.history.record import parse_time

log = logging.getLogger(__name__)

PER_PAGE = 100
MAX_PAGES = 10_000  # a loop guard: a server that always says "next" must not keep us forever
_NEXT = re.compile(r'<([^>]+)>;\s*rel="next"')


@dataclass
class Pacer:
    """Waits before a call when the installation's remaining budget runs low.

    * more than `slow_below` x limit left: no wait;
    * less: wait (time to reset) / (calls left above the reserve), spreading them to the reset;
    * at or below `reserve` x limit: wait for the reset.
    """

    http: GitHubHttp
    clock: Clock
    reserve: float = 0.2
    slow_below: float = 0.5
    waited: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.reserve < 1 or not self.reserve <= self.slow_below <= 1:
            raise ValueError("reserve must be in [0, 1) and at most slow_below (at most 1)")

    def delay(self) -> float:
        state = self.http.rate_limit
        if state.remaining is None or state.limit is None or state.reset is None:
            return 0.0
        until_reset = state.reset - self.clock.time()
        if until_reset <= 0:
            return 0.0  # the budget has been renewed since GitHub last told us
        spare = state.remaining - int(state.limit * self.reserve)
        if spare <= 0:
            return until_reset + 1.0
        if state.remaining < state.limit * self.slow_below:
            return until_reset / spare
        return 0.0

    def before_call(self) -> float:
        wait = self.delay()
        if wait > 0:
            self.clock.sleep(wait)
            self.waited += wait
        return wait


class RunsReader:
    """Lists an org's repositories, a repository's runs and a run's jobs (all attempts)."""

    def __init__(self, client: GitHubClient, pacer: Pacer) -> None:
        self.client = client
        self.pacer = pacer
        self.calls = 0

    def _pages(
        self, path: str, endpoint: str, params: Mapping[str, str | int], key: str | None
    ) -> Iterator[list[dict[str, Any]]]:
        page = 1
        for _ in range(MAX_PAGES):
            self.pacer.before_call()
            self.calls += 1
            query = {**params, "per_page": PER_PAGE, "page": page}
            # _call: the client's installation token, refreshed once on a 401.
            response = self.client._call("GET", path, endpoint, params=query)
            raise_for(response, "GET", path)
            body = response.json()
            items = body.get(key) if key is not None and isinstance(body, dict) else body
            if not isinstance(items, list):
                raise ValueError(
                    f"GET {path}: expected a list{f' under {key!r}' if key else ''}, got {type(items).__name__}"
                )
            yield [item for item in items if isinstance(item, dict)]
            following = next_page(response.headers.get("Link", ""))
            # A short page is the last one, whatever the Link header says.
            if following is None or following <= page or len(items) < PER_PAGE:
                return
            page = following

    def org_repos(self, org: str) -> list[str]:
        names: list[str] = []
        for page in self._pages(f"/orgs/{org}/repos", "/orgs/{org}/repos", {"type": "all"}, None):
            names.extend(str(item["full_name"]) for item in page if isinstance(item.get("full_name"), str))
        return sorted(set(names))

    def runs(self, repo: str, since: datetime) -> Iterator[dict[str, Any]]:
        """Runs created at or after `since`, newest first.

        GitHub lists runs newest first. The `created` filter is not used: it
        caps a query at 1,000 results, and GitHub's OpenAPI description
        declares it a plain date-time while GitHub documents a search range
        (`>=...`), so Prism rejects the range. Paging stops at the first page
        reaching back past `since`.
        """
        path = f"/repos/{repo}/actions/runs"
        params = {"exclude_pull_requests": "true"}
        for page in self._pages(path, "/repos/{owner}/{repo}/actions/runs", params, "workflow_runs"):
            older = False
            for run in page:
                created = _time(run.get("created_at"))
                if created is not None and created < since:
                    older = True
                    continue
                yield run
            if older:
                return

    def jobs(self, repo: str, run_id: int) -> Iterator[dict[str, Any]]:
        path = f"/repos/{repo}/actions/runs/{int(run_id)}/jobs"
        for page in self._pages(path, "/repos/{owner}/{repo}/actions/runs/{run_id}/jobs", {"filter": "all"}, "jobs"):
            yield from page


def _time(value: object) -> datetime | None:
    try:
        return parse_time(value) if isinstance(value, str) else None
    except ValueError:
        return None


def next_page(link: str) -> int | None:
    """The page number of a Link header's rel="next", if any."""
    match = _NEXT.search(link)
    if not match:
        return None
    values = parse_qs(urlparse(match.group(1)).query).get("page")
    try:
        return int(values[0]) if values else None
    except ValueError:
        return None
