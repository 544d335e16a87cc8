"""Integration tests: the real boot agent (images/garo-runner/garo-runner, bash)
against a fake GCE metadata server on loopback and a fake run.sh.

The fake server behaves like GCE where the agent depends on it: 403 without
`Metadata-Flavor: Google`, ETags, `wait_for_change` long-polls that wait for the
value to differ from `last_etag` (or from the current value when no ETag is
given) and return the current value at `timeout_sec`, and guest-attribute PUTs.
It can also "suspend" the VM: hanging long-polls are dropped without a reply,
the way a connection that spanned a suspend dies.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

ROOT = Path(__file__).resolve().parents[1]
AGENT = ROOT / "images" / "garo-runner" / "garo-runner"
PREFIX = "/computeMetadata/v1"
JIT = "eyJydW5uZXIiOiJnYXJvLXRlc3QifQ-SECRET-" + "x" * 2000  # a JIT config is a few KB of base64


class FakeMetadata:
    """The subset of the GCE metadata server the boot agent talks to."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.attrs: dict[str, str] = {}
        self.etags: dict[str, str] = {}
        self.states: list[str] = []
        self.requests: list[str] = []
        self.hanging = 0
        self.drops = 0

    def set_attr(self, key: str, value: str) -> None:
        with self.cond:
            self.attrs[key] = value
            self.etags[key] = hashlib.sha256(value.encode()).hexdigest()[:16]
            self.cond.notify_all()

    def suspend_drop(self) -> None:
        """Drop every hanging long-poll without an answer."""
        with self.cond:
            self.drops += 1
            self.cond.notify_all()

    def wait_hanging(self, timeout: float = 10) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: self.hanging > 0, timeout), "agent never long-polled"

    def wait_state(self, state: str, timeout: float = 10) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: state in self.states, timeout), self.states

    def handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def _reply(self, code: int, body: str = "", etag: str | None = None) -> None:
                data = body.encode()
                self.send_response(code)
                self.send_header("Metadata-Flavor", "Google")
                self.send_header("Content-Type", "application/text")
                if etag:
                    self.send_header("ETag", etag)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _flavored(self) -> bool:
                if self.headers.get("Metadata-Flavor") != "Google":
                    self._reply(403, "Missing Metadata-Flavor:Google header.")
                    return False
                return True

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                with fake.cond:
                    fake.requests.append(self.path)
                if not self._flavored():
                    return
                if url.path == PREFIX + "/instance/id":
                    self._reply(200, "4242")
                    return
                attr_prefix = PREFIX + "/instance/attributes/"
                if not url.path.startswith(attr_prefix):
                    self._reply(404, "not found")
                    return
                key = url.path[len(attr_prefix) :]
                q = {k: v[0] for k, v in parse_qs(url.query).items()}
                with fake.cond:
                    if q.get("wait_for_change") == "true":
                        baseline = q.get("last_etag", fake.etags.get(key))
                        deadline = time.monotonic() + float(q.get("timeout_sec", "300"))
                        drops = fake.drops
                        fake.hanging += 1
                        fake.cond.notify_all()
                        try:
                            while (
                                fake.etags.get(key) == baseline
                                and fake.drops == drops
                                and (left := deadline - time.monotonic()) > 0
                            ):
                                fake.cond.wait(left)
                        finally:
                            fake.hanging -= 1
                        if fake.drops != drops:
                            self.close_connection = True
                            return  # no reply at all: the connection just dies
                    value, etag = fake.attrs.get(key), fake.etags.get(key)
                if value is None:
                    self._reply(404, "not found")
                else:
                    self._reply(200, value, etag)

            def do_PUT(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length).decode()
                if not self._flavored():
                    return
                if urlsplit(self.path).path != PREFIX + "/instance/guest-attributes/garo/state":
                    self._reply(404, "not found")
                    return
                with fake.cond:
                    fake.states.append(body)
                    fake.cond.notify_all()
                self._reply(200)

        return Handler


@pytest.fixture
def metadata() -> Iterator[tuple[FakeMetadata, str]]:
    fake = FakeMetadata()
    server = ThreadingHTTPServer(("127.0.0.1", 0), fake.handler())
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake, f"http://127.0.0.1:{server.server_address[1]}{PREFIX}"
    finally:
        fake.suspend_drop()
        server.shutdown()
        server.server_close()


