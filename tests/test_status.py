"""`garo status` against the demo's running agent, and from the cloud when the agent is down."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from click.testing import CliRunner
from prometheus_client import CollectorRegistry, generate_latest

from scaler.agent.metrics import AgentMetrics
from scaler.backends.base import KEEP_KEY, InstanceState
from scaler.backends.local import LocalBackend
from scaler.cli import main
from scaler.demo.parts import DEMO_JOBS
from scaler.demo.scenario import Demo
from scaler.github.client import GitHubClient
from scaler.github.models import Runner
from scaler.status import FROM_CLOUD, from_cloud, from_metrics, render_table
from tests.agent.world import make_config


def test_status_reads_the_demos_running_agent() -> None:
    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="garo-status-") as tmp:
        demo = Demo(Path(tmp), lines.append)
        try:
            demo.queue_jobs()
            for _ in range(3):  # a few passes: jobs queued, VMs being created, none finished yet
                demo.tick()
            demo.agent.reconcile()  # VM counts are as of the last reconcile pass (status shows its age)
            listed = {g.name: list(demo.fleet.backend.list(g.name)) for g in demo.config.groups}
            result = CliRunner().invoke(
                main, ["status", str(demo.stack_file), "--metrics-url", demo.metrics_url, "--json"]
            )
            assert result.exit_code == 0, result.output
            status = json.loads(result.output)
            table = CliRunner().invoke(main, ["status", str(demo.stack_file), "--metrics-url", demo.metrics_url])
        finally:
            demo.metrics_server.shutdown()
            demo.webhook.stop()
            demo.subscriber.close()
    assert status["source"] == "agent" and status["department"] == demo.config.department
    groups = {g["group"]: g for g in status["groups"]}
    assert set(groups) == {"linux", "gpu"}
    for group, instances in listed.items():
        by_state: dict[str, int] = {}
        for inst in instances:
            by_state[inst.state.value] = by_state.get(inst.state.value, 0) + 1
        assert groups[group]["vms"] == by_state  # what the cloud lists, as the agent last saw it
        assert groups[group]["max"] == demo.config.group(group).max
    wanted = sum(1 for g, _, _ in DEMO_JOBS if g == "linux")
    linux = groups["linux"]
    assert linux["queued"] + sum(linux["vms"].values()) >= min(wanted, linux["max"])
    # The demo's GitHub is a simulator without the client's JIT budget: unknown, and said so.
    assert status["jit_budget_remaining"] is None
    assert table.exit_code == 0 and "from the agent's metrics" in table.output
    assert "JIT budget left: unknown" in table.output and "last reconcile:" in table.output


def test_the_jit_budget_comes_from_the_github_clients_own_metric() -> None:
    registry = CollectorRegistry()
    GitHubClient("octo-org", token="not-a-real-token", registry=registry)
    AgentMetrics(registry).set_vms("linux", {"running": 2})
    status = from_metrics(make_config(), generate_latest(registry).decode(), "http://agent/metrics", 0.0)
    assert status.jit_budget_remaining == 180.0
    assert next(g for g in status.groups if g.group == "linux").vms == {"running": 2}
    assert "JIT budget left: 180 this minute" in render_table(status)


def test_when_the_agent_is_down_status_comes_from_the_cloud_and_says_so(tmp_path: Path) -> None:
    config = make_config(**{"garo:keepFor": 7200})
    backend = LocalBackend(tmp_path, boot_delay=0.0, clock=lambda: 1_700_000_000.0)
    backend.create("linux", ["garo-eng-linux-1", "garo-eng-linux-2"], {})
    backend.set_metadata("linux", "garo-eng-linux-2", {KEEP_KEY: str(1_700_000_000 + 3600)})
    runners = [Runner(1, "garo-eng-linux-1", "online", True)]
    status = from_cloud(config, backend, lambda: runners, 1_700_000_100.0, "http://127.0.0.1:1/metrics: refused")
    linux = next(g for g in status.groups if g.group == "linux")
    assert status.source == FROM_CLOUD and linux.queued is None and status.jit_budget_remaining is None
    assert sum(linux.vms.values()) == 2 and linux.kept == 1
    assert linux.kept_vms == {"garo-eng-linux-2": "2023-11-14T23:13:20Z"}
    assert linux.runners == {"busy": 1}
    table = render_table(status)
    assert "AGENT UNREACHABLE" in table and "kept: linux/garo-eng-linux-2 until 2023-11-14T23:13:20Z" in table
    assert InstanceState.CREATING.value in table or InstanceState.RUNNING.value in table
