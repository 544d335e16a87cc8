"""GitHub requests in `garo simulate`: counted as the real client makes them, and the busiest hour.

An App installation's hourly limit counts every request, a listing's every
page included, so the simulated GitHub counts pages the way the real
:class:`GitHubClient` requests them; the check is against that client paging
through the stateful GitHub simulator over HTTP.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from click.testing import CliRunner

from scaler.cli import main
from scaler.github.client import GitHubClient
from scaler.github.ratelimit import JitBudget
from scaler.github.sim import GitHubSim
from scaler.history.record import write_records
from scaler.simulate.clock import VirtualClock
from scaler.simulate.figures import most_within
from scaler.simulate.github import HistoryGitHub
from tests.harness.github_sim_http import GitHubSimServer
from tests.simkit import STACK_TEXT, job, latency_override


def _register(github: GitHubSim, count: int) -> None:
    for i in range(count):
        github.generate_jit_config(f"eng-small-{i + 1}", 1, ["self-hosted"])


@pytest.mark.parametrize("runners", [0, 99, 100, 101, 250])
def test_a_runner_listing_counts_the_pages_the_real_client_requests(runners: int) -> None:
    clock = VirtualClock(1_000.0)
    simulated = HistoryGitHub(clock, lambda a, p: None, random.Random(0), JitBudget(1_000, clock=clock), lambda j: None)
    _register(simulated, runners)
    before = len(simulated.request_times)
    assert len(simulated.list_runners()) == runners

    served = GitHubSimServer(GitHubSim(clock, lambda a, p: None, random.Random(0)))
    try:
        _register(served.sim, runners)
        listed = GitHubClient("octo-org", token="app", api_url=served.url).list_runners()
        assert len(listed) == runners
        assert len(simulated.request_times) - before == served.calls["list 200"] == max(1, -(-runners // 100))
    finally:
        served.close()


def test_the_busiest_hour_counts_requests_in_any_hour_not_per_clock_hour() -> None:
    # 3 requests in the last minutes of one clock hour and 3 in the first of the next: 6 in an hour.
    times = [100.0, 3_400.0, 3_500.0, 3_550.0, 3_700.0, 3_800.0, 3_900.0, 10_000.0]
    assert most_within(times, 3_600.0) == 6
    assert most_within([0.0, 3_600.0], 3_600.0) == 1  # an hour later is the next hour
    assert most_within([], 3_600.0) == 0


def test_the_table_and_json_give_the_requests_and_the_busiest_hour(tmp_path: Path) -> None:
    stack = tmp_path / "Pulumi.eng.yaml"
    stack.write_text(STACK_TEXT)
    history = tmp_path / "jobs.jsonl"
    with history.open("w") as out:  # 40 jobs in the first hour, 10 in the next three
        write_records(
            out, [job(80_000 + i, 90.0 * i if i < 40 else 3_600 + 1_080.0 * (i - 39), 60.0) for i in range(50)]
        )
    latency = latency_override(tmp_path, create=20.0, boot=10.0)
    runner = CliRunner()
    args = ["simulate", "--history", str(history), "--latency", str(latency), str(stack)]
    data = json.loads(runner.invoke(main, [*args, "--json"]).stdout)["configurations"][0]
    # A few runners at a time: every listing is one page, so each call is one request.
    assert data["github_requests"] == sum(data["github_calls"].values()) > 100
    assert data["github_calls"]["generate_jit_config"] == 50
    # The busy first hour has the most: more than 40 jobs' configs, fewer than all requests.
    assert 40 < data["github_peak_hour"] < data["github_requests"]
    table = runner.invoke(main, args).output
    assert f"GitHub requests (each page of a listing): {data['github_requests']}, at most " in table
    assert f"{data['github_peak_hour']} in an hour (an App installation's hourly limit: 5,000 and up)" in table