@dataclass
class Vm:
    """Paths of one simulated VM: runner dir with a fake run.sh, tmpfs dir, clock."""

    root: Path
    runner: Path
    run_dir: Path
    record: Path
    clock_offset: Path
    bin: Path

    def env(self, url: str, **extra: str) -> dict[str, str]:
        env = {
            "PATH": f"{self.bin}:{os.environ['PATH']}",
            "HOME": str(self.root),
            "GARO_CLOUD": "gce",
            "GARO_METADATA_URL": url,
            "GARO_RUNNER_USER": "",
            "GARO_RUNNER_DIR": str(self.runner),
            "GARO_RUN_DIR": str(self.run_dir),
            "GARO_POLL_TIMEOUT": "5",
            "GARO_POLL_INTERVAL": "0.2",
            "GARO_JIT_TIMEOUT": "30",
        }
        env.update(extra)
        return env

    def start(self, url: str, **extra: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            ["bash", str(AGENT)],
            env=self.env(url, **extra),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def runner_args(self) -> list[str]:
        path = self.record / "args"
        return path.read_text().split("\0")[:-1] if path.exists() else []


@pytest.fixture
def vm(tmp_path: Path) -> Vm:
    runner = tmp_path / "opt" / "actions-runner"
    record = tmp_path / "record"
    bin_dir = tmp_path / "bin"
    for d in (runner, record, bin_dir):
        d.mkdir(parents=True)
    # The fake run.sh records what the real one would receive, what it can see
    # of its own and its parent's (the agent's) environment, then exits with
    # the status in exit_code (0 unless a test writes one).
    run_sh = runner / "run.sh"
    run_sh.write_text(
        "#!/bin/bash\n"
        f'rec="{record}"\n'
        'printf "%s\\0" "$@" > "$rec/args"\n'
        'env > "$rec/env"\n'
        'tr "\\0" "\\n" < /proc/$PPID/environ > "$rec/agent-environ"\n'
        'pwd > "$rec/cwd"\n'
        # Like the real run.sh, pass a stop on to the listener and exit with it.
        "trap 'kill $child; exit 143' TERM\n"
        f'if [ -f "{record}/sleep" ]; then sleep "$(cat "{record}/sleep")" & child=$!; wait $child; fi\n'
        f'exit "$(cat "{record}/exit_code" 2>/dev/null || echo 0)"\n'
    )
    run_sh.chmod(0o755)
    # A `date` whose epoch seconds can jump forward, as after a suspend.
    offset = tmp_path / "clock-offset"
    offset.write_text("0")
    real_date = shutil.which("date")
    fake_date = bin_dir / "date"
    fake_date.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = "+%s" ]; then echo $(( $({real_date} +%s) + $(cat {offset}) )); '
        f'else exec {real_date} "$@"; fi\n'
    )
    fake_date.chmod(0o755)
    return Vm(tmp_path, runner, tmp_path / "run" / "garo", record, offset, bin_dir)


def finish(proc: subprocess.Popen[str], timeout: float = 30) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def files_containing(root: Path, needle: str, skip: Path) -> list[Path]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and skip not in path.parents and needle.encode() in path.read_bytes():
            found.append(path)
    return found


def test_fake_server_is_gce_like_without_the_flavor_header(metadata: tuple[FakeMetadata, str]) -> None:
    fake, url = metadata
    fake.set_attr("garo-jit-config", JIT)
    assert requests.get(f"{url}/instance/attributes/garo-jit-config", timeout=5).status_code == 403
    ok = requests.get(f"{url}/instance/attributes/garo-jit-config", headers={"Metadata-Flavor": "Google"}, timeout=5)
    assert ok.status_code == 200 and ok.text == JIT and ok.headers["ETag"]


