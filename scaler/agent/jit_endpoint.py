"""The agent's JIT endpoint: a runner VM trades a cloud-signed proof of identity for its config, once.

``POST /v1/jit-config`` with ``Authorization: Bearer <identity token>`` and no
body. On GCP the token is the VM's Google-signed identity token; on AWS it is
the instance's identity document and its signature from IMDSv2
(:mod:`scaler.backends.aws_identity`). Answers: 200 with the config (``text/plain``, ``no-store``); 401 for a
token that does not verify (signature, issuer, audience, expiry); 403 for a
VM of another project or region, or older than the agent's request for it;
404 while no config is held for that VM yet (the boot agent asks again);
410 once the config was taken or for a token that was already used; 413/431
for an oversized request; 429 past the per-caller rate.

Served over plain HTTP on the department's VPC, from the agent's own process
(:func:`serve`): the only callers the firewall lets in are the department's
runner VMs (infra/network.py); why not HTTPS is in docs/security.md. Neither
the token nor the config is ever logged: the log line names the VM and the
outcome only, and werkzeug's request log is off.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from flask import Blueprint, Flask, Response, request
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from scaler.agent.settings import DEFAULT_JIT_PORT
from scaler.backends.jit_vault import (
    PRUNE_EVERY,
    Identity,
    IdentityVerifier,
    JitVault,
    Refused,
    Verifier,
    token_digest,
)

if TYPE_CHECKING:
    from scaler.agent.settings import AgentSettings
    from scaler.backends.base import Backend

log = logging.getLogger("garo.agent")
PATH = "/v1/jit-config"
MAX_TOKEN = 4096  # bytes of Authorization header; a Compute identity token with format=full is ~1 KB
MAX_BODY = 1024
RATE = 30  # requests per caller (source address) per RATE_WINDOW
RATE_WINDOW = 60.0
RETRY_AFTER = 3  # seconds the boot agent is told to wait after a 404 or 429 when nothing better is known
RETRY_MAX = 30  # seconds at most a VM is told to wait: a config that comes earlier than expected waits no longer
LONG_POLL = 10.0  # seconds an ask waits for a config expected that soon (the boot agent's request times out at 20)


class CallerRate:
    """At most ``limit`` requests per source address in each fixed window; the window map is pruned as it goes."""

    def __init__(self, limit: int = RATE, window: float = RATE_WINDOW, clock: Callable[[], float] = time.monotonic):
        self.limit, self.window, self.clock = limit, window, clock
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._window_start = clock()

    def allow(self, caller: str) -> bool:
        now = self.clock()
        with self._lock:
            if now - self._window_start >= self.window:
                self._counts.clear()
                self._window_start = now
            self._counts[caller] = self._counts.get(caller, 0) + 1
            return self._counts[caller] <= self.limit


class UsedTokens:
    """Digests of tokens that got a config, until they expire: a replayed token gets 410, never a second look."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._until: dict[str, float] = {}
        self._pruned_at = float("-inf")

    def seen(self, digest: str) -> bool:
        now = self.clock()
        with self._lock:
            if now - self._pruned_at >= PRUNE_EVERY:  # a sweep per ask would cost a pass over every used token
                self._pruned_at = now
                self._until = {d: until for d, until in self._until.items() if until > now}
            return self._until.get(digest, now) > now

    def add(self, digest: str, until: float) -> None:
        with self._lock:
            self._until[digest] = until


class VerifiedTokens:
    """Identities of tokens already verified, by digest, until they expire.

    A VM that waits asks every few seconds with the same token (the boot agent
    keeps it for a while): checking its RS256 signature once, not on every 404,
    keeps a burst of waiting VMs cheap for the agent. Bounded: past ``limit``
    entries the expired ones go, and if that is not enough, all of them (they
    are only a cache).
    """

    def __init__(self, clock: Callable[[], float] = time.time, limit: int = 20_000) -> None:
        self.clock, self.limit = clock, limit
        self._lock = threading.Lock()
        self._by_digest: dict[str, Identity] = {}

    def get(self, digest: str) -> Identity | None:
        with self._lock:
            who = self._by_digest.get(digest)
            if who is not None and who.expires_at <= self.clock():
                del self._by_digest[digest]
                return None
            return who

    def add(self, digest: str, who: Identity) -> None:
        with self._lock:
            if len(self._by_digest) >= self.limit:
                now = self.clock()
                self._by_digest = {d: w for d, w in self._by_digest.items() if w.expires_at > now}
                if len(self._by_digest) >= self.limit:
                    self._by_digest.clear()
            self._by_digest[digest] = who

    def forget(self, digest: str) -> None:
        with self._lock:
            self._by_digest.pop(digest, None)


