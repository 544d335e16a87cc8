"""GitHub stand-ins: Prism serving GitHub's own OpenAPI description, and a scripted server.

`prism_github` (session-scoped) runs `prism mock --errors` on
`@octokit/openapi`'s api.github.com.json (the non-dereferenced file: it starts
as fast as the .deref one, ~10 s on 2 cores, with half the memory). Prism
answers a request that breaks the spec with 422 (`sl-violations` header says
why) and, with `--errors`, a response example that breaks its own schema with
500. Some of GitHub's examples do (the job example lacks `created_at`), so
`prism_session(prefer=...)` sends `Prefer: dynamic=true` (schema-generated
response) or `Prefer: code=404` to chosen endpoints only.

`scripted_github` is a real HTTP server on loopback that answers from a
script (status, headers, body) and records every request: for retry, backoff
and rate-limit behaviour Prism cannot produce.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
PRISM = ROOT / "node_modules" / ".bin" / "prism"
GITHUB_SPEC = ROOT / "node_modules" / "@octokit" / "openapi" / "generated" / "api.github.com.json"
PRISM_START_TIMEOUT = 180.0
_LISTENING = re.compile(r"Prism is listening on (http://127\.0\.0\.1:\d+)")


@dataclass
class Prism:
    url: str
    log_path: Path
    process: subprocess.Popen[bytes]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_prism(log_path: Path, timeout: float = PRISM_START_TIMEOUT) -> Prism:
    """Start Prism on a free port (port 0; Prism prints the one it got) and wait for it."""
    if shutil.which("node") is None or not PRISM.exists() or not GITHUB_SPEC.exists():
        pytest.skip("Prism needs node and `npm ci` (node_modules/@stoplight/prism-cli, @octokit/openapi)")
    log_file = log_path.open("wb")
    process = subprocess.Popen(
        [str(PRISM), "mock", "--host", "127.0.0.1", "--port", "0", "--errors", str(GITHUB_SPEC)],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    log_file.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = _LISTENING.search(log_path.read_text(errors="replace"))
        if match:
            url = match.group(1)
            requests.delete(f"{url}/orgs/probe/actions/runners/1", timeout=10).raise_for_status()
            return Prism(url, log_path, process)
        if process.poll() is not None:
            raise RuntimeError(f"Prism exited with {process.returncode}:\n{log_path.read_text()[-2000:]}")
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"Prism did not start within {timeout}s:\n{log_path.read_text()[-2000:]}")


@pytest.fixture(scope="session")
def prism_github(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a Prism mock of api.github.com, validating requests (`--errors`)."""
    prism = start_prism(tmp_path_factory.mktemp("prism") / "prism.log")
    try:
        yield prism.url
    finally:
        prism.process.terminate()
        try:
            prism.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            prism.process.kill()
            prism.process.wait()


class PrismSession(requests.Session):
    """A requests.Session that adds a `Prefer` header to requests whose path matches a pattern.

    `prefer` maps (METHOD, path regex) to a Prefer value such as "dynamic=true"
    or "code=404". Everything else goes out untouched, so Prism still checks
    the request exactly as GitHub would receive it.
    """

    def __init__(self, prefer: Mapping[tuple[str, str], str] | None = None) -> None:
        super().__init__()
        self.prefer = [(m.upper(), re.compile(p), v) for (m, p), v in (prefer or {}).items()]

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        path = requests.utils.urlparse(str(url)).path
        for m, pattern, value in self.prefer:
            if m == str(method).upper() and pattern.search(path):
                kwargs["headers"] = {**(kwargs.get("headers") or {}), "Prefer": value}
                break
        return super().request(method, url, *args, **kwargs)


@pytest.fixture
def prism_session() -> Callable[..., PrismSession]:
    return PrismSession


# --------------------------------------------------------------------------- scripted server


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # JSON-serialisable, or bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Recorded:
    method: str
    path: str  # includes the query string
    headers: dict[str, str]
    body: Any


class ScriptedGitHub:
    """Answers each request with the next Reply scripted for its (method, path regex); records all requests.

    A route's last reply repeats once its script is used up. Unscripted requests get 501.
    """

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._routes: list[tuple[str, re.Pattern[str], list[Reply | Callable[[Recorded], Reply]]]] = []
        self._lock = threading.Lock()
        handler = self._handler_class()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def script(self, method: str, path: str, *replies: Reply | Callable[[Recorded], Reply]) -> None:
        """Route `method` + `path` (regex, full match on the path without query) to `replies` in order."""
        self._routes.append((method.upper(), re.compile(path), list(replies)))

    def calls(self, method: str, path: str) -> list[Recorded]:
        pattern = re.compile(path)
        return [r for r in self.requests if r.method == method and pattern.fullmatch(r.path.split("?")[0])]

    def _answer(self, rec: Recorded) -> Reply:
        with self._lock:
            self.requests.append(rec)
            for method, pattern, replies in self._routes:
                if method == rec.method and pattern.fullmatch(rec.path.split("?")[0]):
                    reply = replies.pop(0) if len(replies) > 1 else replies[0]
                    return reply(rec) if callable(reply) else reply
        return Reply(501, {"message": f"unscripted {rec.method} {rec.path}"})

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else delayed ACKs add ~40 ms per keep-alive request

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                reply = server._answer(Recorded(self.command, self.path, dict(self.headers.items()), body))
                payload = (
                    reply.body
                    if isinstance(reply.body, bytes)
                    else (b"" if reply.body is None else json.dumps(reply.body).encode())
                )
                self.send_response(reply.status)
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_DELETE = do_PATCH = do_PUT = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def scripted_github() -> Iterator[ScriptedGitHub]:
    server = ScriptedGitHub()
    try:
        yield server
    finally:
        server.close()


def free_port() -> int:
    """A free loopback port (for tools that cannot bind port 0 themselves)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FakeClock:
    """Implements scaler.github.ratelimit.Clock; `sleep` records the wait and advances time instantly."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now
        self.mono = 1000.0
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.mono

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.advance(seconds)

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.mono += seconds


@pytest.fixture(scope="session")
def github_app_key() -> str:
    """A throwaway RSA private key (PEM) standing in for a GitHub App's key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
