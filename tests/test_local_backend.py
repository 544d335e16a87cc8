"""The local fleet behind ``garo demo``: shared safely across processes, booted by simulated VMs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from scaler.backends.base import Failure, InstanceState
from scaler.backends.local import LocalBackend
from scaler.backends.local_vm import SimulatedVms

WRITER = """
import sys
from scaler.backends.local import LocalBackend
backend = LocalBackend(sys.argv[1])
for n in range(40):
    backend.create("g", [f"garo-{sys.argv[2]}-{n}"], {})
    backend.set_labels("g", f"garo-{sys.argv[2]}-{n}", {"writer": sys.argv[2]})
"""


def test_concurrent_processes_lose_no_update(tmp_path: Path) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), who]) for who in ("p", "q", "r")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    listed = LocalBackend(tmp_path).list("g")
    assert len(listed) == 120
    assert all(i.labels["writer"] == i.name.split("-")[1] for i in listed)


def test_a_second_process_sees_the_same_fleet(tmp_path: Path) -> None:
    now = [0.0]
    agent = LocalBackend(tmp_path, boot_delay=5, clock=lambda: now[0])
    vm_host = LocalBackend(tmp_path, boot_delay=5, clock=lambda: now[0])
    agent.create("g", ["garo-a"], {"garo-a": {"garo-jit-config": "aml0"}})
    assert vm_host.get_metadata("g", "garo-a") == {"garo-jit-config": "aml0"}
    now[0] = 6
    assert [i.state for i in vm_host.list("g")] == [InstanceState.RUNNING]


def test_simulated_vms_boot_runners_only_with_a_jit_config() -> None:
    now = [0.0]
    backend = LocalBackend(None, boot_delay=5, clock=lambda: now[0])
    backend.create("g", ["garo-job", "garo-warm"], {"garo-job": {"garo-jit-config": "aml0", "garo-job": "9"}})
    started: list[tuple[str, str, str]] = []
    vms = SimulatedVms(
        backend, on_boot=lambda group, name, meta: started.append((group, name, meta.get("garo-job", "")))
    )
    assert vms.step() == []  # still booting
    now[0] = 6
    assert vms.step() == [("g", "garo-job")]
    assert vms.step() == []  # a runner starts once
    assert started == [("g", "garo-job", "9")]
    labels = {i.name: i.labels.get("garo-state") for i in backend.list("g")}
    assert labels == {"garo-job": "running", "garo-warm": "waiting"}
    backend.set_metadata("g", "garo-warm", {"garo-jit-config": "d2FybQ=="})
    assert vms.step() == [("g", "garo-warm")]
    vms.finish("g", "garo-job")
    assert {i.name: i.labels["garo-state"] for i in backend.list("g")}["garo-job"] == "done"


def test_capacity_limit_fails_names_like_a_cloud() -> None:
    backend = LocalBackend(None, capacity={"g": 1})
    result = backend.create("g", ["garo-a", "garo-b"], {})
    assert result.created == ("garo-a",)
    assert list(result.failed) == ["garo-b"] and result.failed["garo-b"].reason is Failure.CAPACITY
