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


def _register(github: GitHubSim, per_group: dict[int, int]) -> None:
    for group, count in per_group.items():
        for i in range(count):
            github.generate_jit_config(f"eng-small-{group}-{i + 1}", group, ["self-hosted"])


@pytest.mark.parametrize(
    ("per_group", "listed"),
    [
        ({1: 0}, ()),  # a repository's runners (or no groups): one listing of them all
        ({1: 99}, ()),
        ({1: 100}, ()),
        ({1: 101}, ()),
        ({1: 250}, ()),
        ({1: 250}, (1,)),  # the organisation's runner group 1, as the agent lists it by default
        ({1: 150, 7: 30, 9: 5}, (1, 7)),  # two groups listed one by one; group 9 is not the department's
        ({1: 0, 7: 0}, (1, 7)),  # an empty group still costs its request
    ],
)
def test_a_runner_listing_counts_the_requests_the_real_client_makes(
    per_group: dict[int, int], listed: tuple[int, ...]
) -> None:
    clock = VirtualClock(1_000.0)
    budget = JitBudget(1_000, clock=clock)
    simulated = HistoryGitHub(clock, lambda a, p: None, random.Random(0), budget, lambda j: None, listed_groups=listed)
    _register(simulated, per_group)
    before = len(simulated.request_times)
    simulated.list_runners()

    served = GitHubSimServer(GitHubSim(clock, lambda a, p: None, random.Random(0)))
    try:
        _register(served.sim, per_group)
        listed_by_client = GitHubClient(
            "octo-org", token="app", api_url=served.url, runner_groups=listed
        ).list_runners()
        wanted = sum(per_group[g] for g in listed) if listed else sum(per_group.values())
        assert len(listed_by_client) == wanted
        requests = sum(n for key, n in served.calls.items() if key.endswith("list 200"))
        assert requests >= 1 and len(simulated.request_times) - before == requests
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
    # Some listings repeat an unchanged one (the agent lists on most steps); without them the busiest hour is lower.
    assert 0 < data["github_unchanged"] < data["github_calls"]["list_runners"]
    assert data["github_peak_hour"] - data["github_unchanged"] <= data["github_peak_hour_paid"]
    assert data["github_peak_hour_paid"] < data["github_peak_hour"]
    table = runner.invoke(main, args).output
    assert f"GitHub requests (each page of a listing): {data['github_requests']}, at most " in table
    assert f"{data['github_peak_hour']} in an hour (an App installation's hourly limit: 5,000 and up)" in table
    assert (
        f"{data['github_unchanged']} of them repeat an unchanged listing, free when GitHub answers them 304: then at "
        f"most {data['github_peak_hour_paid']} in an hour"
    ) in table


@pytest.mark.parametrize("runners", [3, 250])
def test_unchanged_listings_are_the_ones_the_real_client_gets_304_for(runners: int) -> None:
    """The same changes in both worlds; the simulation counts a listing unchanged only when every page is.

    One page: exactly the real client's 304s. Several: a runner that changes state changes only its
    page on GitHub, so the real client gets more 304s than the simulation counts (it errs on the paid side).
    """
    clock = VirtualClock(1_000.0)
    simulated = HistoryGitHub(clock, lambda a, p: None, random.Random(0), JitBudget(1_000, clock=clock), lambda j: None)
    served = GitHubSimServer(GitHubSim(clock, lambda a, p: None, random.Random(0)))
    try:
        client = GitHubClient("octo-org", token="app", api_url=served.url)
        worlds: list[GitHubSim] = [simulated, served.sim]
        for world in worlds:
            _register(world, {1: runners})

        def both(change: str) -> None:
            for world in worlds:
                if change == "boot":  # the oldest runner comes online: one row changes
                    world.boot(world.runners[min(world.runners)].secret)
                elif change == "register":  # a runner more: total_count changes on every page
                    world.generate_jit_config(f"eng-small-x{len(world.runners)}", 1, ["self-hosted"])
            simulated.list_runners()
            client.list_runners()

        for change in ("none", "none", "boot", "none", "register", "none", "none"):
            both(change)
        real_304 = served.calls.get("list 304", 0)
        pages = 1 if runners < 100 else 3
        # Four of the seven listings followed no change: every page of them is unchanged.
        assert len(simulated.unchanged_times) == 4 * pages
        if runners <= 100:
            assert real_304 == 4
        else:  # after the boot, pages 2 and 3 were unchanged on GitHub too
            assert real_304 == 4 * pages + 2
    finally:
        served.close()
