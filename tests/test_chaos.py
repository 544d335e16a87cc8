"""The short chaos run (``make chaos`` is the long one): real processes, real faults, nothing lost.

``garo webhook`` under gunicorn, the embedded bus and three ``garo agent``
processes face GitHub (the simulator over HTTP) and Compute (the
discovery-validated fake over HTTP) while agents and webhook workers are
``kill -9``ed, the bus is locked and Compute and GitHub fail, and events are
dropped, duplicated and reordered (tests/chaos/driver.py). One run serves every
test below; each checks one promise a user would notice.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos.driver import Options, run
from tests.chaos.report import Report
from tests.harness.webhooks import EXAMPLES

SHORT = Options(jobs=60, seed=7, replicas=3, duration=30.0, drain=45.0)


@pytest.fixture(scope="module")
def chaos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Report]:
    if not EXAMPLES.exists():
        pytest.skip("the webhook payloads come from @octokit/webhooks-examples: run `npm ci`")
    workdir: Path = tmp_path_factory.mktemp("chaos")
    lines: list[str] = []
    report = run(Options(**{**SHORT.__dict__, "workdir": workdir}), log=lines.append)
    print("\n".join(lines))
    yield report


def test_the_run_had_its_faults(chaos: Report) -> None:
    assert set(chaos.faults) == {"kill-agent", "kill-webhook-worker", "bus-outage", "compute-errors", "github-errors"}
    assert chaos.kills["agent"] and chaos.kills["webhook-worker"]
    assert sum(chaos.dropped.values()) and chaos.duplicated and chaos.stolen


def test_every_job_gets_a_runner(chaos: Report) -> None:
    assert chaos.jobs == SHORT.jobs
    assert chaos.lost == []


def test_no_job_gets_two_vms(chaos: Report) -> None:
    assert chaos.doubled == []


def test_the_webhook_answers_no_5xx_but_bus_outage_503s_and_publishes_every_event(chaos: Report) -> None:
    assert chaos.unexpected_5xx == {}
    assert chaos.not_published == {}


def test_no_vm_outlives_its_job_by_more_than_a_reconcile_interval(chaos: Report) -> None:
    assert chaos.leaked == []
