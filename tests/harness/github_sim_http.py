"""The GitHub simulator (:mod:`scaler.github.sim`) served over real HTTP, for agents in other processes.

Prism answers from GitHub's OpenAPI examples and keeps no state, so it cannot
show a runner taking a job or a job being stolen. This server puts the
stateful simulator behind the four REST endpoints the agent's
:class:`scaler.github.client.GitHubClient` calls, with the status codes and
body shapes of GitHub's description (``generate-jitconfig`` 201, runner lists
with ``total_count`` and pages, ``DELETE`` 204, 404/409/422 with a
``message``). Requests without a bearer token get 401, as on GitHub.

Each credential (the bearer token: one per App installation) has its own
hourly core limit (``hourly_limit``), reported in ``x-ratelimit-*`` headers and
by ``GET /rate_limit`` (which, as on GitHub, does not count against it). Runner
listing pages carry an ``ETag``; a request whose ``If-None-Match`` names the
page's current one gets ``304 Not Modified``, which (GitHub's documented rule)
does not count against the limit either. Every
JIT POST is recorded with its credential and time in ``jit_posts``, so a test
can check what each App was sent per minute.

Faults: :meth:`GitHubSimServer.fail_next` makes the next requests (to one
endpoint or any) answer a 5xx, or a 429 with ``Retry-After`` (a secondary rate
limit), before they reach the simulator.

The simulator is not thread-safe; every call holds :attr:`GitHubSimServer.lock`,
which the owner of the world (a test, the chaos driver) also holds while it
queues, boots, assigns or completes jobs.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from scaler.github.models import GitHubError
from scaler.github.sim import GitHubSim

_RUNNERS = re.compile(r"^/orgs/(?P<org>[^/]+)/actions/runners$")
_GROUP_RUNNERS = re.compile(r"^/orgs/(?P<org>[^/]+)/actions/runner-groups/(?P<group>\d+)/runners$")
_RATE_LIMIT = re.compile(r"^/rate_limit$")
_JIT = re.compile(r"^/orgs/(?P<org>[^/]+)/actions/runners/generate-jitconfig$")
_RUNNER = re.compile(r"^/orgs/(?P<org>[^/]+)/actions/runners/(?P<id>\d+)$")
_JOB = re.compile(r"^/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)/actions/jobs/(?P<id>\d+)$")


class _Quiet(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """The agent's own metrics and logs say what it called; a line per request buries them."""


