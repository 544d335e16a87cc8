"""GCP's pull path for JIT configs: the agent holds each unused config in memory until its VM asks for it.

Why not instance metadata: writing a config there cost ``instances.get`` plus
``setMetadata`` per VM (two of the three Compute calls a job used to cost) and
left it readable by anyone with ``compute.instances.get`` in the project until
the agent cleared it. Per-instance configs would batch the writes but put the
config into the MIG's state and into audit logs. Pulling costs no Compute call
at all: the VM proves who it is with an identity token its metadata server
mints and Google signs (``format=full`` adds the ``google.compute_engine``
claims: project, zone, instance name and id, creation time), and the agent
hands the config over once (docs/security.md, "JIT delivery").

:class:`JitVault` is the store (hold, take once, drop on delete or expiry);
:class:`IdentityVerifier` checks a token. The HTTP endpoint that joins them is
:mod:`scaler.agent.jit_endpoint`.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import requests
from google.auth import exceptions as auth_exceptions
from google.auth import jwt

#: Where Google publishes the keys that sign a VM's identity token (PEM certificates by key id).
GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"
ISSUERS = frozenset({"https://accounts.google.com", "accounts.google.com"})
CLOCK_SKEW = 30  # seconds of clock difference tolerated on iat/exp and on the creation check
CERTS_MIN_REFRESH = 60.0  # seconds between two fetches of the keys for an unknown key id
PRUNE_EVERY = 5.0  # seconds between sweeps of expired entries (lookups check expiry themselves)
MAX_WAITERS = 256  # asks that may wait for their config at once (JitVault.wait_held); more are answered at once
_MAX_AGE = re.compile(r"max-age=(\d+)")


class Refused(Exception):
    """A pull that gets no config; ``status`` is the HTTP answer, ``reason`` a short word for logs (never a secret)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Identity:
    """Who a verified token says is asking: a VM of this project, in a zone of this region."""

    instance_name: str
    instance_id: str
    zone: str
    issued_at: float
    created_at: float  # the VM's instance_creation_timestamp
    expires_at: float


@dataclass
class _Held:
    group: str
    config: str = field(repr=False)
    expires_at: float
    requested_at: float | None  # when this agent asked Compute for the VM (None: not known, e.g. a standby VM)


