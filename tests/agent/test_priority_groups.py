"""Exact priorities on shared labels: a runner group per class (scaler/agent/classes.py).

GitHub (the sim, tests/agent/world.py) hands a runner to any queued job whose
labels it has *and whose repository the runner's group admits*. Without class
groups a background job may take the VM made for a deploy job; with them it
cannot, so at max 2 the deploy jobs start first, and nobody waits forever.
"""

from __future__ import annotations

from typing import Any

import pytest

from scaler import naming
from scaler.agent.classes import class_rules, runner_group_for, stranded
from scaler.agent.state import Book
from scaler.config import ConfigError
from scaler.github.runner_groups import ClassGroups, sync_class_groups
from scaler.github.sim import GitHubSim, SimJob
from tests.agent.world import DEPARTMENT, World, make_config

DEPLOY_REPO, APP_REPO, NIGHTLY_REPO = "octo-org/deploy-prod", "octo-org/app", "octo-org/nightly"
CLASSES: dict[str, Any] = {
    "garo:priorities": [
        {"class": "deploy", "repositories": ["octo-org/deploy-*"]},
        {"class": "background", "repositories": [NIGHTLY_REPO]},
    ],
    "garo:priorityAging": 600,
}
# Ten jobs queued at once, sharing every label: three deploys among background and normal ones.
ARRIVALS = [NIGHTLY_REPO, APP_REPO, NIGHTLY_REPO, DEPLOY_REPO, APP_REPO, NIGHTLY_REPO, DEPLOY_REPO, APP_REPO]
ARRIVALS += [NIGHTLY_REPO, DEPLOY_REPO]
RUNS_FOR = 300.0


def contend(world: World, seconds: float = 4 * 3600) -> tuple[list[SimJob], list[int]]:
    """Queue ARRIVALS at once; each job runs RUNS_FOR seconds on whatever runner GitHub hands it."""
    labels = world.config.group("linux").labels
    jobs = [world.github.queue_job(repo, labels) for repo in ARRIVALS]
    for job in jobs:
        world.group_of_job[job.id] = "linux"
    started: list[int] = []
    end = world.now + seconds
    while world.now < end and any(j.status != "completed" for j in jobs):
        world.step()
        world.advance(10)
        for job in jobs:
            if job.status == "in_progress" and job.id not in started:
                started.append(job.id)
            if job.status == "in_progress" and job.started_at is not None and world.now - job.started_at >= RUNS_FOR:
                world.finish(job)
    return jobs, started


def test_with_class_groups_deploy_jobs_start_first_and_nobody_waits_forever() -> None:
    world = World(seed=3)
    world.configure(max_linux=2, **CLASSES, **{"garo:priorityRunnerGroups": True})
    jobs, started = contend(world)
    deploys = [j.id for j in jobs if j.repo == DEPLOY_REPO]
    assert [j for j in started if j in deploys] == deploys  # first come first served within the class
    # No other job starts before the last deploy job does: the deploys took the first three slots.
    last_deploy = max(j.started_at or 0 for j in jobs if j.repo == DEPLOY_REPO)
    assert all((j.started_at or 0) >= last_deploy for j in jobs if j.repo != DEPLOY_REPO)
    assert all(j.status == "completed" for j in jobs)  # every job ran: none waits forever
    # Every VM made for a deploy job ran that class's job: GitHub could hand it to no other.
    for job in jobs:
        made_for = naming.job_of(DEPARTMENT, "linux", job.ran_on[0]) if job.ran_on else None
        if made_for is not None and made_for in deploys:
            assert job.repo == DEPLOY_REPO, f"{job.repo} took {job.ran_on[0]}"
    groups = {g.name: g for g in world.github.groups.values()}
    assert sorted(groups) == [f"garo-{DEPARTMENT}-background", f"garo-{DEPARTMENT}-deploy"]
    assert groups[f"garo-{DEPARTMENT}-deploy"].repositories == {world.github.repositories[DEPLOY_REPO]}


@pytest.mark.parametrize("seed", [3])
def test_without_class_groups_a_lower_class_job_takes_a_deploy_vm(seed: int) -> None:
    """The same contention on the department's one group: GitHub hands deploy VMs to other jobs."""
    world = World(seed=seed)
    world.configure(max_linux=2, **CLASSES)
    jobs, started = contend(world)
    last_deploy = max(j.started_at or 0 for j in jobs if j.repo == DEPLOY_REPO)
    assert any((j.started_at or 0) < last_deploy for j in jobs if j.repo != DEPLOY_REPO)
    assert all(j.status == "completed" for j in jobs)


def test_sync_is_idempotent_and_sets_exactly_the_rules_repositories() -> None:
    config = make_config(**CLASSES, **{"garo:priorityRunnerGroups": True})
    github = GitHubSim(lambda: 0.0, lambda action, payload: None)
    for repo in (DEPLOY_REPO, "octo-org/Deploy-Web", APP_REPO, NIGHTLY_REPO):
        github.queue_job(repo, ["self-hosted"])
    first = sync_class_groups(github, config, class_rules(config))
    second = sync_class_groups(github, config, class_rules(config))
    assert first == second and len(github.groups) == 2
    assert github.calls["create_runner_group"] == 2 and github.calls["update_runner_group"] == 2
    deploy = github.groups[first.ids["deploy"]]
    # Globs match without regard to case, as GitHub's repository names do.
    assert deploy.repositories == {github.repositories[DEPLOY_REPO], github.repositories["octo-org/Deploy-Web"]}
    # Someone widened the group by hand: the next sync narrows it again.
    github.update_runner_group(deploy.id, deploy.name, [*deploy.repositories, github.repositories[APP_REPO]], [])
    sync_class_groups(github, config, class_rules(config))
    assert github.groups[deploy.id].repositories == deploy.repositories