def test_config_written_while_waiting_is_handed_to_runner_and_forgotten(
    metadata: tuple[FakeMetadata, str], vm: Vm
) -> None:
    fake, url = metadata
    proc = vm.start(url)
    fake.wait_state("waiting")
    fake.wait_hanging()  # the agent is blocked in a wait_for_change long-poll
    fake.set_attr("garo-jit-config", JIT)
    rc, out = finish(proc)

    assert rc == 0, out
    assert vm.runner_args() == ["--jitconfig", JIT]
    assert fake.states == ["waiting", "running", "done"]
    assert (vm.record / "cwd").read_text().strip() == str(vm.runner)
    assert any("wait_for_change=true" in r for r in fake.requests)
    # Not in the runner's environment, nor the agent's, nor the logs, nor on disk.
    assert JIT not in (vm.record / "env").read_text()
    assert "GARO_" not in (vm.record / "env").read_text()
    assert JIT not in (vm.record / "agent-environ").read_text()
    assert JIT not in out
    assert files_containing(vm.root, JIT[:40], skip=vm.record) == []


def test_config_present_at_boot_is_read_without_waiting_for_a_change(
    metadata: tuple[FakeMetadata, str], vm: Vm
) -> None:
    fake, url = metadata
    fake.set_attr("garo-jit-config", JIT)
    # A long poll here would hang for 300 s: GCE waits for the value to *change*.
    rc, out = finish(vm.start(url, GARO_POLL_TIMEOUT="300"))
    assert rc == 0, out
    assert vm.runner_args() == ["--jitconfig", JIT]
    assert fake.states == ["waiting", "running", "done"]
    assert not any("wait_for_change" in r for r in fake.requests)


def test_no_config_within_timeout_reports_failed_and_never_starts_runner(
    metadata: tuple[FakeMetadata, str], vm: Vm
) -> None:
    fake, url = metadata
    rc, out = finish(vm.start(url, GARO_JIT_TIMEOUT="2", GARO_POLL_TIMEOUT="1"))
    assert rc != 0
    assert fake.states == ["waiting", "failed"]
    assert vm.runner_args() == []
    assert "no JIT config" in out


def test_empty_placeholder_then_config_uses_etag_long_poll(metadata: tuple[FakeMetadata, str], vm: Vm) -> None:
    fake, url = metadata
    fake.set_attr("garo-jit-config", "")  # a warm VM created with the key present but empty
    proc = vm.start(url)
    fake.wait_hanging()
    fake.set_attr("garo-jit-config", JIT)
    rc, out = finish(proc)
    assert rc == 0, out
    assert vm.runner_args() == ["--jitconfig", JIT]
    assert any("last_etag=" in r for r in fake.requests)


def test_resume_after_suspend_drops_hanging_poll_and_restarts_the_wait(
    metadata: tuple[FakeMetadata, str], vm: Vm
) -> None:
    fake, url = metadata
    # 20 s awake budget; the VM then sits suspended for a day.
    proc = vm.start(url, GARO_JIT_TIMEOUT="20", GARO_POLL_TIMEOUT="5")
    fake.wait_state("waiting")
    fake.wait_hanging()
    vm.clock_offset.write_text(str(24 * 3600))  # resume: wall clock jumped
    fake.suspend_drop()  # the long-poll that spanned the suspend dies without a reply
    fake.set_attr("garo-jit-config", JIT)  # the scaler writes the config after resuming
    rc, out = finish(proc)

    assert rc == 0, out
    assert "resumed from suspend" in out
    assert fake.states == ["waiting", "waiting", "running", "done"]
    assert vm.runner_args() == ["--jitconfig", JIT]


def test_resume_where_hanging_poll_returns_the_config(metadata: tuple[FakeMetadata, str], vm: Vm) -> None:
    fake, url = metadata
    proc = vm.start(url)
    fake.wait_hanging()
    vm.clock_offset.write_text("3600")
    fake.set_attr("garo-jit-config", JIT)  # the hanging request answers after resume
    rc, out = finish(proc)
    assert rc == 0, out
    assert fake.states == ["waiting", "running", "done"]
    assert vm.runner_args() == ["--jitconfig", JIT]


def test_runner_failure_reports_failed(metadata: tuple[FakeMetadata, str], vm: Vm) -> None:
    fake, url = metadata
    (vm.record / "exit_code").write_text("3")
    fake.set_attr("garo-jit-config", JIT)
    rc, out = finish(vm.start(url))
    assert rc != 0
    assert fake.states == ["waiting", "running", "failed"]
    assert "status 3" in out


def test_config_is_single_use_per_boot(metadata: tuple[FakeMetadata, str], vm: Vm) -> None:
    fake, url = metadata
    fake.set_attr("garo-jit-config", JIT)
    assert finish(vm.start(url))[0] == 0
    (vm.record / "args").unlink()
    rc, out = finish(vm.start(url))  # the unit restarted within the same boot
    assert rc != 0
    assert vm.runner_args() == []
    assert fake.states[-1] == "failed"


