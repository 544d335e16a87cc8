"""The demo's story: a few jobs from queued to VM deleted, narrated, then a summary."""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry, start_http_server

from scaler import naming
from scaler.agent import Agent
from scaler.bus.sqlite import SqliteBus
from scaler.config.routing import routing_document
from scaler.demo.examples import Examples
from scaler.demo.fleet import Fleet, LocalFleet
from scaler.demo.parts import DEMO_JOBS, DEMO_STACK, DEPARTMENT, Narrator, Webhook, free_port, log_tail
from scaler.github.sim import GitHubSim, SimJob

TICK = 0.2
EXPLAIN = {
    "github_hosted": " (not a self-hosted job: GitHub runs it)",
    "unmatched": " (no runner group serves these labels: counted in garo_webhook_unmatched_jobs_total, logged)",
}
TIME_LIMIT = 90.0


@dataclass
class JobLog:
    job: SimJob
    group: str
    runs_for: float
    vm: str | None = None
    finished_at: float | None = None
    told_waiting: bool = False


@dataclass
class Demo:
    workdir: Path
    say: Callable[[str], None]
    fleet: Fleet = field(default_factory=LocalFleet)
    examples: Examples = field(default_factory=Examples.load)
    jobs: dict[int, JobLog] = field(default_factory=dict)
    seen_vms: dict[str, str] = field(default_factory=dict)  # name -> last state
    deleted: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.config = self.fleet.config
        routes = self.workdir / "routes.json"
        routes.write_text(json.dumps(routing_document([self.config]), indent=2))
        bus_path = self.workdir / "bus.sqlite3"
        # The agent's subscription exists before anything is published, as in Pub/Sub.
        self.subscriber = SqliteBus(bus_path, subscription=f"agent-{DEPARTMENT}", filter={"department": DEPARTMENT})
        self.webhook = Webhook.start(self.workdir, routes, bus_path)
        self.github = GitHubSim(time.time, self._deliver)
        registry = CollectorRegistry()
        self.agent = Agent(
            self.config,
            self.fleet.backend,
            self.github,
            self.subscriber,
            registry=registry,
            pull_timeout=0.05,
        )
        # The agent's metrics, as `garo agent --metrics-port` serves them: `garo status` reads them.
        port = int(os.environ.get("GARO_METRICS_PORT") or free_port())
        self.metrics_server, _ = start_http_server(port, addr="127.0.0.1", registry=registry)
        self.metrics_url = f"http://127.0.0.1:{port}/metrics"
        self.stack_file = self.workdir / f"Pulumi.{DEPARTMENT}.yaml"
        self.stack_file.write_text(yaml.safe_dump({"config": DEMO_STACK}, sort_keys=False))

    # ------------------------------------------------------------------ GitHub's side

    def _deliver(self, action: str, event: dict[str, Any]) -> None:
        """GitHub sends the event: a real example payload carrying this job's fields."""
        status, answer = self.webhook.send("workflow_job", self.examples.render(event))
        job = event["workflow_job"]
        where = f" on {job['runner_name']}" if job.get("runner_name") else ""
        log = self.jobs.get(job["id"])
        if (
            action == "in_progress"
            and log
            and job["runner_name"] != naming.instance_name(DEPARTMENT, log.group, job["id"])
        ):
            where += " (GitHub gives a job to any idle runner with its labels)"
        routed = f"{answer.get('department')}/{answer.get('group')}" if answer.get("group") else ""
        self.say(f"→ webhook  {action:<11} job {job['id']}{where}: {status} {answer.get('status')} {routed}")

    def _boot(self, name: str, jit: str) -> None:
        if self.github.boot(jit):
            self.say(f"  VM {name} booted; its runner registered with its single-use JIT config")

    def replay_examples(self) -> None:
        """GitHub's examples as they are: a ping, a GitHub-hosted job, and labels no group serves."""
        status, answer = self.webhook.send("ping", self.examples.ping)
        self.say(f"→ webhook  ping: {status} {answer.get('status')}")
        for example in (self.examples.workflow_job["queued"][0], self.examples.self_hosted("queued")):
            job = example["workflow_job"]
            status, answer = self.webhook.send("workflow_job", example)
            why = EXPLAIN.get(answer.get("status", ""), "")
            self.say(
                f"→ webhook  queued      job {job['id']} runs-on {job['labels']}: {status} {answer.get('status')}{why}"
            )

    # ------------------------------------------------------------------ the loop

    def queue_jobs(self) -> None:
        for group, repo, runs_for in DEMO_JOBS:
            job = self.github.queue_job(repo, self.config.group(group).labels)
            self.jobs[job.id] = JobLog(job, group, runs_for)

    def tick(self) -> None:
        self.agent.step()
        booted: list[tuple[str, str]] = []
        for line in self.fleet.step(lambda name, jit: booted.append((name, jit))):
            self.say(line)
        for name, jit in booted:
            self._boot(name, jit)
        self.github.assign()
        now = time.time()
        for log in self.jobs.values():
            job = log.job
            if job.status == "in_progress" and job.started_at and now - job.started_at >= log.runs_for:
                log.vm = job.runner.name if job.runner else None
                self.github.complete(job.id)
                log.finished_at = now
                if log.vm:
                    self.fleet.finish(log.group, log.vm)
        self._watch_fleet()
        self._explain_waiting(now)

    def _explain_waiting(self, now: float) -> None:
        """Say once why a queued job has no VM yet: its group is at its maximum."""
        for log in self.jobs.values():
            job = log.job
            wanted = naming.instance_name(DEPARTMENT, log.group, job.id)
            if job.status == "queued" and not log.told_waiting and wanted not in self.seen_vms:
                if now - job.created_at > 1.0:
                    log.told_waiting = True
                    limit = self.config.group(log.group).max
                    self.say(f"  job {job.id} waits: group {log.group} is at its max of {limit} VMs")

    def _watch_fleet(self) -> None:
        current = self.fleet.states()
        for name, state in current.items():
            if self.seen_vms.get(name) != state:
                self.say(f"  VM {name}: {state}")
        for name in set(self.seen_vms) - set(current):
            if name not in self.deleted:
                self.deleted.add(name)
                self.say(f"  VM {name}: deleted")
        self.seen_vms.update(current)

    def done(self) -> bool:
        return all(log.job.status == "completed" for log in self.jobs.values()) and not any(
            name not in self.deleted for name in self.seen_vms
        )

    def summary(self) -> list[str]:
        waits = [
            f"{job_id}: {log.job.started_at - log.job.created_at:.1f}s"
            for job_id, log in self.jobs.items()
            if log.job.started_at is not None
        ]
        github_calls = ", ".join(f"{k} {v}" for k, v in sorted(self.github.calls.items()))
        cloud_calls = ", ".join(f"{k} {v}" for k, v in sorted(self.fleet.calls().items()))
        outcomes = ", ".join(f"{k} ×{v}" for k, v in sorted(self.webhook.outcomes.items()))
        completed = sum(log.job.status == "completed" for log in self.jobs.values())
        return [
            f"jobs:            {completed}/{len(self.jobs)} completed",
            f"VMs:             {len(self.seen_vms)} created, {len(self.deleted)} deleted, "
            f"{len(self.seen_vms) - len(self.deleted)} left",
            f"wait per job:    {', '.join(waits)} (queued → running, boot delay {self.fleet.boot_delay:g} s)",
            f"webhook answers: {outcomes}",
            f"GitHub API:      {github_calls}",
            f"cloud API:       {cloud_calls}",
            *self.fleet.outro(),
        ]