def test_an_aged_background_job_registers_in_the_group_its_repository_can_use() -> None:
    """Aging lifts a background job's rank, never its runner group: the JIT goes where its repository is admitted."""
    config = make_config(**CLASSES, **{"garo:priorityRunnerGroups": True})
    synced = ClassGroups(
        {"deploy": 11, "background": 12}, {"deploy": frozenset({DEPLOY_REPO}), "background": frozenset({NIGHTLY_REPO})}
    )
    book = Book()
    now = 1_700_000_000.0
    for job, repo in ((1, NIGHTLY_REPO), (2, DEPLOY_REPO), (3, APP_REPO), (4, "octo-org/deploy-new")):
        book.observe_job(job, "linux", repo, "queued", now - 5000)  # waited long: all aged to deploy rank
    vm = f"garo-{DEPARTMENT}-linux-"
    assert runner_group_for(config, synced, "linux", book, vm + "1") == 12
    assert runner_group_for(config, synced, "linux", book, vm + "2") == 11
    assert runner_group_for(config, synced, "linux", book, vm + "3") == 1  # normal: the department's group
    # A repository created since the last sync is not admitted yet: the department's group, never a dead end.
    assert runner_group_for(config, synced, "linux", book, vm + "4") == 1
    assert runner_group_for(config, synced, "linux", book, f"garo-{DEPARTMENT}-linux-w-0") == 1  # warm


def test_a_deploy_vm_whose_job_went_elsewhere_is_no_capacity_for_other_classes() -> None:
    config = make_config(**CLASSES, **{"garo:priorityRunnerGroups": True})
    book = Book()
    now = 1_700_000_000.0
    vm = f"garo-{DEPARTMENT}-linux-2"
    book.observe_job(2, "linux", DEPLOY_REPO, "in_progress", now, runner_name="elsewhere")
    book.observe_job(5, "linux", NIGHTLY_REPO, "queued", now)
    assert stranded(config, book, "linux", [vm]) == {vm}
    book.observe_job(6, "linux", "octo-org/deploy-web", "queued", now)
    assert stranded(config, book, "linux", [vm]) == frozenset()  # a deploy job can take it


@pytest.mark.parametrize(
    "extra,message",
    [
        ({"garo:priorityRunnerGroups": True}, r"needs garo:priorities"),
        (
            {"garo:priorities": [{"class": "deploy", "workflows": ["Deploy"]}], "garo:priorityRunnerGroups": True},
            r"no class other than normal names repositories",
        ),
        (
            {"garo:priorities": [{"class": "deploy", "repositories": ["a/b"], "workflowRefs": ["deploy.yml"]}]},
            r"workflowRefs\[0\]",
        ),
        (
            {
                "garo:priorities": [
                    {"class": "deploy", "workflows": ["D"], "workflowRefs": ["a/b/.github/workflows/d.yml@main"]}
                ]
            },
            r"needs 'repositories'",
        ),
    ],
)
def test_validate_refuses_runner_groups_it_cannot_build(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_config(**extra)


def test_a_repository_scoped_department_cannot_have_class_groups() -> None:
    github: dict[str, Any] = {
        "org": "octo-org",
        "runnerApp": {"appId": 1, "privateKey": {"env": "K"}, "scope": "repository", "repositories": [APP_REPO]},
    }
    with pytest.raises(ConfigError, match=r"organisation-level"):
        make_config(**{**CLASSES, "garo:priorityRunnerGroups": True, "garo:github": github})


def test_several_runner_apps_sync_once_and_all_list_the_class_groups(scripted_github: Any) -> None:
    """With more than one runner App, one App manages the groups and every App lists their runners."""
    from scaler.github.apps import RunnerApps, RunnerAppSlot
    from scaler.github.client import GitHubClient
    from tests.harness.github import Reply

    config = make_config(**CLASSES, **{"garo:priorityRunnerGroups": True})
    groups = "/orgs/octo-org/actions/runner-groups"
    scripted_github.script("GET", "/orgs/octo-org/repos", Reply(200, [{"id": 7, "full_name": DEPLOY_REPO}]))
    listed = {"total_count": 1, "runner_groups": [{"id": 41, "name": f"garo-{DEPARTMENT}-deploy"}]}
    scripted_github.script("GET", groups, Reply(200, listed))
    scripted_github.script("PATCH", groups + "/41", Reply(200, {"id": 41}))
    scripted_github.script("PUT", groups + "/41/repositories", Reply(204))
    scripted_github.script("POST", groups, Reply(201, {"id": 42, "name": f"garo-{DEPARTMENT}-background"}))
    clients = [GitHubClient("octo-org", token="t", api_url=scripted_github.url, runner_groups=(1,)) for _ in range(2)]
    apps = RunnerApps([RunnerAppSlot(f"app-{i}", c, c.jit_budget) for i, c in enumerate(clients)])
    synced = sync_class_groups(apps, config, class_rules(config))
    assert synced.ids == {"deploy": 41, "background": 42}
    assert synced.admitted["deploy"] == {DEPLOY_REPO}
    assert [c.runner_groups for c in clients] == [(1, 41, 42), (1, 41, 42)]
    assert scripted_github.calls("PUT", groups + "/41/repositories")[0].body == {"selected_repository_ids": [7]}
    (created,) = scripted_github.calls("POST", groups)
    assert created.body["selected_repository_ids"] == [] and created.body["visibility"] == "selected"
    assert len(scripted_github.calls("GET", "/orgs/octo-org/repos")) == 1  # one App asked, once