class GitHubSimServer:
    """``url`` is what a stack's ``garo:github.apiUrl`` names; ``calls`` counts answers by endpoint and status."""

    def __init__(
        self, sim: GitHubSim, org: str = "octo-org", hourly_limit: int = 15_000, clock: Callable[[], float] = time.time
    ) -> None:
        self.sim, self.org = sim, org
        self.hourly_limit, self.clock = hourly_limit, clock
        self.used: dict[str, tuple[float, int]] = {}  # credential -> (window start, requests in it)
        self.jit_posts: list[tuple[str, float]] = []  # (credential, time) per JIT config generated
        self.lock = threading.RLock()
        self.calls: dict[str, int] = {}
        self._faults: list[list[Any]] = []  # [status, remaining, endpoint or None]
        self._server: BaseWSGIServer = make_server("127.0.0.1", 0, self.wsgi, threaded=True, request_handler=_Quiet)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="github-sim", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=5)

    def fail_next(self, status: int, count: int = 1, endpoint: str | None = None) -> None:
        """The next ``count`` requests (to ``endpoint``: jit, list, delete, job) answer ``status``."""
        with self.lock:
            self._faults.append([status, count, endpoint])

    # ------------------------------------------------------------------ HTTP

    def wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        status, body, headers = self.handle(request)
        payload = b"" if body is None else json.dumps(body).encode()
        response = Response(payload, status=status, headers=headers, content_type="application/json; charset=utf-8")
        return response(environ, start_response)

    def handle(self, request: Request) -> tuple[int, Any, dict[str, str]]:
        if not request.headers.get("Authorization", "").startswith(("Bearer ", "token ")):
            return 401, {"message": "Requires authentication"}, {}
        credential = request.headers["Authorization"].split(" ", 1)[1]
        endpoint, match = self._route(request.method, request.path)
        if endpoint is None or match is None:
            return 404, {"message": "Not Found"}, {}
        with self.lock:
            if endpoint == "rate_limit":
                core = self._core(credential, spend=False)
                return 200, {"resources": {"core": core}, "rate": core}, {}
            core = self._core(credential, spend=True)
            limits = {f"x-ratelimit-{k}": str(max(v, 0)) for k, v in core.items()}
            if core["remaining"] < 0:
                return 403, {"message": "API rate limit exceeded for installation."}, limits
            fault = next((f for f in self._faults if f[1] > 0 and f[2] in (None, endpoint)), None)
            if fault is not None:
                fault[1] -= 1
                self._count(endpoint, fault[0])
                if fault[0] == 429:
                    return 429, {"message": "You have exceeded a secondary rate limit."}, {"Retry-After": "1"}
                return fault[0], {"message": "Server Error"}, {}
            try:
                status, body = self._answer(endpoint, match, request)
            except GitHubError as exc:
                status, body = exc.status or 500, {"message": str(exc)}
            if endpoint in ("list", "group-list") and status == 200:
                etag = 'W/"' + hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:32] + '"'
                if request.headers.get("If-None-Match") == etag:  # unchanged: free, as on GitHub
                    self._count(endpoint, 304)
                    core = self._core(credential, spend=False, refund=True)
                    return 304, None, {f"x-ratelimit-{k}": str(max(v, 0)) for k, v in core.items()} | {"ETag": etag}
                limits["ETag"] = etag
            self._count(endpoint, status)
            if endpoint == "jit" and status == 201:
                self.jit_posts.append((credential, self.clock()))
            if endpoint in ("list", "group-list") and status == 200:
                page, per_page = (
                    max(int(request.args.get("page", 1)), 1),
                    min(int(request.args.get("per_page", 30)), 100),
                )
                if body["total_count"] > page * per_page:  # GitHub's pagination header
                    limits["Link"] = f'<{self.url}{request.path}?per_page={per_page}&page={page + 1}>; rel="next"'
            return status, body, limits

    def _core(self, credential: str, spend: bool, refund: bool = False) -> dict[str, int]:
        """The credential's hourly window (fixed, from its first request), after spending one if ``spend``.

        ``refund`` gives back the one just spent (the request turned out to be a 304).
        """
        now = self.clock()
        start, used = self.used.get(credential, (now, 0))
        if now >= start + 3600:
            start, used = now, 0
        used += (1 if spend else 0) - (1 if refund else 0)
        self.used[credential] = (start, used)
        limit = self.hourly_limit
        return {"limit": limit, "remaining": limit - used, "reset": int(start + 3600), "used": used}

    def _count(self, endpoint: str, status: int) -> None:
        key = f"{endpoint} {status}"
        self.calls[key] = self.calls.get(key, 0) + 1

    def _route(self, method: str, path: str) -> tuple[str | None, re.Match[str] | None]:
        for name, verb, pattern in (
            ("jit", "POST", _JIT),
            ("list", "GET", _RUNNERS),
            ("group-list", "GET", _GROUP_RUNNERS),
            ("rate_limit", "GET", _RATE_LIMIT),
            ("delete", "DELETE", _RUNNER),
            ("job", "GET", _JOB),
        ):
            match = pattern.match(path)
            if match and method == verb:
                if "org" in match.groupdict() and match["org"].lower() != self.org.lower():
                    return None, None
                return name, match
        return None, None

    def _answer(self, endpoint: str, match: re.Match[str], request: Request) -> tuple[int, Any]:
        sim = self.sim
        if endpoint == "jit":
            body = request.get_json(silent=True) or {}
            if not isinstance(body.get("runner_group_id"), int) or not isinstance(body.get("labels"), list):
                return 422, {"message": "Invalid request: runner_group_id and labels are required"}
            jit = sim.generate_jit_config(str(body.get("name", "")), body["runner_group_id"], body["labels"])
            runner = {"id": jit.runner_id, "name": jit.runner_name, "os": "linux", "status": "offline", "busy": False}
            runner["labels"] = [{"id": i + 1, "name": n, "type": "custom"} for i, n in enumerate(body["labels"])]
            return 201, {"runner": runner, "encoded_jit_config": jit.encoded}
        if endpoint in ("list", "group-list"):
            group = int(match["group"]) if endpoint == "group-list" else None
            everyone = sorted(sim.list_runners(group), key=lambda r: r.id)
            per_page = min(int(request.args.get("per_page", 30)), 100)
            page = max(int(request.args.get("page", 1)), 1)
            chosen = everyone[(page - 1) * per_page : page * per_page]
            rows = [
                {
                    "id": r.id,
                    "name": r.name,
                    "os": "linux",
                    "status": r.status,
                    "busy": r.busy,
                    "labels": [{"id": i + 1, "name": n, "type": "custom"} for i, n in enumerate(r.labels)],
                }
                for r in chosen
            ]
            return 200, {"total_count": len(everyone), "runners": rows}
        if endpoint == "delete":
            runner_id = int(match["id"])
            if runner_id not in sim.runners:
                return 404, {"message": "Not Found"}
            sim.delete_runner(runner_id)
            return 204, None
        job = sim.get_job(f"{match['owner']}/{match['repo']}", int(match["id"]))
        return 200, {
            "id": job.id,
            "status": job.status,
            "conclusion": job.conclusion,
            "runner_name": job.runner_name,
            "labels": list(job.labels),
        }
