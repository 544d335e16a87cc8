"""The real processes of a chaos run: ``garo webhook`` (gunicorn) and the ``garo agent`` replicas.

Each runs as an operator would start it, from a stack file and ``GARO_*``
variables, in its own process with its own log file. The chaos driver
``kill -9``s them: an agent is started again by the driver (as a Deployment
would); a gunicorn worker is started again by its master.
"""

from __future__ import annotations

import fcntl
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[2]


def clean_env() -> dict[str, str]:
    """The caller's environment without Garo's own settings (each process gets exactly its own)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("GARO_", "PROMETHEUS_MULTIPROC_DIR"))}


@dataclass
class Managed:
    """One long-running process, started again with the same arguments after it dies."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    crashes: int = 0  # exits the driver did not cause
    _log: IO[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        if self._log is None:
            self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(self.args, cwd=ROOT, env=self.env, stdout=self._log, stderr=self._log)
        self.starts += 1

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill9(self) -> None:
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
            assert self.process is not None
            self.process.wait()

    def stop(self) -> None:
        if self.alive():
            assert self.process is not None
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None


def agent(
    index: int,
    stack: Path,
    bus_url: str,
    compute_url: str,
    workdir: Path,
    log_level: str,
    jit_port: int,
    certs_url: str,
) -> Managed:
    env = clean_env() | {
        "GARO_GITHUB_TOKEN": "chaos-dev-token",
        "GARO_BUS": bus_url,
        "CHAOS_COMPUTE_URL": compute_url,
        # The JIT endpoint its VMs pull from, trusting the world's identity-token key instead of Google's.
        "GARO_JIT_URL": f"http://127.0.0.1:{jit_port}",
        "GARO_JIT_PORT": str(jit_port),
        "GARO_JIT_CERTS_URL": certs_url,
    }
    args = [sys.executable, "-m", "tests.chaos.agent_proc", "agent", "--stack", str(stack), "--log-level", log_level]
    return Managed(f"agent-{index}", args, env, workdir / f"agent-{index}.log")


def webhook(port: int, routes: Path, bus_url: str, secret: str, workers: int, workdir: Path) -> Managed:
    env = clean_env() | {
        "GARO_WEBHOOK_SECRET": secret,
        "GARO_ROUTES": str(routes),
        "GARO_BUS": bus_url,
        "GARO_WEBHOOK_BIND": f"127.0.0.1:{port}",
        "GARO_WEBHOOK_WORKERS": str(workers),
        "GARO_LOG_LEVEL": "WARNING",
        "PROMETHEUS_MULTIPROC_DIR": str(workdir / "webhook-metrics"),
    }
    return Managed("webhook", [sys.executable, "-m", "scaler.cli", "webhook"], env, workdir / "webhook.log")


def worker_pids(master: int) -> list[int]:
    """gunicorn's workers: the master's children (Linux /proc)."""
    try:
        text = Path(f"/proc/{master}/task/{master}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


@dataclass
class Outage:
    start: float
    end: float


class BusBlocker:
    """Makes the embedded bus unavailable: holds its writers' lock file and an exclusive SQLite lock."""

    def __init__(self, bus_file: Path) -> None:
        self.bus_file = bus_file
        self.outages: list[Outage] = []
        self._thread: threading.Thread | None = None

    def block(self, seconds: float) -> None:
        """Start an outage of ``seconds`` in the background (one at a time)."""
        if self.busy():
            return
        self._thread = threading.Thread(target=self._hold, args=(seconds,), name="bus-outage", daemon=True)
        self._thread.start()

    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()

    def _hold(self, seconds: float) -> None:
        fd = os.open(f"{self.bus_file}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        db = sqlite3.connect(self.bus_file, timeout=30, isolation_level=None)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # waits for a writer in the middle of its transaction
            db.execute("BEGIN EXCLUSIVE")
            outage = Outage(time.monotonic(), float("inf"))
            self.outages.append(outage)
            time.sleep(seconds)
            db.execute("ROLLBACK")
            outage.end = time.monotonic()
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            db.close()

    def during(self, sent: float, answered: float) -> bool:
        """Whether a request in flight from ``sent`` to ``answered`` overlapped an outage."""
        return any(o.start <= answered and sent <= o.end for o in self.outages)
