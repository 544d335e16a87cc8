"""GitHub credentials: App JWTs, cached installation tokens, or a plain token.

The agent authenticates as a GitHub App: a short-lived RS256 JWT signed with
the App's private key buys an installation token valid for one hour. Fetching
one per request would double the API calls and hit the App's limit, so the
token is cached until five minutes before it expires. Every object here keeps
its secret out of `repr`, so a stray log line or traceback cannot leak it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import jwt

from scaler.github.ratelimit import Clock, SystemClock

# GitHub rejects App JWTs that expire more than 10 minutes after `iat`, and
# clocks drift: backdate `iat` by 60 s and keep the whole lifetime at 10 min.
JWT_BACKDATE = 60
JWT_LIFETIME = 600
# Refresh the installation token this long before GitHub says it expires.
TOKEN_REFRESH_MARGIN = 300
# When GitHub's `expires_at` cannot be read, trust a token only this long.
UNKNOWN_EXPIRY_TTL = 600


class AppCredentials:
    """A GitHub App's id and private key; signs App JWTs."""

    def __init__(self, app_id: int | str, private_key: str, clock: Clock | None = None) -> None:
        self.app_id = str(app_id)
        self._private_key = private_key
        self._clock = clock or SystemClock()

    def __repr__(self) -> str:
        return f"AppCredentials(app_id={self.app_id!r})"

    def jwt(self) -> str:
        """A fresh App JWT (cheap to sign, so never cached)."""
        now = int(self._clock.time())
        claims = {"iat": now - JWT_BACKDATE, "exp": now - JWT_BACKDATE + JWT_LIFETIME, "iss": self.app_id}
        try:
            return jwt.encode(claims, self._private_key, algorithm="RS256")
        except (ValueError, TypeError, jwt.PyJWTError):
            # The library's message can quote key material; never pass it on.
            raise ValueError(f"GitHub App {self.app_id}: the private key is not a valid RSA PEM key") from None


@dataclass(frozen=True)
class InstallationToken:
    token: str = field(repr=False)
    expires_at: float  # epoch seconds


def parse_expires_at(value: object, now: float) -> float:
    """GitHub's ISO-8601 `expires_at` as epoch seconds; a short TTL if it is unreadable."""
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            pass
    return now + UNKNOWN_EXPIRY_TTL


class InstallationTokenCache:
    """Holds one installation token; `get` refreshes it through `fetch` when close to expiry.

    The lock makes concurrent callers share one refresh instead of each
    fetching a token (a thundering herd after every expiry).
    """

    def __init__(self, fetch: Callable[[], InstallationToken], clock: Clock | None = None) -> None:
        self._fetch = fetch
        self._clock = clock or SystemClock()
        self._token: InstallationToken | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return "InstallationTokenCache(<token hidden>)"

    def get(self) -> str:
        with self._lock:
            if self._token is None or self._clock.time() >= self._token.expires_at - TOKEN_REFRESH_MARGIN:
                self._token = self._fetch()
            return self._token.token

    def invalidate(self) -> None:
        """Drop the token (GitHub answered 401: revoked or the clock lied)."""
        with self._lock:
            self._token = None
