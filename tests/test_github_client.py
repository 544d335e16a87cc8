"""GitHubClient: conforms to GitHub's OpenAPI (Prism), and retries / waits / gives up as GitHub asks."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from urllib.parse import urlsplit

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from prometheus_client import CollectorRegistry

from scaler.github.auth import AppCredentials
from scaler.github.client import GitHubClient
from scaler.github.models import GitHubApi, GitHubError
from scaler.github.ratelimit import JitBudget
from tests.harness.github import FakeClock, Reply, ScriptedGitHub, free_port

TOKEN = "ghs_InstallationTokenSecret0123456789"
ENCODED = "eyJKSVQtU0VDUkVULWNvbmZpZyI6ICJkbyBub3QgbG9nIG1lIn0="
RUNNERS = r"/orgs/acme/actions/runners"
JIT = r"/orgs/acme/actions/runners/generate-jitconfig"
ACCESS = r"/app/installations/42/access_tokens"


def jit_reply(name: str = "garo-x-1") -> Reply:
    return Reply(201, {"runner": {"id": 7, "name": name, "labels": []}, "encoded_jit_config": ENCODED})


def runners_page(start: int, count: int, total: int) -> dict:
    runners = [
        {"id": i, "name": f"r{i}", "status": "online", "busy": False, "labels": [{"name": "self-hosted"}]}
        for i in range(start, start + count)
    ]
    return {"total_count": total, "runners": runners}


def token_client(server: ScriptedGitHub, clock: FakeClock, **kwargs) -> GitHubClient:
    kwargs.setdefault("jitter", lambda: 1.0)
    return GitHubClient("acme", token="dev-token", api_url=server.url, clock=clock, **kwargs)


def app_client(server: ScriptedGitHub, clock: FakeClock, key: str, **kwargs) -> GitHubClient:
    creds = AppCredentials(123, key, clock=clock)
    return GitHubClient("acme", app=creds, installation_id=42, api_url=server.url, clock=clock, **kwargs)


def token_reply(clock: FakeClock, token: str = TOKEN, ttl: float = 3600) -> Reply:
    expires = datetime.fromtimestamp(clock.now + ttl, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return Reply(201, {"token": token, "expires_at": expires})


# --------------------------------------------------------------------------- against Prism


def test_app_client_conforms_to_githubs_openapi(prism_github: str, prism_session, github_app_key: str) -> None:
    registry = CollectorRegistry()
    # GitHub's own job example lacks `created_at`, so Prism (--errors) needs a schema-generated one.
    session = prism_session({("GET", r"/actions/jobs/\d+$"): "dynamic=true"})
    client = GitHubClient(
        "acme", app=AppCredentials(123, github_app_key), api_url=prism_github, registry=registry, session=session
    )
    api: GitHubApi = client
    jit = api.generate_jit_config("garo-dep-linux-1", 1, ["self-hosted", "linux", "dep"])
    runners = api.list_runners()
    api.delete_runner(runners[0].id)
    job = api.get_job("acme/app", 99)

    assert jit.runner_id > 0 and jit.encoded
    assert [r.name for r in runners] == ["linux_runner", "mac_runner"] and runners[0].labels[0] == "self-hosted"
    assert isinstance(job.id, int) and isinstance(job.status, str)

    def calls(endpoint: str, status: str) -> float:
        return registry.get_sample_value("garo_github_api_calls_total", {"endpoint": endpoint, "status": status}) or 0

    assert calls("/orgs/{org}/installation", "200") == 1  # installation looked up once
    assert calls("/app/installations/{installation_id}/access_tokens", "201") >= 1
    assert calls("/orgs/{org}/actions/runners/generate-jitconfig", "201") == 1
    assert calls("/orgs/{org}/actions/runners/{runner_id}", "204") == 1
    assert calls("/repos/{owner}/{repo}/actions/jobs/{job_id}", "200") == 1


def test_repo_level_client_conforms(prism_github: str) -> None:
    session = requests.Session()
    answered: list[tuple[str, str, int]] = []  # what Prism (validating against GitHub's spec) answered
    session.hooks["response"].append(
        lambda r, *args, **kwargs: answered.append((r.request.method, urlsplit(r.url).path, r.status_code))
    )
    client = GitHubClient("acme", token="dev", repo="acme/app", api_url=prism_github, session=session)
    assert client.generate_jit_config("garo-r-1", 1, ["self-hosted"]).encoded
    assert len(client.list_runners()) == 2
    answered.clear()
    client.delete_runner(5)
    # The runner is deregistered from the repository, not the organisation, and GitHub's spec accepts the call.
    assert answered == [("DELETE", "/repos/acme/app/actions/runners/5", 204)]


def test_spec_violation_surfaces_as_an_unretried_error(prism_github: str) -> None:
    clock = FakeClock()
    client = GitHubClient("acme", token="dev", api_url=prism_github, clock=clock)
    with pytest.raises(GitHubError) as err:
        client.generate_jit_config("garo-x-1", 1, [])  # GitHub requires at least one label
    assert err.value.status == 422 and "POST /orgs/acme/actions/runners/generate-jitconfig" in str(err.value)
    assert clock.sleeps == []


# --------------------------------------------------------------------------- retries, backoff, rate limits


def test_retries_5xx_with_exponential_backoff(scripted_github: ScriptedGitHub) -> None:
    clock = FakeClock()
    scripted_github.script("GET", RUNNERS, Reply(502), Reply(503), Reply(200, runners_page(1, 2, 2)))
    runners = token_client(scripted_github, clock).list_runners()
    assert [r.id for r in runners] == [1, 2]
    assert len(scripted_github.calls("GET", RUNNERS)) == 3
    assert clock.sleeps == [1.0, 2.0]


def test_gives_up_after_max_attempts_with_clear_error(scripted_github: ScriptedGitHub) -> None:
    clock = FakeClock()
    scripted_github.script("GET", RUNNERS, Reply(502, {"message": "Server Error"}))
    with pytest.raises(GitHubError) as err:
        token_client(scripted_github, clock, max_attempts=4).list_runners()
    assert len(scripted_github.calls("GET", RUNNERS)) == 4
    assert (
        err.value.status == 502 and str(err.value) == "GitHub GET /orgs/acme/actions/runners failed: 502: Server Error"
    )
    assert clock.sleeps == [1.0, 2.0, 4.0]


def test_connection_errors_are_retried_then_reported() -> None:
    clock = FakeClock()
    client = GitHubClient("acme", token="t", api_url=f"http://127.0.0.1:{free_port()}", clock=clock, max_attempts=3)
    with pytest.raises(GitHubError, match="ConnectionError after 3 attempts") as err:
        client.list_runners()
    assert err.value.status is None and len(clock.sleeps) == 2


def test_backoff_is_jittered_between_half_and_all_of_the_exponential_delay(scripted_github: ScriptedGitHub) -> None:
    clock = FakeClock()
    scripted_github.script("GET", RUNNERS, Reply(502), Reply(503), Reply(502), Reply(200, runners_page(1, 1, 1)))
    GitHubClient("acme", token="t", api_url=scripted_github.url, clock=clock).list_runners()  # default: random
    assert len(clock.sleeps) == 3
    for sleep, delay in zip(clock.sleeps, [1.0, 2.0, 4.0], strict=True):
        assert delay / 2 <= sleep < delay
    clock.sleeps.clear()
    scripted_github.script("POST", JIT, Reply(502), Reply(502), jit_reply())
    client = token_client(scripted_github, clock, jitter=iter([0.0, 0.5]).__next__)
    client.generate_jit_config("garo-x-1", 1, ["self-hosted"])
    assert clock.sleeps == [0.5, 1.5]


def test_retries_stop_at_the_overall_deadline(scripted_github: ScriptedGitHub) -> None:
    clock = FakeClock()
    scripted_github.script("GET", RUNNERS, Reply(502, {"message": "Server Error"}))
    with pytest.raises(GitHubError, match="gave up at the 10s deadline") as err:
        token_client(scripted_github, clock, max_attempts=10, deadline=10).list_runners()
    assert err.value.status == 502 and "Server Error" in str(err.value)
    assert clock.sleeps == [1.0, 2.0, 4.0]  # the next (8 s) would end past the deadline
    assert len(scripted_github.calls("GET", RUNNERS)) == 4


def test_a_rate_limit_wait_past_the_deadline_is_not_slept(scripted_github: ScriptedGitHub) -> None:
    clock = FakeClock()
    scripted_github.script("POST", JIT, Reply(429, {"message": "slow down"}, {"Retry-After": "120"}), jit_reply())
    with pytest.raises(GitHubError, match="gave up at the 60s deadline") as err:
        token_client(scripted_github, clock, deadline=60).generate_jit_config("garo-x-1", 1, ["self-hosted"])
    assert err.value.status == 429 and clock.sleeps == []
    assert len(scripted_github.calls("POST", JIT)) == 1


def test_primary_rate_limit_waits_until_reset(scripted_github: ScriptedGitHub) -> None:
    clock = FakeClock()
    reset = int(clock.now) + 30
    limited = Reply(
        403, {"message": "API rate limit exceeded"}, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)}
    )
    ok = Reply(200, runners_page(1, 1, 1), {"x-ratelimit-remaining": "4999", "x-ratelimit-limit": "5000"})
    scripted_github.script("GET", RUNNERS, limited, ok)
    registry = CollectorRegistry()
    client = token_client(scripted_github, clock, registry=registry)
    assert len(client.list_runners()) == 1
    assert clock.sleeps == [31.0]  # until reset, plus a second of slack
    assert (client.http.rate_limit.remaining, client.http.rate_limit.limit) == (4999, 5000)
    assert registry.get_sample_value("garo_github_ratelimit_remaining") == 4999


def test_secondary_rate_limit_honours_retry_after(scripted_github: ScriptedGitHub) -> None:
    clock = FakeClock()
    scripted_github.script(
        "POST", JIT, Reply(429, {"message": "secondary rate limit"}, {"Retry-After": "7"}), jit_reply()
    )
    assert token_client(scripted_github, clock).generate_jit_config("garo-x-1", 1, ["self-hosted"]).runner_id == 7
    assert clock.sleeps == [7.0]


def test_secondary_rate_limit_without_headers_waits_a_minute(scripted_github: ScriptedGitHub) -> None:
    clock = FakeClock()
    msg = {"message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."}
    scripted_github.script("POST", JIT, Reply(403, msg), jit_reply())
    token_client(scripted_github, clock).generate_jit_config("garo-x-1", 1, ["self-hosted"])
    assert clock.sleeps == [60.0]


def test_rate_limit_gives_up_after_cap(scripted_github: ScriptedGitHub) -> None:
    clock = FakeClock()
    scripted_github.script("GET", RUNNERS, Reply(429, {"message": "slow down"}, {"Retry-After": "5"}))
    with pytest.raises(GitHubError, match="rate limited") as err:
        token_client(scripted_github, clock, max_rate_limit_retries=2).list_runners()
    assert err.value.status == 429 and clock.sleeps == [5.0, 5.0]
    assert len(scripted_github.calls("GET", RUNNERS)) == 3


def test_rate_limit_wait_beyond_cap_raises_without_sleeping(scripted_github: ScriptedGitHub) -> None:
    clock = FakeClock()
    scripted_github.script("GET", RUNNERS, Reply(403, {"message": "rate"}, {"Retry-After": "3600"}))
    with pytest.raises(GitHubError, match="asked to wait 3600s"):
        token_client(scripted_github, clock, max_rate_limit_wait=600).list_runners()
    assert clock.sleeps == []


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
def test_client_errors_are_never_retried(scripted_github: ScriptedGitHub, status: int) -> None:
    clock = FakeClock()
    scripted_github.script("POST", JIT, Reply(status, {"message": "Validation Failed"}))
    with pytest.raises(GitHubError) as err:
        token_client(scripted_github, clock).generate_jit_config("garo-x-1", 1, ["self-hosted"])
    assert err.value.status == status and "Validation Failed" in str(err.value)
    assert len(scripted_github.calls("POST", JIT)) == 1 and clock.sleeps == []


def test_delete_of_a_runner_already_gone_is_not_an_error(scripted_github: ScriptedGitHub) -> None:
    scripted_github.script("DELETE", RUNNERS + r"/5", Reply(404, {"message": "Not Found"}))
    token_client(scripted_github, FakeClock()).delete_runner(5)
    assert len(scripted_github.calls("DELETE", RUNNERS + r"/5")) == 1


def test_list_runners_pages_by_100_and_never_follows_foreign_links(scripted_github: ScriptedGitHub) -> None:
    link = {"Link": '<https://evil.example/orgs/acme/actions/runners?page=2>; rel="next"'}
    scripted_github.script(
        "GET", RUNNERS, Reply(200, runners_page(0, 100, 150), link), Reply(200, runners_page(100, 50, 150))
    )
    runners = token_client(scripted_github, FakeClock()).list_runners()
    assert len({r.id for r in runners}) == 150
    assert [c.path for c in scripted_github.calls("GET", RUNNERS)] == [
        "/orgs/acme/actions/runners?per_page=100&page=1",
        "/orgs/acme/actions/runners?per_page=100&page=2",
    ]


# --------------------------------------------------------------------------- JIT budget


def test_jit_budget_paces_the_181st_post_in_a_minute(scripted_github: ScriptedGitHub) -> None:
    clock = FakeClock()
    scripted_github.script("POST", JIT, jit_reply())
    registry = CollectorRegistry()
    client = token_client(scripted_github, clock, registry=registry)
    for i in range(180):
        client.generate_jit_config(f"garo-x-{i}", 1, ["self-hosted"])
        clock.advance(0.1)
    assert clock.sleeps == [] and client.jit_budget.remaining() == 0
    assert registry.get_sample_value("garo_github_jit_budget_remaining") == 0
    client.generate_jit_config("garo-x-180", 1, ["self-hosted"])
    assert clock.sleeps == [pytest.approx(60 - 18.0)]  # until the first POST is a minute old
    assert len(scripted_github.calls("POST", JIT)) == 181


def test_jit_budget_is_thread_safe() -> None:
    budget = JitBudget(per_minute=200, clock=FakeClock())
    granted: list[float] = []

    def worker() -> None:
        for _ in range(25):
            granted.append(budget.try_acquire())

    threads = [threading.Thread(target=worker) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert granted.count(0.0) == 200 and budget.remaining() == 0  # exactly the budget, never more


# --------------------------------------------------------------------------- App auth


def test_app_flow_signs_jwt_and_caches_installation_token(scripted_github: ScriptedGitHub, github_app_key: str) -> None:
    clock = FakeClock()
    scripted_github.script("POST", ACCESS, token_reply(clock, TOKEN), token_reply(clock, TOKEN + "2"))
    scripted_github.script("POST", JIT, jit_reply())
    client = app_client(scripted_github, clock, github_app_key)
    client.generate_jit_config("garo-x-1", 1, ["self-hosted"])
    client.generate_jit_config("garo-x-2", 1, ["self-hosted"])
    assert len(scripted_github.calls("POST", ACCESS)) == 1  # cached

    public = serialization.load_pem_private_key(github_app_key.encode(), None).public_key()
    app_jwt = scripted_github.calls("POST", ACCESS)[0].headers["Authorization"].removeprefix("Bearer ")
    claims = jwt.decode(app_jwt, public, algorithms=["RS256"], options={"verify_exp": False, "verify_iat": False})
    assert claims["iss"] == "123" and claims["iat"] == int(clock.now) - 60 and claims["exp"] - claims["iat"] == 600
    assert {c.headers["Authorization"] for c in scripted_github.calls("POST", JIT)} == {f"Bearer {TOKEN}"}

    clock.advance(3600 - 300)  # five minutes before expiry: refresh
    client.generate_jit_config("garo-x-3", 1, ["self-hosted"])
    assert len(scripted_github.calls("POST", ACCESS)) == 2
    assert scripted_github.calls("POST", JIT)[-1].headers["Authorization"] == f"Bearer {TOKEN}2"


def test_revoked_installation_token_is_replaced_once(scripted_github: ScriptedGitHub, github_app_key: str) -> None:
    clock = FakeClock()
    scripted_github.script("POST", ACCESS, token_reply(clock, TOKEN), token_reply(clock, TOKEN + "new"))
    scripted_github.script(
        "GET", RUNNERS, Reply(401, {"message": "Bad credentials"}), Reply(200, runners_page(1, 1, 1))
    )
    assert len(app_client(scripted_github, clock, github_app_key).list_runners()) == 1
    assert [c.headers["Authorization"] for c in scripted_github.calls("GET", RUNNERS)] == [
        f"Bearer {TOKEN}",
        f"Bearer {TOKEN}new",
    ]


# --------------------------------------------------------------------------- secrets


def test_secrets_never_in_reprs_errors_or_logs(
    scripted_github: ScriptedGitHub, github_app_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    clock = FakeClock()
    scripted_github.script("POST", ACCESS, token_reply(clock))
    scripted_github.script(
        "POST", JIT, jit_reply(), Reply(500, {"message": "boom"}), Reply(422, {"message": "Invalid"})
    )
    scripted_github.script("GET", RUNNERS, Reply(429, {"message": "slow"}, {"Retry-After": "1"}))
    client = app_client(scripted_github, clock, github_app_key, max_rate_limit_retries=1)
    jit = client.generate_jit_config("garo-x-1", 1, ["self-hosted"])
    errors = []
    for call in (lambda: client.generate_jit_config("garo-x-2", 1, ["self-hosted"]), client.list_runners):
        with pytest.raises(GitHubError) as err:
            call()
        errors.append(err.value)
    with pytest.raises(ValueError) as bad_key:
        AppCredentials(1, "-----BEGIN PRIVATE KEY-----\nnot-a-key-SECRETPART\n-----END PRIVATE KEY-----").jwt()

    key_body = github_app_key.splitlines()[1]
    texts = [
        repr(client),
        repr(jit),
        str(jit),
        repr(client._tokens),
        repr(client.http),
        caplog.text,
        str(bad_key.value),
    ]
    texts += [str(e) for e in errors] + [repr(e) for e in errors]
    for text in texts:
        for secret in (TOKEN, ENCODED, key_body, "SECRETPART"):
            assert secret not in text
    assert "Bearer" not in caplog.text


def test_runner_group_listing_and_rate_limit_conform(prism_github: str) -> None:
    session = requests.Session()
    answered: list[tuple[str, str, int]] = []
    session.hooks["response"].append(
        lambda r, *args, **kwargs: answered.append((r.request.method, urlsplit(r.url).path, r.status_code))
    )
    client = GitHubClient("acme", token="dev", api_url=prism_github, session=session, runner_groups=(3, 9))
    runners = client.list_runners()
    # One listing per runner group of the department, each accepted by GitHub's spec; never the org's list.
    assert answered == [
        ("GET", "/orgs/acme/actions/runner-groups/3/runners", 200),
        ("GET", "/orgs/acme/actions/runner-groups/9/runners", 200),
    ]
    assert runners and all(r.name for r in runners)
    answered.clear()
    remaining = client.hourly_remaining()  # no headers seen yet: asks GET /rate_limit, which costs nothing
    assert answered == [("GET", "/rate_limit", 200)]
    assert isinstance(remaining, int)


def test_priority_runner_group_calls_conform(prism_github: str) -> None:
    """The class groups' sync speaks GitHub's spec: list groups and repositories, create, patch, set repositories."""
    from scaler.agent.classes import class_rules
    from scaler.config import parse_stack_config
    from scaler.github.runner_groups import sync_class_groups

    session = requests.Session()
    answered: list[tuple[str, str, int]] = []
    session.hooks["response"].append(
        lambda r, *args, **kwargs: answered.append((r.request.method, urlsplit(r.url).path, r.status_code))
    )
    client = GitHubClient("acme", token="dev", api_url=prism_github, session=session, runner_groups=(3,))
    group_id = client.create_runner_group("garo-eng-deploy", [1296269], ["acme/app/.github/workflows/deploy.yml@main"])
    client.update_runner_group(group_id, "garo-eng-deploy", [1296269, 42], [])
    groups = client.list_runner_groups()
    repos = client.repository_ids()
    assert groups and all(g.id and g.name for g in groups)
    assert repos and all("/" in name for name in repos)
    assert answered == [
        ("POST", "/orgs/acme/actions/runner-groups", 201),
        ("PATCH", f"/orgs/acme/actions/runner-groups/{group_id}", 200),
        ("PUT", f"/orgs/acme/actions/runner-groups/{group_id}/repositories", 204),
        ("GET", "/orgs/acme/actions/runner-groups", 200),
        ("GET", "/orgs/acme/repos", 200),
    ]
    # The whole sync: Prism's example groups are not ours, so it creates each class's group, then lists its runners.
    config = parse_stack_config(
        {
            "garo:kind": "department", "garo:cloud": "local", "garo:region": "local", "garo:department": "eng",
            "garo:github": {"org": "acme"}, "garo:network": {"cidr": "10.20.0.0/20"},
            "garo:groups": [{"name": "linux", "labels": ["self-hosted", "eng"], "max": 2}],
            "garo:priorities": [{"class": "deploy", "repositories": ["octocat/*"]}],
            "garo:priorityRunnerGroups": True,
        }
    )  # fmt: skip
    answered.clear()
    synced = sync_class_groups(client, config, class_rules(config))
    assert [a[:2] for a in answered] == [
        ("GET", "/orgs/acme/repos"),
        ("GET", "/orgs/acme/actions/runner-groups"),
        ("POST", "/orgs/acme/actions/runner-groups"),
    ]
    assert all(status < 300 for *_, status in answered)
    assert client.runner_groups == (3, synced.ids["deploy"])
