"""Runner listings are conditional GETs: an unchanged page costs nothing against the hourly limit.

The agent lists its runners on most batches. GitHub answers a request whose
``If-None-Match`` names the page's current ``ETag`` with ``304 Not Modified``
and does not count it against the installation's hourly limit; the client must
then use the page it already holds, and ask in full for a page that changed.
Checked against the stateful GitHub simulator over HTTP, which keeps each
credential's hourly count as GitHub does.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from scaler.github.client import GitHubClient
from scaler.github.sim import GitHubSim
from scaler.simulate.clock import VirtualClock
from tests.harness.github_sim_http import GitHubSimServer


@pytest.fixture
def served() -> Iterator[GitHubSimServer]:
    server = GitHubSimServer(GitHubSim(VirtualClock(1_000.0), lambda a, p: None, random.Random(0)))
    yield server
    server.close()


def _register(github: GitHubSim, count: int, start: int = 0) -> None:
    for i in range(start, start + count):
        github.generate_jit_config(f"eng-small-{i + 1}", 1, ["self-hosted"])


def _used(served: GitHubSimServer) -> int:
    return served.used["app"][1]


def test_an_unchanged_listing_is_answered_304_and_spends_nothing(served: GitHubSimServer) -> None:
    _register(served.sim, 3)
    client = GitHubClient("octo-org", token="app", api_url=served.url)
    first = client.list_runners()
    used = _used(served)
    again = client.list_runners()
    assert again == first and len(again) == 3
    assert served.calls.get("list 304") == 1
    assert _used(served) == used  # the hourly limit did not move
    sample = {"endpoint": "/orgs/{org}/actions/runners", "status": "304"}
    assert client.metrics.registry.get_sample_value("garo_github_api_calls_total", sample) == 1  # operators see it


def test_a_change_is_seen_at_once(served: GitHubSimServer) -> None:
    _register(served.sim, 2)
    client = GitHubClient("octo-org", token="app", api_url=served.url)
    client.list_runners()
    _register(served.sim, 1, start=2)
    served.sim.boot(served.sim.runners[min(served.sim.runners)].secret)  # a runner comes online: its row changes
    listed = {r.name: r for r in client.list_runners()}
    assert set(listed) == {"eng-small-1", "eng-small-2", "eng-small-3"}
    assert sum(r.status == "online" for r in listed.values()) == 1
    assert served.calls.get("list 304") is None and served.calls["list 200"] == 2


def test_only_the_pages_that_changed_are_sent_again(served: GitHubSimServer) -> None:
    _register(served.sim, 250)  # pages of 100, 100 and 50
    client = GitHubClient("octo-org", token="app", api_url=served.url)
    assert len(client.list_runners()) == 250
    newest = served.sim.runners[max(served.sim.runners)]
    served.sim.boot(newest.secret)  # the newest runner, on the last page, comes online
    used = _used(served)
    listed = client.list_runners()
    assert len(listed) == 250 and listed[-1].name == newest.name and listed[-1].status == "online"
    assert served.calls["list 304"] == 2  # pages 1 and 2
    assert _used(served) == used + 1  # page 3 alone was paid for
    # A runner more changes every page (each carries total_count): all are paid for again.
    _register(served.sim, 1, start=250)
    assert len(client.list_runners()) == 251
    assert served.calls["list 304"] == 2 and _used(served) == used + 4


def test_a_listing_that_shrinks_and_grows_again_is_read_afresh(served: GitHubSimServer) -> None:
    _register(served.sim, 150)
    client = GitHubClient("octo-org", token="app", api_url=served.url)
    client.list_runners()
    for runner_id in sorted(served.sim.runners)[100:]:
        served.sim.delete_runner(runner_id)
    assert len(client.list_runners()) == 100
    _register(served.sim, 20, start=500)
    names = [r.name for r in client.list_runners()]
    assert len(names) == 120 and names[-1] == "eng-small-520"  # not the old page 2's runners
    assert "eng-small-150" not in names
