"""Integration tests: the real boot agent (images/garo-runner/garo-runner, bash)
against a fake GCE metadata server on loopback, a stand-in run.sh and a
stand-in Runner.Listener, started as a real unprivileged user (the tests run
as root, like the agent on a VM, and create that user).

The fake server behaves like GCE where the agent depends on it: 403 without
`Metadata-Flavor: Google`, ETags on values and on the recursive attributes
directory, `wait_for_change` long-polls that wait for the ETag to differ from
`last_etag` (or from the current one when none is given) and answer with the
current value at `timeout_sec`, and guest-attribute PUTs. It can also
"suspend" the VM: hanging long-polls are dropped without a reply, the way a
connection that spanned a suspend dies.

The run.sh stand-in models what the agent relies on in actions/runner's
run.sh: without RUNNER_MANUALLY_TRAP_SIG it runs the listener in the
foreground, passes no signal on and exits 0 whatever happened; with it, it
runs the listener in its own process group, turns SIGTERM/SIGINT into SIGINT
for that group and exits with the listener's status, where status 7 (a
runner version GitHub refuses) stays 7 only with
ACTIONS_RUNNER_RETURN_VERSION_DEPRECATED_EXIT_CODE=1 (run-helper.sh).
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from scaler.agent.jit_endpoint import jit_app, serve
from scaler.backends.aws_identity import AwsIdentityVerifier
from scaler.backends.jit_vault import Identity, IdentityVerifier, JitVault
from tests.harness.gce_identity import PROJECT, IdentityIssuer
from tests.harness.iid import Signer

ROOT = Path(__file__).resolve().parents[1]
AGENT = ROOT / "images" / "garo-runner" / "garo-runner"
PREFIX = "/computeMetadata/v1"
ATTRS = PREFIX + "/instance/attributes/"
JIT = "eyJydW5uZXIiOiJnYXJvLXRlc3QifQ-SECRET-" + "x" * 2000  # a JIT config is a few KB of base64
JIT_SHA = hashlib.sha256(JIT.encode()).hexdigest()
INSTANCE = {
    "id": "4242",
    "image": "projects/imgs/global/images/garo-runner-x64-2-338-0-20261101-120000",
    "machine-type": "projects/123/machineTypes/e2-standard-4",
    "zone": "projects/123/zones/europe-west1-b",
}


def _etag(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class FakeMetadata:
    """The subset of the GCE metadata server the boot agent talks to."""

    def __init__(self) -> None:
        self.issuer = IdentityIssuer()
        self.instance_name = "garo-eng-linux-4242"
        self.cond = threading.Condition()
        self.attrs: dict[str, str] = {}
        self.states: list[str] = []
        self.reasons: list[str] = []
        self.requests: list[str] = []
        self.hanging = 0
        self.drops = 0

    def set_attr(self, key: str, value: str) -> None:
        with self.cond:
            self.attrs[key] = value
            self.cond.notify_all()

    def _dir_json(self) -> str:
        return json.dumps(self.attrs, sort_keys=True)

    def _version(self, key: str | None) -> str | None:
        """ETag of one attribute (None while absent), or of the directory for key None."""
        if key is None:
            return _etag(self._dir_json())
        return _etag(self.attrs[key]) if key in self.attrs else None

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

    def gets(self) -> list[str]:
        with self.cond:
            return [r for r in self.requests if r.startswith(ATTRS)]

    def handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def _reply(
                self, code: int, body: str = "", etag: str | None = None, ctype: str = "application/text"
            ) -> None:
                data = body.encode()
                self.send_response(code)
                self.send_header("Metadata-Flavor", "Google")
                self.send_header("Content-Type", ctype)
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
                info = url.path.removeprefix(PREFIX + "/instance/")
                if info in INSTANCE:
                    self._reply(200, INSTANCE[info])
                    return
                if info == "service-accounts/default/identity":
                    # GCE: a Google-signed JWT for the asked audience; format=full adds the VM's claims.
                    q = {k: v[0] for k, v in parse_qs(url.query).items()}
                    if "audience" not in q or q.get("format") != "full":
                        self._reply(400, "this fake mints only format=full tokens for an audience")
                        return
                    zone = INSTANCE["zone"].rsplit("/", 1)[-1]
                    token = fake.issuer.token(q["audience"], fake.instance_name, project=PROJECT, zone=zone)
                    self._reply(200, token)
                    return
                if not url.path.startswith(ATTRS):
                    self._reply(404, "not found")
                    return
                key: str | None = url.path[len(ATTRS) :] or None
                q = {k: v[0] for k, v in parse_qs(url.query).items()}
                if key is None and q.get("recursive") != "true":
                    self._reply(400, "this fake serves the attributes directory only with recursive=true")
                    return
                with fake.cond:
                    if q.get("wait_for_change") == "true":
                        baseline = q.get("last_etag", fake._version(key))
                        deadline = time.monotonic() + float(q.get("timeout_sec", "300"))
                        drops = fake.drops
                        fake.hanging += 1
                        fake.cond.notify_all()
                        try:
                            while (
                                fake._version(key) == baseline
                                and fake.drops == drops
                                and (left := deadline - time.monotonic()) > 0
                            ):
                                fake.cond.wait(left)
                        finally:
                            fake.hanging -= 1
                        if fake.drops != drops:
                            self.close_connection = True
                            return  # no reply at all: the connection just dies
                    if key is None:
                        body, etag, ctype = fake._dir_json(), fake._version(None), "application/json"
                    else:
                        value, etag, ctype = fake.attrs.get(key), fake._version(key), "application/text"
                        if value is None:
                            self._reply(404, "not found")
                            return
                        body = value
                self._reply(200, body, etag, ctype)

            def do_PUT(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length).decode()
                if not self._flavored():
                    return
                path = urlsplit(self.path).path
                target = {
                    PREFIX + "/instance/guest-attributes/garo/state": fake.states,
                    PREFIX + "/instance/guest-attributes/garo/reason": fake.reasons,
                }.get(path)
                if target is None:
                    self._reply(404, "not found")
                    return
                with fake.cond:
                    target.append(body)
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


@pytest.fixture(scope="session")
def runner_user() -> Iterator[pwd.struct_passwd]:
    """A real unprivileged user for the runner, like `runner` on the image (made by 30-runner.sh)."""
    if os.geteuid() != 0:
        pytest.skip("the boot agent runs as root and switches to the runner user: run these tests as root")
    name = f"garo-t{os.getpid()}"  # unique: other test sessions may run on the same machine
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", name], check=True, capture_output=True)
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", "--remove", name], capture_output=True)


# Modelled on actions/runner's run.sh + run-helper.sh (see the module docstring).
RUN_SH = """#!/bin/bash
rec=@RECORD@
for a in "$@"; do printf '%s\\0' "$a"; done > "$rec/args"
env > "$rec/env"
id -u > "$rec/uid"
cat /proc/$PPID/comm > "$rec/parent"
pwd > "$rec/cwd"
helper() {
  ./bin/Runner.Listener run
  rc=$?
  if [ "$rc" = 7 ] && [ "$ACTIONS_RUNNER_RETURN_VERSION_DEPRECATED_EXIT_CODE" != 1 ]; then exit 0; fi
  exit "$rc"
}
if [ -z "$RUNNER_MANUALLY_TRAP_SIG" ]; then
  (helper)
  exit 0
