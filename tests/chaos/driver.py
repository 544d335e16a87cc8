"""A chaos run with real processes: does every job get a runner, and only one, while things break?

    .venv/bin/python -m tests.chaos.driver [--jobs 500] [--seed 1] [--replicas 3] [--duration 150]
        [--json report.json] [--write-docs docs/reliability.md]

Real processes: ``garo webhook`` (gunicorn, 2 workers) publishing to the
embedded SQLite bus, and ``--replicas`` ``garo agent`` processes for one
department sharing its subscription (:mod:`tests.chaos.processes`). Around
them, in this process: GitHub (the simulator over HTTP) and Compute (the
discovery-validated fake over HTTP), and VMs that boot runners and run jobs
(:mod:`tests.chaos.world`). ``--jobs`` jobs are queued over ``--duration``
seconds; their events reach the webhook signed, duplicated, reordered or
dropped (:mod:`tests.chaos.deliveries`), while the seed's fault schedule
(:mod:`tests.chaos.schedule`) kills agents and webhook workers, locks the bus
and makes Compute and GitHub fail. Then the faults stop and the run drains
until every job is done and every used VM is gone (or ``--drain`` runs out).

The report counts what a user would notice (:mod:`tests.chaos.report`): jobs
that never got a runner, VMs that outlived their job by more than one reconcile
interval, jobs that had two VMs, and webhook 5xx answers other than the 503s of
a bus outage. The exit status is 1 if any of them is not 0.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shlex
import signal
import sqlite3
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from scaler.config import load_stack_file
from scaler.config.routing import routing_document
from tests.agent.gcpkit import DEPARTMENT, GROUP, LABELS
from tests.chaos import processes
from tests.chaos.deliveries import Chaos, Deliveries
from tests.chaos.processes import BusBlocker, Managed
from tests.chaos.report import Report, build_report, table, write_docs
from tests.chaos.schedule import Fault, fault_schedule
from tests.chaos.world import World
from tests.harness.github import free_port
from tests.harness.webhooks import SECRET

BUS_TIMEOUT = 2.0  # the webhook's wait for a locked bus before it answers 503 (?timeout= in GARO_BUS)


@dataclass(frozen=True)
class Options:
    jobs: int = 500
    seed: int = 1
    replicas: int = 3
    duration: float = 150.0
    drain: float = 90.0
    interval: int = 5  # garo:reconcileInterval (its minimum)
    max_vms: int = 40
    warm: int = 2
    workers: int = 2
    chaos: Chaos = field(default_factory=Chaos)
    calm: bool = False  # no faults and no transport chaos: the baseline the chaos is compared with
    log_level: str = "WARNING"
    workdir: Path | None = None


def stack(options: Options, github_url: str) -> dict[str, Any]:
    group = {
        "name": GROUP,
        "labels": LABELS,
        "runnerGroupId": 1,
        "max": options.max_vms,
        "warmPool": {"size": options.warm},
        "timeToStart": 30,
        "timeToLive": 900,
    }
    config = {
        "gcp:project": "garo-test",
        "garo:kind": "department",
        "garo:cloud": "gcp",
        "garo:region": "europe-west4",
        "garo:department": DEPARTMENT,
        "garo:github": {"org": "octo-org", "apiUrl": github_url},
        "garo:network": {"cidr": "10.20.0.0/20"},
        "garo:reconcileInterval": options.interval,
        "garo:groups": [group],
    }
    return {"config": config}


def _eventually(condition: Callable[[], bool], what: str, managed: Sequence[Managed], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        for m in managed:
            if not m.alive():
                raise RuntimeError(f"{m.name} exited before {what}; see {m.log_path}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {what} after {timeout:.0f} s")
        time.sleep(0.2)


def _subscribed(bus_file: Path) -> bool:
    try:
        with sqlite3.connect(bus_file, timeout=1) as db:
            return any(name == f"agent-{DEPARTMENT}" for (name,) in db.execute("SELECT name FROM subscriptions"))
    except sqlite3.Error:
        return False


def _ready(url: str) -> bool:
    try:
        return bool(urllib.request.urlopen(url, timeout=2).status == 200)
    except (OSError, http.client.HTTPException):
        return False


class Run:
    """One chaos run; :meth:`execute` returns the report."""

    def __init__(self, options: Options, workdir: Path, log: Callable[[str], None]) -> None:
        self.options, self.workdir, self.say = options, workdir, log
        self.rng = random.Random(options.seed)
        self.faults = [] if options.calm else fault_schedule(options.seed, options.duration, options.replicas)
        self.done_faults: list[Fault] = []
        self.kills = {"agent": 0, "webhook-worker": 0}
        self.restart_at: dict[int, float] = {}
        self.deliveries: Deliveries | None = None
        self.world = World(self.rng, self._emit)

    def _emit(self, action: str, payload: dict[str, Any]) -> None:
        assert self.deliveries is not None
        self.deliveries.emit(action, payload)

    def execute(self) -> Report:
        o, world = self.options, self.world
        stack_file = self.workdir / f"Pulumi.{DEPARTMENT}.yaml"
        stack_file.write_text(yaml.safe_dump(stack(o, world.github.url)))
        routes = self.workdir / "routes.json"
        routes.write_text(json.dumps(routing_document([load_stack_file(stack_file)])))
        bus_file = self.workdir / "bus.db"
        bus_url = f"sqlite://{bus_file}?timeout={BUS_TIMEOUT:g}"
        port = free_port()
        chaos = Chaos(drop=0, duplicate=0, reorder_seconds=0) if o.calm else o.chaos
        self.deliveries = Deliveries(f"http://127.0.0.1:{port}/webhook", SECRET, self.rng, chaos)
        self.blocker = BusBlocker(bus_file)
        jit_ports = [free_port() for _ in range(o.replicas)]
        world.agent_urls = [f"http://127.0.0.1:{p}" for p in jit_ports]
        self.agents = [
            processes.agent(
                i, stack_file, bus_url, world.compute.base_url, self.workdir, o.log_level, jit_ports[i], world.certs_url
            )
            for i in range(o.replicas)
        ]
        self.webhook = processes.webhook(port, routes, bus_url, SECRET, o.workers, self.workdir)
        try:
            for agent in self.agents:
                agent.start()
            # The agents create their subscription on start; what is published before it exists reaches no one.
            _eventually(lambda: _subscribed(bus_file), "agent subscription", self.agents)
            self.webhook.start()
            _eventually(lambda: _ready(f"http://127.0.0.1:{port}/readyz"), "ready webhook", [self.webhook])
            self.say(f"started: webhook (pid {self.webhook.pid}), {o.replicas} agents; work dir {self.workdir}")
            started = time.monotonic()
            drained_at = self._loop(started)
            ended = time.monotonic()
        finally:
            self.blocker.wait()
            self.webhook.stop()
            for agent in self.agents:
                agent.stop()
            self.deliveries.close()
            world.close()
        return build_report(self, started, ended, drained_at)

    def _loop(self, started: float) -> float | None:
        o, world = self.options, self.world
        assert self.deliveries is not None
        arrivals = sorted(self.rng.uniform(0, o.duration) for _ in range(o.jobs))
        faults = list(self.faults)
        quiet_since: float | None = None
        last_note = 0.0
        while True:
            now = time.monotonic()
            t = now - started
            while arrivals and arrivals[0] <= t:
                arrivals.pop(0)
                world.queue_job()
            while faults and faults[0].at <= t:
                self._inject(faults.pop(0), now)
            self._keep_alive(now)
            world.tick()
            self.deliveries.pump()
            if t - last_note >= 10:
                last_note = t
                self.say(self._status(t))
            if not arrivals and not faults and t >= o.duration:
                settled = (
                    not world.unfinished()
                    and self.deliveries.pending() == 0
                    and not any(vm.ran is not None for vm in world.live_vms())
                )
                quiet_since = (quiet_since or now) if settled else None
                # Quiet for two reconcile intervals: whatever reconcile would still do, it has done.
                if quiet_since is not None and now - quiet_since >= 2 * o.interval:
                    return quiet_since
                if t > o.duration + o.drain:
                    self.say("drain time is up: counting what is left")
                    return None
            time.sleep(0.1)

    def _status(self, t: float) -> str:
        world = self.world
        assert self.deliveries is not None
        done = sum(1 for r in world.jobs.values() if r.completed_at is not None)
        return (
            f"{t:6.1f} s  jobs {len(world.jobs)} queued, {done} done; VMs live {len(world.live_vms())}; "
            f"deliveries pending {self.deliveries.pending()}"
        )

    def _inject(self, fault: Fault, now: float) -> None:
        self.done_faults.append(fault)
        if fault.kind == "kill-agent":
            agent = self.agents[fault.target]
            if agent.alive():
                agent.kill9()
                self.kills["agent"] += 1
                self.restart_at[fault.target] = now + fault.seconds
        elif fault.kind == "kill-webhook-worker":
            workers = processes.worker_pids(self.webhook.pid)
            if workers:
                os.kill(self.rng.choice(workers), signal.SIGKILL)
                self.kills["webhook-worker"] += 1
        elif fault.kind == "bus-outage":
            self.blocker.block(fault.seconds)
        elif fault.kind == "compute-errors":
            self.world.compute.fail_next(fault.status, fault.count, fault.where)
        elif fault.kind == "github-errors":
            self.world.github.fail_next(fault.status, fault.count, fault.where)

    def _keep_alive(self, now: float) -> None:
        """Restart killed agents when their time is up; a process that died on its own is a crash."""
        for i, agent in enumerate(self.agents):
            if agent.alive():
                continue
            if i in self.restart_at:
                if now >= self.restart_at[i]:
                    del self.restart_at[i]
                    agent.start()
            else:
                agent.crashes += 1
                self.say(f"{agent.name} exited on its own (code {agent.process and agent.process.returncode})")
                agent.start()
        if not self.webhook.alive():
            self.webhook.crashes += 1
            self.say("the webhook's gunicorn master exited; starting it again")
            self.webhook.start()


def run(options: Options, log: Callable[[str], None] = print) -> Report:
    if options.workdir is not None:
        options.workdir.mkdir(parents=True, exist_ok=True)
        return Run(options, options.workdir, log).execute()
    with tempfile.TemporaryDirectory(prefix="garo-chaos-") as tmp:
        return Run(options, Path(tmp), log).execute()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--duration", type=float, default=150.0, help="seconds over which the jobs are queued")
    parser.add_argument("--drain", type=float, default=90.0, help="at most this long after the load to heal")
    parser.add_argument("--calm", action="store_true", help="no faults, no dropped/duplicated/reordered events")
    parser.add_argument("--log-level", default="WARNING", help="the agents' log level")
    parser.add_argument("--workdir", type=Path, help="keep the processes' logs and the bus here")
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    parser.add_argument("--write-docs", type=Path, help="put the figures into this Markdown file (between markers)")
    args = parser.parse_args(argv)
    options = Options(
        jobs=args.jobs,
        seed=args.seed,
        replicas=args.replicas,
        duration=args.duration,
        drain=args.drain,
        calm=args.calm,
        log_level=args.log_level,
        workdir=args.workdir,
    )
    report = run(options)
    given = list(sys.argv[1:] if argv is None else argv)
    command = shlex.join(["make", "chaos"] if given == MAKE_ARGS else ["python", "-m", "tests.chaos.driver", *given])
    print(table(report))
    if args.json:
        args.json.write_text(json.dumps(report.as_dict(), indent=2, sort_keys=True) + "\n")
    if args.write_docs:
        write_docs(args.write_docs, report, command)
    return 0 if report.ok else 1


# What `make chaos` passes (the Makefile target names these arguments; the docs then name `make chaos`).
MAKE_ARGS = ["--jobs", "500", "--seed", "1", "--json", "chaos-report.json", "--write-docs", "docs/reliability.md"]

if __name__ == "__main__":
    sys.exit(main())