def make_fleet(cloud: str) -> Fleet:
    """The local simulated fleet, or moto behind AwsBackend (``--cloud aws``)."""
    if cloud == "aws":
        from scaler.demo.aws import AwsFleet

        return AwsFleet()
    if cloud != "local":
        raise ValueError(f"unknown demo cloud {cloud!r} (local or aws)")
    return LocalFleet()


def run_demo(out: Callable[[str], None] = print, time_limit: float = TIME_LIMIT, cloud: str = "local") -> int:
    """Run the story; return 0 when every job ran and every VM was deleted."""
    narrator = Narrator(out)
    fleet = make_fleet(cloud)
    with tempfile.TemporaryDirectory(prefix="garo-demo-") as tmp:
        try:
            demo = Demo(Path(tmp), narrator.say, fleet=fleet)
        except BaseException:
            fleet.close()
            raise
        try:
            out(f"garo demo: webhook {demo.webhook.url} (gunicorn), bus {tmp}/bus.sqlite3, department {DEPARTMENT!r}")
            for group in demo.config.groups:
                out(f"  group {group.name}: runs-on {list(group.labels)}, max {group.max}")
            out(f"  agent metrics {demo.metrics_url}: garo status {demo.stack_file} --metrics-url {demo.metrics_url}")
            for line in fleet.intro():
                out(line)
            demo.replay_examples()
            demo.queue_jobs()
            deadline = time.monotonic() + time_limit
            while not demo.done() and time.monotonic() < deadline:
                demo.tick()
                time.sleep(TICK)
            out("")
            out("summary")
            for line in demo.summary():
                out(f"  {line}")
            if not demo.done():
                out(f"the demo did not converge within {time_limit:.0f}s; the webhook's log ends with:")
                out(log_tail(Path(tmp)))
                return 1
            return 0
        finally:
            demo.metrics_server.shutdown()
            demo.webhook.stop()
            demo.subscriber.close()
            fleet.close()