class JitVault:
    """Unused JIT configs by VM name, in this process's memory only; each one is handed over at most once.

    A config leaves the vault when its VM takes it, when the VM is deleted, or
    when its time to start has passed (the agent then deregisters the runner
    and replaces the VM, as it does for any VM that never started).
    Thread-safe: the agent's executor holds configs while the endpoint's
    threads take them.

    It also keeps when the agent expects to hold each awaited config
    (:meth:`expect`), so that the endpoint can tell a VM that asks too early
    when to come back instead of being asked again every few seconds.
    Expired entries are swept every :data:`PRUNE_EVERY` seconds, not on every
    ask: a burst of a thousand waiting VMs would otherwise make each ask cost
    a pass over a thousand entries.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._held: dict[str, _Held] = {}
        self._taken: dict[str, float] = {}  # name -> until when a second ask is answered 410, not 404
        self._expected: Mapping[str, float] = {}  # name -> when the agent expects to hold its config (clock time)
        self._waiting: dict[str, tuple[threading.Event, int]] = {}  # name -> (set when held, asks waiting on it)
        self._waiters = 0
        self._pruned_at = float("-inf")
        self._asked: dict[str, float] = {}  # name -> when it last asked and this vault held nothing for it

    def hold(self, group: str, name: str, config: str, ttl: float, requested_at: float | None = None) -> None:
        """Keep ``config`` for VM ``name`` for ``ttl`` seconds; a newer config for the same name replaces it."""
        now = self.clock()
        with self._lock:
            self._prune(now)
            self._taken.pop(name, None)
            self._asked.pop(name, None)
            self._held[name] = _Held(group, config, now + ttl, requested_at)
            waiting = self._waiting.get(name)
        if waiting is not None:
            waiting[0].set()

    def wait_held(self, name: str, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until a config is held for ``name``; False at once past MAX_WAITERS.

        Lets the endpoint answer an ask that came a little early when the
        config arrives instead of sending the VM away to ask again. Each name
        has one event, set by :meth:`hold`: no waiter wakes for another VM's
        config. True means a config arrived (it may still be refused by
        :meth:`take`).
        """
        with self._lock:
            if name in self._held:
                return True
            if self._waiters >= MAX_WAITERS:
                return False
            event, count = self._waiting.get(name, (threading.Event(), 0))
            self._waiting[name] = (event, count + 1)
            self._waiters += 1
        try:
            return event.wait(timeout)
        finally:
            with self._lock:
                self._waiters -= 1
                event, count = self._waiting[name]
                if count <= 1:
                    del self._waiting[name]
                else:
                    self._waiting[name] = (event, count - 1)

    def drop(self, names: Iterable[str]) -> int:
        """Forget the configs of these VMs (deleted, or their config is spent); how many were still held."""
        with self._lock:
            names = list(names)
            for name in names:
                self._asked.pop(name, None)
            return sum(self._held.pop(name, None) is not None for name in names)

    def take(self, who: Identity) -> str:
        """The config held for the verified VM ``who``, removed from the vault; :class:`Refused` otherwise."""
        now = self.clock()
        with self._lock:
            self._prune(now)
            held = self._held.get(who.instance_name)
            if held is not None and held.expires_at <= now:
                del self._held[who.instance_name]
                held = None
            if held is None:
                if self._taken.get(who.instance_name, now) > now:
                    raise Refused(410, "already-taken")
                self._asked[who.instance_name] = now
                raise Refused(404, "not-held")
            if held.requested_at is not None and who.created_at < held.requested_at - CLOCK_SKEW:
                # A VM of that name that existed before this agent asked for it: not the one the config is for.
                raise Refused(403, "vm-older-than-request")
            del self._held[who.instance_name]
            self._taken[who.instance_name] = held.expires_at
            return held.config

    def expect(self, expected_at: Mapping[str, float]) -> None:
        """When the agent expects to hold each awaited config (clock time, by VM name); replaces the last."""
        self._expected = expected_at  # one reference swap: readers see the old or the new mapping, never half

    def expected_in(self, name: str) -> float | None:
        """Seconds until the config for ``name`` is expected (0 if overdue); None if the agent expects none."""
        at = self._expected.get(name)
        return None if at is None else max(0.0, at - self.clock())

    def waiting(self) -> int:
        """Asks waiting for their config right now (wait_held)."""
        with self._lock:
            return self._waiters

    def asking(self, within: float) -> frozenset[str]:
        """VMs that asked this vault for a config in the last ``within`` seconds and got none (404).

        A VM asks only until it has a config, so a recent ask is the one sign
        that it still needs one: a replica that did not make a VM configures it
        only then, never a used VM whose runner came and went unseen.
        """
        now = self.clock()
        with self._lock:
            for name in [n for n, at in self._asked.items() if now - at > within]:
                del self._asked[name]
            return frozenset(self._asked)

    def holds(self, name: str) -> bool:
        with self._lock:
            return name in self._held and self._held[name].expires_at > self.clock()

    def peek(self, name: str) -> str | None:
        """The config held for ``name`` without taking it (tests and stand-ins: what the VM could pull)."""
        with self._lock:
            held = self._held.get(name)
            return held.config if held is not None and held.expires_at > self.clock() else None

    def __len__(self) -> int:
        with self._lock:
            self._prune(self.clock(), force=True)
            return len(self._held)

    def _prune(self, now: float, force: bool = False) -> None:
        if not force and now - self._pruned_at < PRUNE_EVERY:
            return
        self._pruned_at = now
        for name in [n for n, h in self._held.items() if h.expires_at <= now]:
            del self._held[name]
        for name in [n for n, until in self._taken.items() if until <= now]:
            del self._taken[name]


class Verifier(Protocol):
    """What the JIT endpoint needs of a cloud's identity check: GCP's token or AWS's identity document."""

    clock: Callable[[], float]

    def verify(self, token: str) -> Identity: ...