def jit_blueprint(vault: JitVault, verifier: Verifier, rate: CallerRate | None = None) -> Blueprint:
    """The endpoint as a Flask blueprint, for :func:`jit_app` (or any Flask app that wants it)."""
    bp = Blueprint("jit", __name__)
    limiter = rate or CallerRate()
    used = UsedTokens(verifier.clock)
    verified = VerifiedTokens(verifier.clock)

    def answer(status: int, body: str = "", retry: int | None = None) -> Response:
        response = Response(body or _REASONS.get(status, ""), status=status, mimetype="text/plain")
        response.headers["Cache-Control"] = "no-store"
        if retry is not None:
            response.headers["Retry-After"] = str(retry)
        return response

    def take_or_wait(who: Identity) -> str:
        """The VM's config; an ask for one the agent expects within LONG_POLL waits for it instead of a 404."""
        try:
            return vault.take(who)
        except Refused as refused:
            expected = vault.expected_in(who.instance_name)
            if refused.status != 404 or expected is None or expected > LONG_POLL:
                raise
            if not vault.wait_held(who.instance_name, LONG_POLL):
                raise
        return vault.take(who)  # it arrived while this ask waited (or a newer one did: take checks it again)

    @bp.post(PATH)
    def pull() -> Response:
        caller = request.remote_addr or "unknown"
        if not limiter.allow(caller):
            return answer(429, retry=RETRY_AFTER)
        if (request.content_length or 0) > MAX_BODY:
            return answer(413)
        header = request.headers.get("Authorization", "")
        if len(header) > MAX_TOKEN:
            return answer(431)
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return answer(401)
        token = token.strip()
        digest = token_digest(token)
        name = "?"
        try:
            if used.seen(digest):
                raise Refused(410, "token-replayed")
            who = verified.get(digest)
            if who is None:
                who = verifier.verify(token)
                verified.add(digest, who)
            name = who.instance_name
            config = take_or_wait(who)
        except Refused as refused:
            level = logging.DEBUG if refused.status == 404 else logging.WARNING
            log.log(level, "JIT pull refused", extra={"instance": name, "reason": refused.reason, "caller": caller})
            if refused.status == 404:
                return answer(404, retry=retry_after(vault.expected_in(name)))
            return answer(refused.status, retry=RETRY_AFTER if refused.status == 503 else None)
        used.add(digest, who.expires_at)
        verified.forget(digest)
        log.info("JIT config pulled", extra={"instance": name, "zone": who.zone})
        return answer(200, config)

    @bp.get("/healthz")
    def healthz() -> Response:
        return answer(200, "ok")

    return bp


def retry_after(expected: float | None) -> int:
    """Seconds a VM without its config yet should wait: until the agent expects to hold it, within bounds.

    The agent publishes when it expects each awaited config (its place in the
    JIT queue against GitHub's budget, JitVault.expect), so a VM far back in a
    burst asks a few times, not every few seconds for minutes. Never less than
    the flat :data:`RETRY_AFTER`, which is also the answer for a VM the agent
    does not expect (not listed yet, or not ours); a config expected sooner is
    waited for (LONG_POLL) rather than asked for again.
    """
    if expected is None:
        return RETRY_AFTER
    return min(RETRY_MAX, max(RETRY_AFTER, math.ceil(expected)))


_REASONS = {
    401: "identity token refused",
    403: "not a VM this agent serves",
    404: "no config held for this VM yet",
    410: "already taken",
    413: "request too large",
    429: "slow down",
    431: "header too large",
    503: "cannot verify tokens now",
}


def jit_app(vault: JitVault, verifier: Verifier, rate: CallerRate | None = None) -> Flask:
    app = Flask("garo-jit")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.register_blueprint(jit_blueprint(vault, verifier, rate))
    return app


class _Quiet(WSGIRequestHandler):
    def log(self, type: str, message: str, *args: object) -> None:
        pass  # the endpoint logs its own line, without the caller's headers


def serve(app: Flask, host: str = "0.0.0.0", port: int = DEFAULT_JIT_PORT) -> BaseWSGIServer:
    """Serve ``app`` from a daemon thread (one thread per request); the server, to shut down."""
    server = make_server(host, port, app, threaded=True, request_handler=_Quiet)
    threading.Thread(target=server.serve_forever, name="garo-jit-endpoint", daemon=True).start()
    return server


def start_for(backend: Backend, settings: AgentSettings) -> BaseWSGIServer | None:
    """Serve the backend's JIT vault if it has one; refuse to run a GCP agent that VMs cannot reach.

    An AWS agent without ``GARO_JIT_URL`` serves nothing: its instances read S3 (a stack older than the image).
    """
    from scaler.backends.aws import AwsBackend
    from scaler.backends.gcp import GcpBackend

    verifier: Verifier
    if isinstance(backend, AwsBackend):
        if settings.jit is None or not backend.agent_url:
            return None
        from scaler.backends.aws_identity import AwsIdentityVerifier

        certificate = settings.jit.aws_certificate
        if not certificate:
            raise _refuse("an AWS agent that serves JIT configs needs GARO_JIT_AWS_CERT_FILE (docs/aws-backend.md)")
        verifier = AwsIdentityVerifier(backend.account_id(), backend.region, certificate, backend.instance_name)
    elif isinstance(backend, GcpBackend):
        if settings.jit is None:
            raise _refuse(
                "a GCP agent serves JIT configs to its VMs: set GARO_JIT_URL (infra/department.py does; docs/agent.md)"
            )
        verifier = IdentityVerifier(settings.jit.url, backend.project, backend.region, certs_url=settings.jit.certs_url)
    else:
        return None
    server = serve(jit_app(backend.jit_vault, verifier), port=settings.jit.port)
    log.info("JIT endpoint listening", extra={"port": settings.jit.port})
    return server


def _refuse(message: str) -> Exception:
    import click

    return click.ClickException(message)


__all__ = ["DEFAULT_JIT_PORT", "PATH", "CallerRate", "jit_app", "jit_blueprint", "serve", "start_for"]