fi
set -m
trap 'kill -INT -$PID' INT TERM
helper & PID=$!
wait $PID
rc=$?
trap - INT TERM
wait $PID
exit $rc
"""

LISTENER = """#!/bin/bash
rec=@RECORD@
printf '%s' "${ACTIONS_RUNNER_INPUT_JITCONFIG:-}" | sha256sum | cut -d' ' -f1 > "$rec/listener-jit"
unset ACTIONS_RUNNER_INPUT_JITCONFIG  # the real listener removes it from its environment
child=
trap 'echo INT >> "$rec/signals"; [ -n "$child" ] && kill $child; exit 0' INT
trap 'echo TERM >> "$rec/signals"; [ -n "$child" ] && kill $child; exit 143' TERM
# The job: a sleep that holds none of the agent's output pipes, started before
# listener.pid says "ready", so a signal from then on always finds it.
if [ -f "$rec/hold" ]; then sleep 300 </dev/null >/dev/null 2>&1 & child=$!; fi
echo $$ > "$rec/listener.pid"
if [ -n "$child" ]; then wait $child; fi
exit "$(cat "$rec/exit_code" 2>/dev/null || echo 0)"
"""


@dataclass
class Vm:
    """Paths of one simulated VM: runner dir with stand-ins, tmpfs dir, clock."""

    root: Path
    runner: Path
    run_dir: Path
    record: Path
    clock_offset: Path
    bin: Path
    user: str

    def env(self, url: str, **extra: str) -> dict[str, str]:
        env = {
            "PATH": f"{self.bin}:{os.environ['PATH']}",
            "HOME": "/root",
            "GARO_CLOUD": "gce",
            "GARO_METADATA_URL": url,
            "GARO_RUNNER_USER": self.user,
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

    def runner_args(self) -> list[str] | None:
        """What run.sh was started with; None if it never started."""
        path = self.record / "args"
        return path.read_text().split("\0")[:-1] if path.exists() else None

    def wait_for(self, name: str, timeout: float = 10) -> str:
        path = self.record / name
        deadline = time.monotonic() + timeout
        while not (path.exists() and path.read_text()):
            assert time.monotonic() < deadline, f"{name} never written"
            time.sleep(0.05)
        return path.read_text()


@pytest.fixture
def vm(runner_user: pwd.struct_passwd) -> Iterator[Vm]:
    # Not under pytest's tmp_path: its parent is 0700 root, and the runner user must reach the runner dir.
    root = Path(tempfile.mkdtemp(prefix="garo-vm-"))
    root.chmod(0o755)
    runner = root / "opt" / "actions-runner"
    record = root / "record"
    bin_dir = root / "bin"
    for d in (runner / "bin", record, bin_dir):
        d.mkdir(parents=True)
    (runner / "run.sh").write_text(RUN_SH.replace("@RECORD@", str(record)))
    (runner / "bin" / "Runner.Listener").write_text(LISTENER.replace("@RECORD@", str(record)))
    for path in (runner / "run.sh", runner / "bin" / "Runner.Listener"):
        path.chmod(0o755)
    for path in (runner.parent, runner, runner / "bin", record, *runner.rglob("*")):
        os.chown(path, runner_user.pw_uid, runner_user.pw_gid)
    # A `date` whose epoch seconds can jump forward, as after a suspend.
    offset = root / "clock-offset"
    offset.write_text("0")
    real_date = shutil.which("date")
    fake_date = bin_dir / "date"
    fake_date.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = "+%s" ]; then echo $(( $({real_date} +%s) + $(cat {offset}) )); '
        f'else exec {real_date} "$@"; fi\n'
    )
    fake_date.chmod(0o755)
    try:
        yield Vm(root, runner, root / "run" / "garo", record, offset, bin_dir, runner_user.pw_name)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def finish(proc: subprocess.Popen[str], timeout: float = 30) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def files_containing(root: Path, needle: str, skip: Path) -> list[Path]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and skip not in path.parents and needle.encode() in path.read_bytes():
            found.append(path)
    return found


def cmdlines_containing(needle: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if needle.encode() in (proc / "cmdline").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                pass  # the process ended meanwhile
    return found


def test_fake_server_is_gce_like_without_the_flavor_header(metadata: tuple[FakeMetadata, str]) -> None:
    fake, url = metadata
    fake.set_attr("garo-jit-config", JIT)
    assert requests.get(f"{url}/instance/attributes/garo-jit-config", timeout=5).status_code == 403
    flavor = {"Metadata-Flavor": "Google"}
    ok = requests.get(f"{url}/instance/attributes/garo-jit-config", headers=flavor, timeout=5)
    assert ok.status_code == 200 and ok.text == JIT and ok.headers["ETag"]
    listing = requests.get(f"{url}/instance/attributes/?recursive=true", headers=flavor, timeout=5)
    assert listing.json() == {"garo-jit-config": JIT} and listing.headers["ETag"] != ok.headers["ETag"]


def test_warm_vm_long_polls_the_attributes_directory_and_wakes_on_the_first_write(
    metadata: tuple[FakeMetadata, str], vm: Vm
) -> None:
    fake, url = metadata
    # timeout_sec=300: a long-poll that only returned at its timeout would hang this test.
    proc = vm.start(url, GARO_POLL_TIMEOUT="300")
    fake.wait_state("waiting")
    fake.wait_hanging()
    time.sleep(1)  # room for any polling the agent should not be doing
    quiet = fake.gets()
    fake.set_attr("garo-jit-config", JIT)
    rc, out = finish(proc)

    assert rc == 0, out
    empty = _etag("{}")
    # Silent while waiting: one read of the directory's ETag, one of the key, then one long-poll.
    assert quiet == [
        ATTRS + "garo-agent-url",  # absent: a stack older than the image, so the metadata path
        ATTRS + "?recursive=true",
        ATTRS + "garo-jit-config",
        ATTRS + f"?recursive=true&wait_for_change=true&timeout_sec=300&last_etag={empty}",
    ]
    # The write answered that long-poll; the key was read once, right after.
    assert fake.gets() == [*quiet, ATTRS + "garo-jit-config"]
    assert fake.states == ["waiting", "running", "done"]


def test_config_written_while_waiting_reaches_the_runner_only_through_its_environment(
    metadata: tuple[FakeMetadata, str], vm: Vm
) -> None:
    fake, url = metadata
    (vm.record / "hold").write_text("")  # the listener stays up until stopped
    proc = vm.start(url)
    fake.wait_state("waiting")
    fake.wait_hanging()  # the agent is blocked in a wait_for_change long-poll
    fake.set_attr("garo-jit-config", JIT)
    vm.wait_for("listener.pid")

    try:
        # While the runner runs: on no process's command line, not in the agent's environment.
        assert cmdlines_containing(JIT[:40]) == []
        assert JIT[:40].encode() not in Path(f"/proc/{proc.pid}/environ").read_bytes()
    finally:
        proc.send_signal(signal.SIGTERM)
    finish(proc)

    assert vm.runner_args() == []  # no --jitconfig
    assert vm.wait_for("listener-jit").strip() == JIT_SHA  # it got the config, from ACTIONS_RUNNER_INPUT_JITCONFIG
    env = (vm.record / "env").read_text()
    assert "GARO_" not in env
    assert "RUNNER_MANUALLY_TRAP_SIG=1" in env.splitlines()
    assert "ACTIONS_RUNNER_RETURN_VERSION_DEPRECATED_EXIT_CODE=1" in env.splitlines()
    assert (vm.record / "cwd").read_text().strip() == str(vm.runner)
    assert files_containing(vm.root, JIT[:40], skip=vm.record) == []


def test_runner_runs_as_the_runner_user_without_a_supervising_parent(
    metadata: tuple[FakeMetadata, str], vm: Vm, runner_user: pwd.struct_passwd
) -> None:
    fake, url = metadata
    fake.set_attr("garo-jit-config", JIT)
    rc, out = finish(vm.start(url))
    assert rc == 0, out
    assert int((vm.record / "uid").read_text()) == runner_user.pw_uid
    # run.sh's parent is the agent itself (bash), not runuser, su or setpriv.
    assert (vm.record / "parent").read_text().strip() == "bash"
    env = dict(line.split("=", 1) for line in (vm.record / "env").read_text().splitlines() if "=" in line)
    assert env["HOME"] == runner_user.pw_dir and env["USER"] == runner_user.pw_name
    assert JIT not in out


def test_sigterm_reaches_the_listener_and_the_state_says_stopped(metadata: tuple[FakeMetadata, str], vm: Vm) -> None:
    fake, url = metadata
    (vm.record / "hold").write_text("")
    fake.set_attr("garo-jit-config", JIT)
    proc = vm.start(url)
    fake.wait_state("running")
    vm.wait_for("listener.pid")
    proc.send_signal(signal.SIGTERM)  # systemctl stop: systemd signals the unit's main process
    rc, out = finish(proc, timeout=20)

    assert rc != 0
    assert vm.wait_for("signals").split() == ["INT"]  # run.sh turned it into SIGINT for the listener
    assert fake.states == ["waiting", "running", "failed"]
    assert fake.reasons[-1] == "stopped"
    assert "stop requested" in out


def test_config_present_at_boot_is_read_without_waiting_for_a_change(
    metadata: tuple[FakeMetadata, str], vm: Vm
) -> None:
    fake, url = metadata
    fake.set_attr("garo-jit-config", JIT)
    # A long poll here would hang for 300 s: GCE waits for the value to *change*.
    rc, out = finish(vm.start(url, GARO_POLL_TIMEOUT="300"))
    assert rc == 0, out
    assert vm.wait_for("listener-jit").strip() == JIT_SHA
    assert fake.states == ["waiting", "running", "done"]
    assert not any("wait_for_change" in r for r in fake.requests)


def test_setup_info_names_image_machine_type_and_zone(metadata: tuple[FakeMetadata, str], vm: Vm) -> None:
    fake, url = metadata
    fake.set_attr("garo-jit-config", JIT)
    rc, out = finish(vm.start(url))
    assert rc == 0, out
    info = json.loads((vm.runner / ".setup_info").read_text())
    detail = info[0]["detail"].splitlines()
    assert "Image: garo-runner-x64-2-338-0-20261101-120000" in detail
    assert "Machine type: e2-standard-4" in detail and "Zone: europe-west1-b" in detail
    assert (vm.runner / ".setup_info").stat().st_uid == pwd.getpwnam(vm.user).pw_uid


def test_no_config_within_timeout_reports_failed_and_never_starts_runner(
    metadata: tuple[FakeMetadata, str], vm: Vm
) -> None:
    fake, url = metadata
    rc, out = finish(vm.start(url, GARO_JIT_TIMEOUT="2", GARO_POLL_TIMEOUT="1"))
    assert rc != 0
    assert fake.states == ["waiting", "failed"]
    assert fake.reasons[-1] == "no-jit-config"
    assert vm.runner_args() is None
    assert "no JIT config" in out


def test_empty_placeholder_then_config_uses_etag_long_poll(metadata: tuple[FakeMetadata, str], vm: Vm) -> None:
    fake, url = metadata
    fake.set_attr("garo-jit-config", "")  # a warm VM created with the key present but empty
    proc = vm.start(url)
    fake.wait_hanging()
    fake.set_attr("garo-jit-config", JIT)
    rc, out = finish(proc)
    assert rc == 0, out
    assert vm.wait_for("listener-jit").strip() == JIT_SHA
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
    assert vm.wait_for("listener-jit").strip() == JIT_SHA


def test_resume_where_hanging_poll_returns_the_config(metadata: tuple[FakeMetadata, str], vm: Vm) -> None:
    fake, url = metadata
    proc = vm.start(url)
    fake.wait_hanging()
    vm.clock_offset.write_text("3600")
    fake.set_attr("garo-jit-config", JIT)  # the hanging request answers after resume
    rc, out = finish(proc)
    assert rc == 0, out
    assert fake.states == ["waiting", "running", "done"]
    assert vm.wait_for("listener-jit").strip() == JIT_SHA


def test_runner_failure_reports_failed(metadata: tuple[FakeMetadata, str], vm: Vm) -> None:
    fake, url = metadata
    (vm.record / "exit_code").write_text("9")
    fake.set_attr("garo-jit-config", JIT)
    rc, out = finish(vm.start(url))
    assert rc != 0
    assert fake.states == ["waiting", "running", "failed"]
    assert fake.reasons[-1] == "exit-9"
    assert "status 9" in out


def test_a_runner_version_github_refuses_is_failed_not_done(metadata: tuple[FakeMetadata, str], vm: Vm) -> None:
    fake, url = metadata
    (vm.record / "exit_code").write_text("7")  # Runner.Listener's "version deprecated"
    fake.set_attr("garo-jit-config", JIT)
    rc, out = finish(vm.start(url))
    assert rc != 0
    assert fake.states == ["waiting", "running", "failed"]
    assert fake.reasons[-1] == "version-refused"
    assert "rebuild the image" in out


def test_config_is_single_use_per_boot(metadata: tuple[FakeMetadata, str], vm: Vm) -> None:
    fake, url = metadata
    fake.set_attr("garo-jit-config", JIT)
    assert finish(vm.start(url))[0] == 0
    (vm.record / "args").unlink()
    rc, out = finish(vm.start(url))  # the unit restarted within the same boot
    assert rc != 0
    assert vm.runner_args() is None
    assert fake.states[-1] == "failed" and fake.reasons[-1] == "jit-already-used"


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
        elif self.path == "/latest/meta-data/ami-id":
            self._reply(200, "ami-0abc")
        elif self.path == "/latest/meta-data/instance-type":
            self._reply(200, "m7g.large")
        elif self.path == "/latest/meta-data/placement/availability-zone":
            self._reply(200, "eu-west-1a")
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
    assert vm.wait_for("listener-jit").strip() == JIT_SHA
    assert list(store.iterdir()) == []  # the agent deleted its object
    log = calls.read_text()
    assert "s3://garo-eng-jit/jit/AROAEXAMPLERUNNER:i-0123456789abcdef0 -" in log
    assert log.count("sts get-caller-identity") == 1  # asked once, not per poll
    tags = [line for line in log.splitlines() if line.startswith("ec2 create-tags")]
    assert [t.rsplit("Value=", 1)[1] for t in tags] == ["waiting", "running", "done"]
    assert all("Key=garo-reason,Value=" in t for t in tags)
    assert "Zone: eu-west-1a" in json.loads((vm.runner / ".setup_info").read_text())[0]["detail"]
    assert all("--resources i-0123456789abcdef0" in t for t in tags)


def _aws_cli(vm: Vm) -> Path:
    """A stand-in `aws` that records its arguments and answers only create-tags (the state reports)."""
    calls = vm.root / "aws-calls"
    aws = vm.bin / "aws"
    aws.write_text(f'#!/bin/bash\necho "$*" >> "{calls}"\n[ "$1 $2" = "ec2 create-tags" ] || exit 2\n')
    aws.chmod(0o755)
    return calls


def test_aws_vm_pulls_its_config_from_the_agent_with_its_signed_identity_document(vm: Vm) -> None:
    """EC2 with a garo-agent-url tag: the document and its signature from IMDSv2, to the real endpoint, once."""
    signer = Signer()
    instance_id = "i-0123456789abcdef0"
    document = signer.document(instance_id, account="123456789012")
    vault = JitVault()
    verifier = AwsIdentityVerifier("123456789012", "eu-west-1", signer.certificate, {instance_id: "garo-eng-1"}.get)
    agent = serve(jit_app(vault, verifier), "127.0.0.1", 0)
    agent_url = f"http://127.0.0.1:{agent.server_port}"
    seen: list[str] = []

    class Imds(FakeImds):
        def do_GET(self) -> None:
            seen.append(self.path)
            if self.headers.get("X-aws-ec2-metadata-token") != self.TOKEN:
                self._reply(401, "")
            elif self.path == "/latest/dynamic/instance-identity/document":
                self._reply(200, document.decode())
            elif self.path == "/latest/dynamic/instance-identity/signature":
                self._reply(200, signer.signature(document))
            elif self.path == "/latest/meta-data/tags/instance/garo-agent-url":
                self._reply(200, agent_url)
            else:
                super().do_GET()

    imds = ThreadingHTTPServer(("127.0.0.1", 0), Imds)
    threading.Thread(target=imds.serve_forever, daemon=True).start()
    calls = _aws_cli(vm)
    try:
        proc = vm.start(
            "http://127.0.0.1:9/unused",
            GARO_CLOUD="aws",
            GARO_IMDS_URL=f"http://127.0.0.1:{imds.server_address[1]}",
            GARO_PULL_INTERVAL="0.2",
        )
        deadline = time.monotonic() + 10
        while "/latest/dynamic/instance-identity/signature" not in seen:
            assert time.monotonic() < deadline, "the boot agent never read its identity document"
            time.sleep(0.05)
        vault.hold("linux", "garo-eng-1", JIT, ttl=600)  # the agent holds it only now: the VM asked and waits
        rc, out = finish(proc)
    finally:
        imds.shutdown()
        imds.server_close()
        agent.shutdown()
        agent.server_close()

    assert rc == 0, out
    assert vm.wait_for("listener-jit").strip() == JIT_SHA
    assert vault.peek("garo-eng-1") is None  # taken, once
    log = calls.read_text()
    assert "s3 " not in log and "sts " not in log  # no S3 object, no STS call
    tags = [line for line in log.splitlines() if line.startswith("ec2 create-tags")]
    assert [t.rsplit("Value=", 1)[1] for t in tags] == ["waiting", "running", "done"]
    assert JIT not in out and "Bearer" not in out and instance_id not in log.replace(f"--resources {instance_id}", "")
    assert files_containing(vm.root, JIT[:40], skip=vm.record) == []


def test_aws_vm_whose_config_was_taken_fails_at_once(vm: Vm) -> None:
    signer = Signer()
    document = signer.document("i-0123456789abcdef0", account="123456789012")
    vault = JitVault()
    verifier = AwsIdentityVerifier("123456789012", "eu-west-1", signer.certificate, lambda _: "garo-eng-1")
    agent = serve(jit_app(vault, verifier), "127.0.0.1", 0)
    vault.hold("linux", "garo-eng-1", JIT, ttl=600)
    vault.take(verifier.verify(signer.token(document)))  # a copy of the document got there first

    class Imds(FakeImds):
        def do_GET(self) -> None:
            if self.path == "/latest/dynamic/instance-identity/document":
                self._reply(200, document.decode())
            elif self.path == "/latest/dynamic/instance-identity/signature":
                self._reply(200, signer.signature(document))
            else:
                super().do_GET()

    imds = ThreadingHTTPServer(("127.0.0.1", 0), Imds)
    threading.Thread(target=imds.serve_forever, daemon=True).start()
    calls = _aws_cli(vm)
    try:
        rc, out = finish(
            vm.start(
                "http://127.0.0.1:9/unused",
                GARO_CLOUD="aws",
                GARO_IMDS_URL=f"http://127.0.0.1:{imds.server_address[1]}",
                GARO_AGENT_URL=f"http://127.0.0.1:{agent.server_port}",
                GARO_PULL_INTERVAL="0.2",
                GARO_JIT_TIMEOUT="300",
            )
        )
    finally:
        imds.shutdown()
        imds.server_close()
        agent.shutdown()
        agent.server_close()
    assert rc != 0
    assert [t.rsplit("Value=", 1)[1] for t in calls.read_text().splitlines()] == ["waiting", "failed"]
    assert "Key=garo-reason,Value=jit-taken" in calls.read_text()
    assert vm.runner_args() is None


# ------------------------------------------------------------------ GCE pull path


@pytest.fixture
def jit_agent(metadata: tuple[FakeMetadata, str]) -> Iterator[tuple[JitVault, str]]:
    """The scaler's real JIT endpoint on loopback, trusting the fake metadata server's signing key."""
    fake, _ = metadata
    vault = JitVault()
    with fake.issuer.serve() as certs_url:
        verifier = IdentityVerifier("", PROJECT, "europe-west1", certs_url=certs_url)
        server = serve(jit_app(vault, verifier), "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.server_port}"
        verifier.audience = url  # the URL the VM asks its token for
        try:
            yield vault, url
        finally:
            server.shutdown()
            server.server_close()


def test_gce_vm_pulls_its_config_from_the_agent_with_its_identity_token(
    metadata: tuple[FakeMetadata, str], vm: Vm, jit_agent: tuple[JitVault, str]
) -> None:
    fake, url = metadata
    vault, agent_url = jit_agent
    fake.set_attr("garo-agent-url", agent_url)  # the instance template's attribute
    proc = vm.start(url, GARO_PULL_INTERVAL="0.2")
    fake.wait_state("waiting")
    time.sleep(0.5)  # the agent asks (404: nothing held yet) and asks again
    vault.hold("linux", fake.instance_name, JIT, ttl=600)
    rc, out = finish(proc)

    assert rc == 0, out
    assert vm.wait_for("listener-jit").strip() == JIT_SHA
    assert fake.states == ["waiting", "running", "done"]
    assert vault.peek(fake.instance_name) is None  # taken, once
    assert not any(r.startswith(ATTRS + "garo-jit-config") or "wait_for_change" in r for r in fake.requests)
    tokens = [r for r in fake.requests if "service-accounts/default/identity" in r]
    # One token for every ask while waiting (reused for GARO_TOKEN_REUSE s), for the agent's URL.
    assert tokens == [f"{PREFIX}/instance/service-accounts/default/identity?audience={agent_url}&format=full"]
    assert JIT not in out and "Bearer" not in out
    assert files_containing(vm.root, JIT[:40], skip=vm.record) == []


def test_gce_vm_whose_config_was_taken_fails_at_once(
    metadata: tuple[FakeMetadata, str], vm: Vm, jit_agent: tuple[JitVault, str]
) -> None:
    fake, url = metadata
    vault, agent_url = jit_agent
    fake.set_attr("garo-agent-url", agent_url)
    vault.hold("linux", fake.instance_name, JIT, ttl=600)
    now = time.time()
    vault.take(Identity(fake.instance_name, "1", "europe-west1-b", now, now - 10, now + 3600))  # someone else
    rc, out = finish(vm.start(url, GARO_PULL_INTERVAL="0.2", GARO_JIT_TIMEOUT="300"))
    assert rc != 0
    assert fake.states == ["waiting", "failed"] and fake.reasons[-1] == "jit-taken"
    assert vm.runner_args() is None


class ScriptedAgent(BaseHTTPRequestHandler):
    """A JIT endpoint that answers each ask from a script: (status, Retry-After or None, body)."""

    script: list[tuple[int, str | None, str]] = []
    asks: list[str] = []

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        self.asks.append(self.path)
        status, retry, body = self.script.pop(0) if self.script else (404, None, "")
        data = body.encode()
        self.send_response(status)
        if retry is not None:
            self.send_header("Retry-After", retry)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.mark.parametrize(
    ("retry_after", "extra"),
    [("1", {}), ("86400", {"GARO_PULL_MAX": "1"})],
    ids=["waits-the-retry-after", "bounded-by-garo-pull-max"],
)
def test_gce_vm_asks_again_when_the_agents_retry_after_says_not_on_its_own_interval(
    metadata: tuple[FakeMetadata, str], vm: Vm, retry_after: str, extra: dict[str, str]
) -> None:
    """The agent says when the config is expected: the VM waits that long (bounded), not GARO_PULL_INTERVAL.

    The interval is an hour here: a VM that ignored the Retry-After would not ask again before the test gives up.
    """
    fake, url = metadata

    class Agent(ScriptedAgent):
        script = [(404, retry_after, "no config held for this VM yet"), (200, None, JIT)]
        asks: list[str] = []

    server = ThreadingHTTPServer(("127.0.0.1", 0), Agent)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    fake.set_attr("garo-agent-url", f"http://127.0.0.1:{server.server_address[1]}")
    try:
        rc, out = finish(vm.start(url, GARO_PULL_INTERVAL="3600", **extra))
    finally:
        server.shutdown()
        server.server_close()
    assert rc == 0, out
    assert Agent.asks == ["/v1/jit-config", "/v1/jit-config"]
    assert vm.wait_for("listener-jit").strip() == JIT_SHA
    assert fake.states == ["waiting", "running", "done"]