def test_stop_during_job_stops_runner_and_reports_failed(metadata: tuple[FakeMetadata, str], vm: Vm) -> None:
    fake, url = metadata
    (vm.record / "sleep").write_text("60")
    fake.set_attr("garo-jit-config", JIT)
    proc = vm.start(url)
    fake.wait_state("running")
    proc.send_signal(signal.SIGTERM)  # systemctl stop
    rc, out = finish(proc, timeout=20)
    assert rc != 0
    assert fake.states == ["waiting", "running", "failed"]
    assert "stop requested" in out


class FakeImds(BaseHTTPRequestHandler):
    """IMDSv2: a PUT for a session token, then GETs that must carry it (401 otherwise)."""

    TOKEN = "imds-session-token"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _reply(self, code: int, body: str) -> None:
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def do_PUT(self) -> None:
        if self.path == "/latest/api/token" and self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
            self._reply(200, self.TOKEN)
        else:
            self._reply(400, "bad token request")

    def do_GET(self) -> None:
        if self.headers.get("X-aws-ec2-metadata-token") != self.TOKEN:
            self._reply(401, "")
        elif self.path == "/latest/meta-data/instance-id":
            self._reply(200, "i-0123456789abcdef0")
        elif self.path == "/latest/meta-data/tags/instance/garo-jit-bucket":
            self._reply(200, "garo-eng-jit")
        else:
            self._reply(404, "")


def test_aws_path_reads_own_s3_object_via_imdsv2_and_deletes_it(vm: Vm) -> None:
    """The EC2 design (docs/aws-backend.md): s3://<bucket>/jit/<role id>:<instance id>.

    S3 and STS are a stand-in `aws` script backed by a directory; IMDSv2 is a
    fake that enforces the session token and serves the bucket tag.
    """
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeImds)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    store = vm.root / "s3"
    store.mkdir()
    calls = vm.root / "aws-calls"
    aws = vm.bin / "aws"
    aws.write_text(
        "#!/bin/bash\n"
        f'echo "$*" >> "{calls}"\n'
        'url=""; for a in "$@"; do case "$a" in s3://*) url=$a ;; esac; done\n'
        f'f="{store}/$(echo "${{url#s3://}}" | tr /: __)"\n'
        'case "$1 $2" in\n'
        '  "sts get-caller-identity") echo AROAEXAMPLERUNNER:i-0123456789abcdef0 ;;\n'
        '  "s3 cp") [ -f "$f" ] && cat "$f" || { echo "An error occurred (403)" >&2; exit 1; } ;;\n'
        '  "s3 rm") rm "$f" ;;\n'
        '  "ec2 create-tags") ;;\n'
        "  *) exit 2 ;;\n"
        "esac\n"
    )
    aws.chmod(0o755)
    try:
        proc = vm.start(
            "http://127.0.0.1:9/unused",
            GARO_CLOUD="aws",
            GARO_IMDS_URL=f"http://127.0.0.1:{server.server_address[1]}",
        )
        deadline = time.monotonic() + 10
        while not (calls.exists() and "s3 cp" in calls.read_text()):
            assert time.monotonic() < deadline, "agent never polled S3"
            time.sleep(0.05)
        (store / "garo-eng-jit_jit_AROAEXAMPLERUNNER_i-0123456789abcdef0").write_text(JIT)
        rc, out = finish(proc)
    finally:
        server.shutdown()
        server.server_close()

    assert rc == 0, out
    assert vm.runner_args() == ["--jitconfig", JIT]
    assert list(store.iterdir()) == []  # the agent deleted its object
    log = calls.read_text()
    assert "s3://garo-eng-jit/jit/AROAEXAMPLERUNNER:i-0123456789abcdef0 -" in log
    assert log.count("sts get-caller-identity") == 1  # asked once, not per poll
    tags = [line for line in log.splitlines() if line.startswith("ec2 create-tags")]
    assert [t.rsplit("Value=", 1)[1] for t in tags] == ["waiting", "running", "done"]
    assert all("--resources i-0123456789abcdef0" in t for t in tags)
