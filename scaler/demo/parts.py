"""``garo demo``: the whole loop on one machine, with nothing but embedded defaults.

What runs for real: the webhook under gunicorn (HTTP on loopback, signature
checks, routing), the embedded SQLite bus between processes, and the agent
with its capacity policy, JIT delivery and reconcile. What is simulated: the
fleet (``LocalBackend`` + ``SimulatedVms``, VMs "boot" in a second or two) and
GitHub (``GitHubSim``: it registers JIT runners, hands queued jobs to idle
runners and sends the ``workflow_job`` events GitHub would, rendered on
GitHub's own example payloads, signed, over HTTP).
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from scaler.backends.base import CreateResult, Instance
from scaler.backends.local import LocalBackend
from scaler.config import StackConfig, parse_stack_config
from scaler.demo.examples import to_bytes
from scaler.webhook.signature import sign

DEPARTMENT = "eng"
ORG = "octo-org"
# The embedded department: a small Linux group (max 2, so the third job waits
# for a VM to free up) and a GPU group.
DEMO_STACK: dict[str, Any] = {
    "garo:kind": "department",
    "garo:cloud": "local",
    "garo:region": "local",
    "garo:department": DEPARTMENT,
    "garo:github": {"org": ORG},
    "garo:network": {"cidr": "10.20.0.0/20"},
    "garo:reconcileInterval": 5,
    "garo:groups": [
        {"name": "linux", "labels": ["self-hosted", "linux", "x64", "eng-linux"], "max": 2, "timeToStart": 60},
        {"name": "gpu", "labels": ["self-hosted", "linux", "x64", "eng-gpu"], "max": 1, "timeToStart": 60},
    ],
}
# (group, repository, seconds the job runs)
DEMO_JOBS: tuple[tuple[str, str, float], ...] = (
    ("linux", "octo-org/web", 2.0),
    ("linux", "octo-org/api", 3.0),
    ("gpu", "octo-org/models", 2.5),
    ("linux", "octo-org/web", 1.5),
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class CountingBackend:
    """The local fleet, counting calls per method like a cloud bill would."""

    def __init__(self, inner: LocalBackend) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()

    def create(self, group: str, names: Sequence[str], metadata: Mapping[str, Mapping[str, str]]) -> CreateResult:
        self.calls["create"] += 1
        return self.inner.create(group, names, metadata)

    def delete(self, group: str, names: Sequence[str]) -> None:
        self.calls["delete"] += 1
        self.inner.delete(group, names)

    def list(self, group: str) -> Sequence[Instance]:
        self.calls["list"] += 1
        return self.inner.list(group)

    def resume_standby(self, group: str, count: int) -> Sequence[str]:
        self.calls["resume_standby"] += 1
        return self.inner.resume_standby(group, count)

    def set_metadata(self, group: str, name: str, items: Mapping[str, str]) -> None:
        self.calls["set_metadata"] += 1
        self.inner.set_metadata(group, name, items)


@dataclass
class Webhook:
    """The intake under gunicorn, as `garo webhook` would run it."""

    url: str
    secret: bytes = field(repr=False)
    process: subprocess.Popen[bytes]
    outcomes: Counter[str] = field(default_factory=Counter)

    @classmethod
    def start(cls, workdir: Path, routes: Path, bus_path: Path) -> Webhook:
        secret = secrets.token_hex(32)
        port = free_port()
        env = dict(os.environ)
        env.update(
            GARO_WEBHOOK_SECRET=secret,
            GARO_ROUTES=str(routes),
            GARO_BUS=f"sqlite://{bus_path}",
            GARO_WEBHOOK_BIND=f"127.0.0.1:{port}",
            GARO_WEBHOOK_WORKERS="2",
            GARO_LOG_LEVEL="WARNING",
            PROMETHEUS_MULTIPROC_DIR=str(workdir / "metrics"),
        )
        log = (workdir / "webhook.log").open("wb")
        command = [sys.executable, "-m", "gunicorn", "-c", "python:scaler.webhook.gunicorn_conf"]
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        webhook = cls(f"http://127.0.0.1:{port}", secret.encode(), process)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the webhook exited with {process.returncode}:\n{log_tail(workdir)}")
            try:
                if requests.get(f"{webhook.url}/readyz", timeout=1).status_code == 200:
                    return webhook
            except (requests.ConnectionError, requests.Timeout):
                pass  # not listening yet, or slow to answer on a busy machine: ask again until the deadline
            time.sleep(0.1)
        webhook.stop()
        raise RuntimeError(f"the webhook did not become ready:\n{log_tail(workdir)}")

    def send(self, event: str, payload: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
        """Deliver like GitHub: raw JSON bytes, signed, with event and delivery headers."""
        body = to_bytes(payload)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "GitHub-Hookshot/garo-demo",
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": str(uuid.uuid4()),
            "X-Hub-Signature-256": sign(body, self.secret),
        }
        response = requests.post(f"{self.url}/webhook", data=body, headers=headers, timeout=10)
        answer: dict[str, Any] = response.json()
        self.outcomes[f"{response.status_code} {answer.get('status', '?')}"] += 1
        return response.status_code, answer

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def log_tail(workdir: Path, lines: int = 20) -> str:
    """The end of the webhook's log: the demo's directory is temporary, so show it rather than point at it."""
    try:
        text = (workdir / "webhook.log").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no webhook log)"
    return "\n".join(text.splitlines()[-lines:]) or "(webhook log is empty)"


class Narrator:
    """Prints what happens, with the time since the demo started."""

    def __init__(self, out: Callable[[str], None] = print) -> None:
        self.started = time.monotonic()
        self.out = out

    def say(self, text: str) -> None:
        self.out(f"[{time.monotonic() - self.started:5.1f}s] {text}")


def demo_config() -> StackConfig:
    return parse_stack_config(DEMO_STACK, "embedded demo stack")
