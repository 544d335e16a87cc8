"""`GitHubClient`: the agent's GitHub, over REST, as a GitHub App or with a plain token.

Org-level runners by default (one App installation serves every department's
repositories); repo-level when `repo="owner/name"` is given. With
`runner_groups`, org-level runners are listed per runner group
(`/orgs/{org}/actions/runner-groups/{id}/runners`), so a reconcile costs pages of
the department's own runners, not of the whole organisation's. Retries, rate
limits and metrics live in `scaler.github.http`; this module only knows the
endpoints and how to turn their JSON into `scaler.github.models`.

Runner listings are conditional GETs: each page's ``ETag`` goes back as
``If-None-Match``, and a page GitHub answers ``304 Not Modified`` is the one
already held. The agent lists its runners on most batches, usually unchanged
since the last time; GitHub does not count a 304 against the installation's
hourly limit ("Best practices for using the REST API": use conditional
requests), so an unchanged listing is free. A page without an ``ETag`` is
simply asked for in full next time.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

import requests
from prometheus_client import CollectorRegistry

from scaler.github.auth import AppCredentials, InstallationToken, InstallationTokenCache, parse_expires_at
from scaler.github.http import GitHubHttp, GitHubMetrics, raise_for
from scaler.github.models import GitHubError, JitConfig, Job, Runner, RunnerGroupInfo
from scaler.github.ratelimit import Clock, JitBudget, SystemClock

log = logging.getLogger(__name__)

PER_PAGE = 100
_MAX_PAGES = 1000  # 100,000 runners: a loop guard, not a real limit
RATE_LIMIT_RECHECK = 60.0  # seconds between GET /rate_limit when the headers say nothing current
_REPO_RE = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")


class GitHubClient:
    """Implements `scaler.github.models.GitHubApi`.

    Give either `app` (+ `installation_id`, looked up from the org if omitted)
    or `token` (development). Pass `registry` to export metrics, `clock` to
    control time in tests, and `jit_budget` to share one JIT budget between
    clients of the same App.
    """

    def __init__(
        self,
        org: str,
        *,
        app: AppCredentials | None = None,
        installation_id: int | None = None,
        token: str | None = None,
        repo: str | None = None,
        api_url: str = "https://api.github.com",
        registry: CollectorRegistry | None = None,
        clock: Clock | None = None,
        session: requests.Session | None = None,
        jit_per_minute: int = 180,
        jit_budget: JitBudget | None = None,
        runner_groups: Sequence[int] = (),
        **http_options: Any,
    ) -> None:
        if (app is None) == (token is None):
            raise ValueError("GitHubClient needs exactly one of app= (GitHub App) or token=")
        if repo is not None and not _REPO_RE.match(repo):
            raise ValueError(f"repo must look like 'owner/name', got {repo!r}")
        self.org = org
        self.repo = repo
        self.runner_groups = tuple(dict.fromkeys(int(g) for g in runner_groups))
        self._rate_asked_at = float("-inf")
        self.clock = clock or SystemClock()
        self.metrics = GitHubMetrics(registry)
        self.http = GitHubHttp(api_url, session=session, clock=self.clock, metrics=self.metrics, **http_options)
        self.jit_budget = jit_budget or JitBudget(jit_per_minute, clock=self.clock)
        self.metrics.jit_budget.set_function(self.jit_budget.remaining)
        self._app = app
        self._installation_id = installation_id
        self._token = token
        self._tokens = InstallationTokenCache(self._fetch_installation_token, clock=self.clock)
        # Runner listing pages by path: page -> (ETag, body, Link header), for conditional GETs.
        self._pages: dict[str, dict[int, tuple[str, dict[str, Any], str]]] = {}

    @property
    def app_id(self) -> str | None:
        """The App this client acts as (None with a plain token)."""
        return self._app.app_id if self._app else None

    def __repr__(self) -> str:
        mode = f"app={self._app.app_id}" if self._app else "token=<hidden>"
        return f"GitHubClient(org={self.org!r}, repo={self.repo!r}, {mode}, api_url={self.http.base_url!r})"

    # ------------------------------------------------------------------ auth

    def _app_auth(self) -> str:
        assert self._app is not None
        return f"Bearer {self._app.jwt()}"

    def _auth(self) -> str:
        if self._token is not None:
            return f"Bearer {self._token}"
        return f"Bearer {self._tokens.get()}"

    def installation_id(self) -> int:
        """The App's installation on the org (or repo), looked up once if not configured."""
        if self._installation_id is None:
            path = f"/repos/{self.repo}/installation" if self.repo else f"/orgs/{self.org}/installation"
            endpoint = "/repos/{owner}/{repo}/installation" if self.repo else "/orgs/{org}/installation"
            response = self.http.request("GET", path, endpoint=endpoint, auth=self._app_auth)
            raise_for(response, "GET", path)
            self._installation_id = int(response.json()["id"])
        return self._installation_id

    def _fetch_installation_token(self) -> InstallationToken:
        path = f"/app/installations/{self.installation_id()}/access_tokens"
        response = self.http.request(
            "POST", path, endpoint="/app/installations/{installation_id}/access_tokens", auth=self._app_auth
        )
        raise_for(response, "POST", path)
        body = response.json()
        expires_at = parse_expires_at(body.get("expires_at"), self.clock.time())
        log.info("github: new installation token for installation %s", self._installation_id)
        return InstallationToken(token=str(body["token"]), expires_at=expires_at)

    def _call(self, method: str, path: str, endpoint: str, **kwargs: Any) -> requests.Response:
        """A call with the installation token; one retry with a fresh token on 401."""
        try:
            response = self.http.request(method, path, endpoint=endpoint, auth=self._auth, **kwargs)
        except GitHubError as exc:
            if exc.status != 401 or self._app is None:
                raise
            self._tokens.invalidate()
            response = self.http.request(method, path, endpoint=endpoint, auth=self._auth, **kwargs)
        return response

    # ------------------------------------------------------------------ runners

    def _scope(self) -> tuple[str, str]:
        """Path prefix and its metrics template for runner endpoints."""
        if self.repo:
            return f"/repos/{self.repo}/actions/runners", "/repos/{owner}/{repo}/actions/runners"
        return f"/orgs/{self.org}/actions/runners", "/orgs/{org}/actions/runners"

    def generate_jit_config(self, name: str, runner_group_id: int, labels: Sequence[str]) -> JitConfig:
        """Register a single-use runner; blocks while the JIT budget is spent."""
        prefix, template = self._scope()
        waited = self.jit_budget.acquire()
        if waited:
            log.info("github: JIT budget spent, waited %.1fs", waited)
        body = {"name": name, "runner_group_id": runner_group_id, "labels": list(labels), "work_folder": "_work"}
        path = prefix + "/generate-jitconfig"
        response = self._call("POST", path, template + "/generate-jitconfig", json=body)
        raise_for(response, "POST", path)
        data = response.json()
        runner = data["runner"]
        return JitConfig(
            runner_id=int(runner["id"]), runner_name=str(runner["name"]), encoded=str(data["encoded_jit_config"])
        )

    # ------------------------------------------------------------------ runner groups (priority classes)

    def watch_runner_groups(self, ids: Sequence[int]) -> None:
        """List these runner groups' runners too (the priority classes' groups, once synced)."""
        self.runner_groups = tuple(dict.fromkeys([*self.runner_groups, *(int(g) for g in ids)]))

    def list_runner_groups(self) -> list[RunnerGroupInfo]:
        """The organisation's runner groups, in pages of 100."""
        path, template = f"/orgs/{self.org}/actions/runner-groups", "/orgs/{org}/actions/runner-groups"
        groups: list[RunnerGroupInfo] = []
        for page in range(1, _MAX_PAGES + 1):
            response = self._call("GET", path, template, params={"per_page": PER_PAGE, "page": page})
            raise_for(response, "GET", path)
            data = response.json()
            batch = data.get("runner_groups") or []
            groups.extend(
                RunnerGroupInfo(
                    id=int(g["id"]),
                    name=str(g["name"]),
                    visibility=str(g.get("visibility", "")),
                    restricted_to_workflows=bool(g.get("restricted_to_workflows", False)),
                    selected_workflows=tuple(str(w) for w in g.get("selected_workflows") or ()),
                )
                for g in batch
            )
            total = data.get("total_count")
            if len(batch) < PER_PAGE or (isinstance(total, int) and len(groups) >= total):
                break
        return groups

    def repository_ids(self) -> dict[str, int]:
        """``owner/name`` -> id of every repository of the organisation the credential can see."""
        path, template = f"/orgs/{self.org}/repos", "/orgs/{org}/repos"
        ids: dict[str, int] = {}
        for page in range(1, _MAX_PAGES + 1):
            response = self._call("GET", path, template, params={"per_page": PER_PAGE, "page": page, "type": "all"})
            raise_for(response, "GET", path)
            batch = response.json() or []
            ids.update((str(repo["full_name"]), int(repo["id"])) for repo in batch)
            if len(batch) < PER_PAGE:
                break
        return ids

    def create_runner_group(self, name: str, repository_ids: Sequence[int], workflows: Sequence[str]) -> int:
        """A runner group visible to the selected repositories only (and workflows, if any); its id."""
        path, template = f"/orgs/{self.org}/actions/runner-groups", "/orgs/{org}/actions/runner-groups"
        body = {
            "name": name,
            "visibility": "selected",
            "selected_repository_ids": [int(i) for i in repository_ids],
            "allows_public_repositories": False,
            "restricted_to_workflows": bool(workflows),
            "selected_workflows": list(workflows),
        }
        response = self._call("POST", path, template, json=body)
        raise_for(response, "POST", path)
        return int(response.json()["id"])

    def update_runner_group(
        self, group_id: int, name: str, repository_ids: Sequence[int], workflows: Sequence[str]
    ) -> None:
        """Make an existing group admit exactly these repositories and workflows (idempotent)."""
        base = f"/orgs/{self.org}/actions/runner-groups/{int(group_id)}"
        template = "/orgs/{org}/actions/runner-groups/{runner_group_id}"
        body = {
            "name": name,
            "visibility": "selected",
            "allows_public_repositories": False,
            "restricted_to_workflows": bool(workflows),
            "selected_workflows": list(workflows),
        }
        response = self._call("PATCH", base, template, json=body)
        raise_for(response, "PATCH", base)
        path = base + "/repositories"
        response = self._call(
            "PUT", path, template + "/repositories", json={"selected_repository_ids": [int(i) for i in repository_ids]}
        )
        raise_for(response, "PUT", path)

    def list_runners(self) -> Sequence[Runner]:
        """The runners of our runner groups (or of the repo, or of the whole org), in pages of 100."""
        if self.repo or not self.runner_groups:
            return self._list_pages(*self._scope())
        template = "/orgs/{org}/actions/runner-groups/{runner_group_id}/runners"
        return [
            runner
            for group in self.runner_groups
            for runner in self._list_pages(f"/orgs/{self.org}/actions/runner-groups/{group}/runners", template)
        ]

    def _list_pages(self, prefix: str, template: str) -> list[Runner]:
        runners: list[Runner] = []
        held = self._pages.setdefault(prefix, {})
        page = 0
        for page in range(1, _MAX_PAGES + 1):
            data, link = self._conditional_page(prefix, template, page, held)
            batch = data.get("runners") or []
            runners.extend(_runner(item) for item in batch)
            total = data.get("total_count")
            # Stop on a short page or once total_count is reached; Link URLs
            # are not followed so credentials never go to another host.
            if len(batch) < PER_PAGE or (isinstance(total, int) and len(runners) >= total):
                break
            if 'rel="next"' not in link:
                break
        for gone in [p for p in held if p > page]:  # the listing got shorter: those pages are no more
            del held[gone]
        return runners

    def _conditional_page(
        self, prefix: str, template: str, page: int, held: dict[int, tuple[str, dict[str, Any], str]]
    ) -> tuple[dict[str, Any], str]:
        """One page's body and Link header: the held copy if GitHub answers 304 to its ETag, else the new one."""
        last = held.get(page)
        condition = {"If-None-Match": last[0]} if last is not None else None
        response = self._call("GET", prefix, template, params={"per_page": PER_PAGE, "page": page}, headers=condition)
        if response.status_code == 304 and last is not None:
            return last[1], last[2]
        raise_for(response, "GET", prefix)
        data = response.json()
        link = response.headers.get("Link", "")
        etag = response.headers.get("ETag")
        if etag:
            held[page] = (etag, data, link)
        else:
            held.pop(page, None)
        return data, link

    def delete_runner(self, runner_id: int) -> None:
        """Deregister a runner; 404 means it is already gone, which is fine."""
        prefix, template = self._scope()
        path = f"{prefix}/{int(runner_id)}"
        response = self._call("DELETE", path, template + "/{runner_id}")
        if response.status_code == 404:
            log.info("github: runner %s already gone", runner_id)
            return
        raise_for(response, "DELETE", path)

    def rate_limit(self) -> tuple[int, int, float] | None:
        """The installation's core (hourly) limit: (remaining, limit, reset epoch seconds); None if unknown.

        ``GET /rate_limit`` does not count against the limit it reports, so the
        agent may ask whenever the last headers are stale.
        """
        response = self._call("GET", "/rate_limit", "/rate_limit")
        raise_for(response, "GET", "/rate_limit")
        core = (response.json().get("resources") or {}).get("core") or {}
        try:
            state = (int(core["remaining"]), int(core["limit"]), float(core["reset"]))
        except (KeyError, TypeError, ValueError):
            return None
        self.http.rate_limit.remaining, self.http.rate_limit.limit, self.http.rate_limit.reset = state
        return state

    def hourly_remaining(self) -> int | None:
        """Requests left in the installation's hourly window, from the last headers (GET /rate_limit if stale)."""
        known = self.http.rate_limit
        stale = known.remaining is None or (known.reset is not None and known.reset <= self.clock.time())
        if stale and self.clock.monotonic() - self._rate_asked_at >= RATE_LIMIT_RECHECK:
            self._rate_asked_at = self.clock.monotonic()
            try:
                fresh = self.rate_limit()
            except GitHubError:
                return None
            return fresh[0] if fresh else None
        if known.reset is not None and known.reset <= self.clock.time() and known.limit is not None:
            return known.limit  # the window has turned over since the last answer
        return known.remaining

    # ------------------------------------------------------------------ jobs

    def get_job(self, repo_full_name: str, job_id: int) -> Job:
        if not _REPO_RE.match(repo_full_name):
            raise ValueError(f"repo_full_name must look like 'owner/name', got {repo_full_name!r}")
        path = f"/repos/{repo_full_name}/actions/jobs/{int(job_id)}"
        response = self._call("GET", path, "/repos/{owner}/{repo}/actions/jobs/{job_id}")
        raise_for(response, "GET", path)
        data = response.json()
        return Job(
            id=int(data["id"]),
            status=str(data["status"]),
            conclusion=data.get("conclusion"),
            runner_name=data.get("runner_name"),
            labels=tuple(str(label) for label in data.get("labels") or ()),
        )


def _runner(item: dict[str, Any]) -> Runner:
    return Runner(
        id=int(item["id"]),
        name=str(item["name"]),
        status=str(item.get("status", "")),
        busy=bool(item.get("busy", False)),
        labels=tuple(str(label["name"]) for label in item.get("labels") or () if isinstance(label, dict)),
        version=str(item["version"]) if item.get("version") else None,
    )
