"""Slow and hostile clients against the served configuration (real gunicorn, default workers and threads).

Slowloris: connections that send part of a request and then nothing (or a
byte now and then) must not keep genuine deliveries from being answered
within GitHub's 10 s delivery timeout. Each case opens more such connections
than the default 2 workers x 16 threads, then sends a signed delivery and
expects its 202; the timeout on that request is a generous bound, not a
speed measurement.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from http.client import HTTPConnection
from pathlib import Path

import pytest

from scaler.bus.sqlite import SqliteBus
from scaler.webhook.worker import READY, WAIT, request_state
from tests.test_webhook_config import _delivery, _env, _free_port

SLOW = 96  # three times the default 2 workers x 16 threads
GITHUB_TIMEOUT = 10.0

HEAD = b"POST /webhook HTTP/1.1\r\nHost: hub\r\nContent-Type: application/json\r\n"
PARTIAL = {
    "no bytes at all": b"",
    "unfinished headers": HEAD,
    "unfinished body": HEAD + b'Content-Length: 5000\r\nX-GitHub-Event: workflow_job\r\n\r\n{"action":',
    "unfinished request line": b"POST /webho",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp_path = Path(tmp_path_factory.mktemp("slow"))
    port = _free_port()
    env = {**os.environ, **_env(tmp_path, GARO_WEBHOOK_SECRET=_secret(), GARO_WEBHOOK_BIND=f"127.0.0.1:{port}")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    for name in ("GARO_WEBHOOK_WORKERS", "GARO_WEBHOOK_THREADS", "GARO_WEBHOOK_READ_TIMEOUT"):
        env.pop(name, None)  # the defaults are what is served
    SqliteBus(tmp_path / "bus.db", subscription="tap")
    process = subprocess.Popen([sys.executable, "-m", "scaler.cli", "webhook"], env=env, cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"{base}/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        process.wait(30)


def _secret() -> str:
    from tests.harness.webhooks import SECRET

    return SECRET


def _open_slow(base: str, partial: bytes) -> list[socket.socket]:
    host, port = base.removeprefix("http://").split(":")
    connections = []
    for _ in range(SLOW):
        connection = socket.create_connection((host, int(port)), timeout=5)
        if partial:
            connection.sendall(partial)
        connections.append(connection)
    return connections


@pytest.mark.parametrize("case", PARTIAL)
def test_genuine_deliveries_get_through_slow_clients(server: str, case: str) -> None:
    slow = _open_slow(server, PARTIAL[case])
    try:
        time.sleep(0.5)  # let the server take them all in
        for job in range(3):
            # Fresh connections, as GitHub opens them; each must be answered despite the slow ones.
            response = urllib.request.urlopen(_delivery(server, 1000 + job), timeout=GITHUB_TIMEOUT - 2)
            assert response.status == 202
    finally:
        for connection in slow:
            connection.close()


def test_a_client_trickling_headers_is_cut_off(server: str) -> None:
    """A header line a second keeps a connection alive on servers that time reads; here the request has a deadline."""
    host, port = server.removeprefix("http://").split(":")
    connection = socket.create_connection((host, int(port)), timeout=1)
    connection.sendall(HEAD)
    try:
        for _ in range(60):
            try:
                connection.sendall(b"X-Trickle: 1\r\n")
                if connection.recv(1024) == b"":
                    return  # closed by the server
            except TimeoutError:
                continue  # nothing yet: the recv timeout paces the trickle
            except OSError:
                return  # reset by the server
        pytest.fail("a client that never finishes its headers was served for a minute")
    finally:
        connection.close()


def test_kept_alive_connections_serve_one_request_after_another(server: str) -> None:
    """Each request on a kept-alive connection passes the same gate; a load balancer reuses its connections."""
    host, port = server.removeprefix("http://").split(":")
    connection = HTTPConnection(host, int(port), timeout=GITHUB_TIMEOUT)
    try:
        for job in range(3):
            request = _delivery(server, 2000 + job)
            assert request.data is not None
            connection.request("POST", "/webhook", body=request.data, headers=dict(request.header_items()))
            response = connection.getresponse()
            assert (response.status, response.read()[:1]) == (202, b"{")
    finally:
        connection.close()


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (HEAD + b"Content-Length: 50000000\r\n\r\n{", b"413"),  # announced, then trickled: never waited for
        (HEAD + b"X-Padding: " + b"a" * 70_000, b"431"),  # headers without end
    ],
    ids=["oversized body", "endless headers"],
)
def test_oversized_requests_are_refused_at_once(server: str, request_bytes: bytes, status: bytes) -> None:
    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=GITHUB_TIMEOUT) as connection:
        connection.sendall(request_bytes)
        answer = connection.recv(4096)
        assert answer.split(b" ")[1] == status, answer
        assert b"Connection: close" in answer


def test_request_state_waits_for_the_whole_request() -> None:
    body = b'{"action":"queued"}'
    whole = HEAD + b"Content-Length: %d\r\n\r\n" % len(body) + body
    assert [request_state(whole[:n], 1024) for n in (0, len(HEAD), len(whole) - 1)] == [WAIT, WAIT, WAIT]
    assert request_state(whole, 1024) == READY
    assert request_state(whole + b"GET / HTTP/1.1\r\n", 1024) == READY  # pipelined: the first request counts
    assert request_state(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 1024) == READY
    chunked = HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
    assert request_state(chunked, 1024) == WAIT
    assert request_state(chunked + b"0\r\n\r\n", 1024) == READY
    assert request_state(HEAD + b"Content-Length: 2048\r\n\r\n", 1024) == 413
