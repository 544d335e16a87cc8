"""With no bus setting, ``garo webhook`` and ``garo agent`` started in one directory share one bus.

Both are started as an operator would on a laptop: the real gunicorn behind
``garo webhook``, the real ``garo agent`` loop on the local fleet, GitHub as
Prism. Neither is given ``GARO_BUS``; a signed ``queued`` delivery to the
webhook must end as the job's VM in the agent's fleet.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import yaml

from scaler import naming
from scaler.backends.local import DEFAULT_STATE_DIR, LocalBackend
from scaler.bus.url import DEFAULT_BUS, parse_bus_url
from scaler.config import load_stack_file
from scaler.config.routing import routing_document
from tests.agent.gcpkit import DEPARTMENT, GROUP, LABELS, event
from tests.harness.webhooks import SECRET, sign

JOB_ID = 4_242_001


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _eventually(condition: Callable[[], bool], what: str, processes: list[subprocess.Popen[bytes]]) -> None:
    """Wait for a process to get somewhere; a crash or a minute without progress fails with its log."""
    deadline = time.monotonic() + 60
    while not condition():
        for process in processes:
            assert process.poll() is None, f"{process.args!r} exited with {process.returncode} before {what}"
        assert time.monotonic() < deadline, f"no {what} after a minute"
        time.sleep(0.1)


@contextmanager
def _started(args: list[str], cwd: Path, env: dict[str, str], log: IO[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen([sys.executable, "-m", "scaler.cli", *args], cwd=cwd, env=env, stdout=log, stderr=log)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _subscriptions(bus_file: Path) -> set[str]:
    if not bus_file.exists():
        return set()
    try:
        with sqlite3.connect(bus_file) as db:
            return {name for (name,) in db.execute("SELECT name FROM subscriptions")}
    except sqlite3.OperationalError:  # the schema is not there yet
        return set()


def _ready(url: str) -> bool:
    try:
        return bool(urllib.request.urlopen(url, timeout=2).status == 200)
    except OSError:
        return False


def test_webhook_and_agent_with_no_bus_setting_share_the_default_bus(prism_github: str, tmp_path: Path) -> None:
    stack = tmp_path / f"Pulumi.{DEPARTMENT}.yaml"
    group = {"name": GROUP, "labels": LABELS, "max": 3, "timeToLive": 3600}
    config = {
        "garo:kind": "department",
        "garo:cloud": "local",
        "garo:region": "local",
        "garo:department": DEPARTMENT,
        "garo:github": {"org": "octo-org", "apiUrl": prism_github},
        "garo:network": {"cidr": "10.20.0.0/20"},
        "garo:groups": [group],
    }
    stack.write_text(yaml.safe_dump({"config": config}))
    routes = tmp_path / "routes.json"
    routes.write_text(json.dumps(routing_document([load_stack_file(stack)])))
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("GARO_", "PROMETHEUS_MULTIPROC_DIR"))}
    port = _free_port()
    webhook_env = {
        **clean,
        "GARO_WEBHOOK_SECRET": SECRET,
        "GARO_ROUTES": str(routes),
        "GARO_WEBHOOK_BIND": f"127.0.0.1:{port}",
        "GARO_WEBHOOK_WORKERS": "1",
    }
    agent_env = {**clean, "GARO_GITHUB_TOKEN": "dev-token"}
    bus_file = tmp_path / parse_bus_url(DEFAULT_BUS).path
    base = f"http://127.0.0.1:{port}"

    with (
        open(tmp_path / "agent.log", "wb") as agent_log,
        open(tmp_path / "webhook.log", "wb") as webhook_log,
        _started(["agent", "--stack", stack.name], tmp_path, agent_env, agent_log) as agent,
    ):
        # A subscription sees what is published after it exists (as on Pub/Sub): let the agent subscribe first.
        _eventually(lambda: f"agent-{DEPARTMENT}" in _subscriptions(bus_file), "agent subscription", [agent])
        with _started(["webhook"], tmp_path, webhook_env, webhook_log) as webhook:
            _eventually(lambda: _ready(f"{base}/readyz"), "ready webhook", [agent, webhook])
            body = event("queued", JOB_ID)
            request = urllib.request.Request(
                f"{base}/webhook",
                data=body,
                headers={
                    "Content-Type": "application/json",
                    "X-GitHub-Event": "workflow_job",
                    "X-GitHub-Delivery": str(uuid.uuid4()),
                    "X-Hub-Signature-256": sign(body, SECRET),
                },
            )
            with urllib.request.urlopen(request, timeout=10) as answer:
                assert answer.status == 202 and json.loads(answer.read())["status"] == "published"

            fleet = LocalBackend(tmp_path / DEFAULT_STATE_DIR)
            vm = naming.instance_name(DEPARTMENT, GROUP, JOB_ID)
            _eventually(lambda: vm in {i.name for i in fleet.list(GROUP)}, f"VM {vm}", [agent, webhook])

    made = {i.name: i for i in fleet.list(GROUP)}[vm]
    assert made.metadata.get("garo-job") == str(JOB_ID)
    # One bus file in the shared directory, the default's, and nothing else that looks like one.
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.db")) == [
        bus_file.relative_to(tmp_path).as_posix()
    ]