class IdentityVerifier:
    """Checks a VM identity token (``format=full``) from Compute's metadata server.

    Signature against Google's published keys (``certs_url``, configurable so
    tests sign with their own key; cached for the response's max-age),
    issuer, audience (the agent's URL, as the VM asked for it), expiry and
    issue time; then the ``google.compute_engine`` claims: the project must be
    ours and the zone in our region.
    """

    def __init__(
        self,
        audience: str,
        project: str,
        region: str,
        *,
        certs_url: str = GOOGLE_CERTS_URL,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.audience = audience
        self.project = project
        self.region = region
        self.certs_url = certs_url
        self.session = session or requests.Session()
        self.clock = clock
        self._lock = threading.Lock()
        self._certs: Mapping[str, str] = {}
        self._certs_until = 0.0
        self._fetched_at = float("-inf")

    def verify(self, token: str) -> Identity:
        try:
            header = jwt.decode_header(token)  # type: ignore[no-untyped-call]
        except (ValueError, TypeError):
            raise Refused(401, "malformed-token") from None
        kid = header.get("kid") if isinstance(header, dict) else None
        certs = self._keys(str(kid) if kid is not None else None)
        try:
            claims: Mapping[str, Any] = jwt.decode(  # type: ignore[no-untyped-call]
                token, certs=certs, audience=self.audience, clock_skew_in_seconds=CLOCK_SKEW
            )
        except (ValueError, auth_exceptions.GoogleAuthError) as exc:
            raise Refused(401, _why(exc)) from None
        if claims.get("iss") not in ISSUERS:
            raise Refused(401, "wrong-issuer")
        engine = (claims.get("google") or {}).get("compute_engine") or {}
        if not isinstance(engine, dict) or not engine.get("instance_name"):
            raise Refused(401, "not-a-compute-engine-token")  # format=full was not asked for, or not a VM
        zone = str(engine.get("zone", ""))
        if engine.get("project_id") != self.project:
            raise Refused(403, "wrong-project")
        if zone.rsplit("-", 1)[0] != self.region:
            raise Refused(403, "wrong-zone")
        created = float(engine.get("instance_creation_timestamp", 0))
        issued = float(claims["iat"])
        if issued < created - CLOCK_SKEW:
            raise Refused(401, "issued-before-vm-created")
        return Identity(
            instance_name=str(engine["instance_name"]),
            instance_id=str(engine.get("instance_id", "")),
            zone=zone,
            issued_at=issued,
            created_at=created,
            expires_at=float(claims["exp"]),
        )

    def _keys(self, kid: str | None) -> Mapping[str, str]:
        """Google's signing keys, fetched again when the cache expired or a token names a key we lack."""
        now = self.clock()
        with self._lock:
            stale = now >= self._certs_until
            unknown = kid is not None and kid not in self._certs and now - self._fetched_at >= CERTS_MIN_REFRESH
            if stale or unknown:
                try:
                    response = self.session.get(self.certs_url, timeout=10)
                    response.raise_for_status()
                    certs = response.json()
                except (requests.RequestException, ValueError):
                    if not self._certs:
                        raise Refused(503, "signing-keys-unavailable") from None
                else:
                    match = _MAX_AGE.search(response.headers.get("Cache-Control", ""))
                    self._certs = {str(k): str(v) for k, v in dict(certs).items()}
                    self._certs_until = now + (int(match.group(1)) if match else 300)
                    self._fetched_at = now
            return self._certs


def token_digest(token: str) -> str:
    """What the endpoint remembers of a used token: its hash, never the token."""
    return hashlib.sha256(token.encode()).hexdigest()


def _why(exc: Exception) -> str:
    """A short, token-free word for why google.auth refused a token."""
    text = str(exc).lower()
    for needle, word in (
        ("audience", "wrong-audience"),
        ("expired", "expired"),
        ("early", "not-yet-valid"),
        ("signature", "bad-signature"),
        ("certificate for key id", "unknown-key"),
    ):
        if needle in text:
            return word
    return "invalid-token"


__all__ = ["GOOGLE_CERTS_URL", "Identity", "IdentityVerifier", "JitVault", "Refused", "Verifier", "token_digest"]
