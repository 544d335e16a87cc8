"""The redelivery sweeper redelivers exactly the GUIDs that never got through, within --since."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jwt
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization

from scaler.cli import main
from scaler.github.auth import AppCredentials
from scaler.github.deliveries import DeliverySweeper, parse_duration
from scaler.github.http import GitHubHttp
from tests.harness.github import FakeClock, Recorded, Reply, ScriptedGitHub

DELIVERIES = r"/app/hook/deliveries"
ATTEMPTS = r"/app/hook/deliveries/(\d+)/attempts"


def delivery(id: int, guid: str, minutes_ago: float, code: int, now: datetime) -> dict:
    when = (now - timedelta(minutes=minutes_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")
    status = "OK" if 200 <= code < 300 else ("timed out" if code == 0 else f"Invalid HTTP Response: {code}")
    return {
        "id": id, "guid": guid, "delivered_at": when, "redelivery": id > 100, "duration": 0.3,
        "status": status, "status_code": code, "event": "workflow_job", "action": "queued",
        "installation_id": 42, "repository_id": 7,
    }  # fmt: skip


def script_log(server: ScriptedGitHub, now: datetime) -> None:
    """Two pages, newest first; the second reaches past a 2h window, so a third must never be asked for."""
    page1 = [
        delivery(101, "g1-failed", 10, 502, now),
        delivery(102, "g2-recovered", 20, 200, now),  # redelivery that worked
        delivery(103, "g3-failed-twice", 40, 500, now),
        delivery(4, "g4-timed-out", 45, 0, now),
        delivery(5, "g5-ok", 50, 200, now),
        delivery(106, "g7-ok-then-failed", 55, 503, now),
    ]
    page2 = [
        delivery(2, "g2-recovered", 60, 502, now),
        delivery(3, "g3-failed-twice", 70, 502, now),
        delivery(7, "g7-ok-then-failed", 80, 200, now),
        delivery(6, "g6-too-old", 180, 502, now),
    ]
    # GitHub's Link carries the cursor; the host is GitHub's, the sweeper must stay on its own base URL.
    link = {"Link": '<https://api.github.com/app/hook/deliveries?per_page=100&cursor=v1_2>; rel="next"'}
    server.script(
        "GET", DELIVERIES, Reply(200, page1, link), Reply(200, page2, link), Reply(500, {"message": "page 3"})
    )


def redelivered_ids(server: ScriptedGitHub) -> list[int]:
    return sorted(int(c.path.split("/")[4]) for c in server.calls("POST", ATTEMPTS))


def sweeper(server: ScriptedGitHub, key: str, clock: FakeClock | None = None) -> DeliverySweeper:
    return DeliverySweeper(AppCredentials(123, key, clock=clock), GitHubHttp(server.url, clock=clock or FakeClock()))


def test_redelivers_exactly_the_guids_that_never_succeeded(
    scripted_github: ScriptedGitHub, github_app_key: str
) -> None:
    now = datetime.now(UTC)
    script_log(scripted_github, now)
    scripted_github.script("POST", ATTEMPTS, Reply(202, {}))
    report = sweeper(scripted_github, github_app_key).sweep(now - timedelta(hours=2))

    assert redelivered_ids(scripted_github) == [4, 101, 103]  # latest attempt of g1, g3, g4
    assert sorted(d.guid for d in report.redelivered) == ["g1-failed", "g3-failed-twice", "g4-timed-out"]
    assert (report.skipped, report.failed, report.scanned) == (3, [], 9)  # g2, g5, g7; g6 is out of the window
    gets = scripted_github.calls("GET", DELIVERIES)
    assert [g.path for g in gets] == [
        "/app/hook/deliveries?per_page=100",
        "/app/hook/deliveries?per_page=100&cursor=v1_2",
    ]


def test_uses_the_app_jwt_not_an_installation_token(scripted_github: ScriptedGitHub, github_app_key: str) -> None:
    now = datetime.now(UTC)
    script_log(scripted_github, now)
    scripted_github.script("POST", ATTEMPTS, Reply(202, {}))
    sweeper(scripted_github, github_app_key).sweep(now - timedelta(hours=2))
    public = serialization.load_pem_private_key(github_app_key.encode(), None).public_key()
    for call in scripted_github.requests:
        claims = jwt.decode(call.headers["Authorization"].removeprefix("Bearer "), public, algorithms=["RS256"])
        assert claims["iss"] == "123"
    assert not scripted_github.calls("POST", r"/app/installations/.*")


def test_dry_run_changes_nothing(scripted_github: ScriptedGitHub, github_app_key: str) -> None:
    now = datetime.now(UTC)
    script_log(scripted_github, now)
    report = sweeper(scripted_github, github_app_key).sweep(now - timedelta(hours=2), dry_run=True)
    assert sorted(d.id for d in report.redelivered) == [4, 101, 103]
    assert scripted_github.calls("POST", ATTEMPTS) == [] and report.summary().startswith("would redeliver 3, skipped 3")


def test_a_failed_redelivery_is_reported_and_the_rest_continue(
    scripted_github: ScriptedGitHub, github_app_key: str
) -> None:
    now = datetime.now(UTC)
    script_log(scripted_github, now)

    def attempt(rec: Recorded) -> Reply:
        return Reply(422, {"message": "Delivery too old"}) if "/101/" in rec.path else Reply(202, {})

    scripted_github.script("POST", ATTEMPTS, attempt)
    report = sweeper(scripted_github, github_app_key).sweep(now - timedelta(hours=2))
    assert [d.id for d, _ in report.failed] == [101] and "422: Delivery too old" in report.failed[0][1]
    assert sorted(d.id for d in report.redelivered) == [4, 103]


def test_cli_reads_env_and_prints_report(scripted_github: ScriptedGitHub, github_app_key: str, tmp_path) -> None:
    script_log(scripted_github, datetime.now(UTC))
    scripted_github.script("POST", ATTEMPTS, Reply(202, {}))
    key_file = tmp_path / "app.pem"
    key_file.write_text(github_app_key)
    env = {
        "GARO_GITHUB_APP_ID": "123",
        "GARO_GITHUB_PRIVATE_KEY_FILE": str(key_file),
        "GARO_GITHUB_API_URL": scripted_github.url,
    }
    result = CliRunner().invoke(main, ["redeliver", "--since", "2h"], env=env)
    assert result.exit_code == 0, result.output
    assert "redelivered g1-failed (workflow_job.queued, last status 502)" in result.output
    assert "redelivered 3, skipped 3, failed 0" in result.output
    assert redelivered_ids(scripted_github) == [4, 101, 103]
    assert github_app_key.splitlines()[1] not in result.output


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--since", "2h"], {"GARO_GITHUB_APP_ID": ""}, "GARO_GITHUB_APP_ID must be set"),
        (["--since", "2h"], {"GARO_GITHUB_APP_ID": "1"}, "set GARO_GITHUB_PRIVATE_KEY"),
        (
            ["--since", "2h"],
            {"GARO_GITHUB_APP_ID": "1", "GARO_GITHUB_PRIVATE_KEY_FILE": "/nonexistent.pem"},
            "cannot read",
        ),
        (["--since", "two hours"], {"GARO_GITHUB_APP_ID": "1"}, "expected a duration like 30m"),
    ],
)
def test_cli_bad_settings_are_clear_errors(args: list[str], env: dict[str, str], message: str) -> None:
    env = {"GARO_GITHUB_PRIVATE_KEY": "", "GARO_GITHUB_PRIVATE_KEY_FILE": "", **env}
    result = CliRunner().invoke(main, ["redeliver", *args], env=env)
    assert result.exit_code == 1 and message in result.output


def test_parse_duration() -> None:
    assert [parse_duration(s) for s in ("90s", "30m", "2h", "3d")] == [
        timedelta(seconds=90), timedelta(minutes=30), timedelta(hours=2), timedelta(days=3)
    ]  # fmt: skip
    for bad in ("", "0h", "2", "h", "-1h", "1w"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_sweeper_requests_conform_to_githubs_openapi(prism_github: str, prism_session, github_app_key: str) -> None:
    # GitHub's own example for the attempts endpoint breaks its schema; ask Prism for a generated one.
    session = prism_session({("POST", r"/attempts$"): "dynamic=true"})
    sweeper = DeliverySweeper(AppCredentials(123, github_app_key), GitHubHttp(prism_github, session=session))
    report = sweeper.sweep(datetime(2019, 6, 1, tzinfo=UTC))  # the spec's example log: one GUID, delivered OK
    assert (report.scanned, report.skipped, report.redelivered) == (2, 1, [])
    sweeper.redeliver(12345678)  # 202 from Prism: a conforming request
    assert sweeper.sweep(datetime.now(UTC) - timedelta(hours=2)).scanned == 0
