"""The redelivery sweeper redelivers exactly the GUIDs that never got through, within --since."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import jwt
import pytest
import requests
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from werkzeug.serving import make_server

from scaler.bus.base import BusUnavailable
from scaler.bus.sqlite import SqliteBus
from scaler.cli import main
from scaler.github.auth import AppCredentials
from scaler.github.deliveries import SUMMARY, DeliverySweeper, parse_duration
from scaler.github.http import GitHubHttp
from tests.harness.github import GITHUB_SPEC, FakeClock, Recorded, Reply, ScriptedGitHub
from tests.harness.webhooks import SECRET, Example, WebhookIntake, make_intake, sign
from tests.infra.conftest import EXAMPLES, of_type, run_captures

DELIVERIES = r"/app/hook/deliveries"


@pytest.fixture(autouse=True)
def _restore_sweeper_logger() -> Iterator[None]:
    """`garo redeliver` points its logger at the CLI's stderr; give the next test the logger it had."""
    logger = logging.getLogger("scaler.github.deliveries")
    handlers, propagate, level = list(logger.handlers), logger.propagate, logger.level
    yield
    logger.handlers[:], logger.propagate = handlers, propagate
    logger.setLevel(level)


ATTEMPTS = r"/app/hook/deliveries/(\d+)/attempts"


def delivery(id: int, guid: str, minutes_ago: float, code: int, now: datetime) -> dict[str, Any]:
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
        delivery(1, "g1-failed", 10, 502, now),
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

    assert redelivered_ids(scripted_github) == [1, 4]  # g1, g4; g3 already has a (failed) redelivery
    assert sorted(d.guid for d in report.redelivered) == ["g1-failed", "g4-timed-out"]
    assert (report.skipped, report.failed, report.scanned) == (3, [], 9)  # g2, g5, g7; g6 is out of the window
    assert report.already_redelivered == 1 and report.outcome == "ok"


def test_again_also_redelivers_guids_whose_redelivery_failed(
    scripted_github: ScriptedGitHub, github_app_key: str
) -> None:
    now = datetime.now(UTC)
    script_log(scripted_github, now)
    scripted_github.script("POST", ATTEMPTS, Reply(202, {}))
    report = sweeper(scripted_github, github_app_key).sweep(now - timedelta(hours=2), again=True)
    assert redelivered_ids(scripted_github) == [1, 4, 103]  # the latest attempt of g3: its failed redelivery
    assert report.already_redelivered == 0
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
    assert sorted(d.id for d in report.redelivered) == [1, 4]
    assert scripted_github.calls("POST", ATTEMPTS) == [] and report.summary().startswith("would redeliver 2, skipped 3")


def test_a_failed_redelivery_is_reported_and_the_rest_continue(
    scripted_github: ScriptedGitHub, github_app_key: str
) -> None:
    now = datetime.now(UTC)
    script_log(scripted_github, now)

    def attempt(rec: Recorded) -> Reply:
        return Reply(422, {"message": "Delivery too old"}) if "/1/" in rec.path else Reply(202, {})

    scripted_github.script("POST", ATTEMPTS, attempt)
    report = sweeper(scripted_github, github_app_key).sweep(now - timedelta(hours=2))
    assert [d.id for d, _ in report.failed] == [1] and "422: Delivery too old" in report.failed[0][1]
    assert sorted(d.id for d in report.redelivered) == [4] and report.outcome == "failed"


def test_cli_reads_env_and_prints_report(scripted_github: ScriptedGitHub, github_app_key: str, tmp_path: Path) -> None:
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
    assert "redelivered 2, skipped 3, already redelivered 1, failed 0" in result.output
    assert redelivered_ids(scripted_github) == [1, 4]
    assert github_app_key.splitlines()[1] not in result.output
    summary = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")][-1]
    assert summary["message"] == SUMMARY and summary["outcome"] == "ok"
    assert (summary["redelivered"], summary["skipped"], summary["already_redelivered"]) == (2, 3, 1)


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


def test_sweeper_requests_conform_to_githubs_openapi(
    prism_github: str, prism_session: Callable[..., Any], github_app_key: str
) -> None:
    # GitHub's own example for the attempts endpoint breaks its schema; ask Prism for a generated one.
    session = prism_session({("POST", r"/attempts$"): "dynamic=true"})
    sweeper = DeliverySweeper(AppCredentials(123, github_app_key), GitHubHttp(prism_github, session=session))
    report = sweeper.sweep(datetime(2019, 6, 1, tzinfo=UTC))  # the spec's example log: one GUID, delivered OK
    assert (report.scanned, report.skipped, report.redelivered) == (2, 1, [])
    sweeper.redeliver(12345678)  # 202 from Prism: a conforming request
    assert sweeper.sweep(datetime.now(UTC) - timedelta(hours=2)).scanned == 0


# --------------------------------------------------------------------------- GitHub's hookshot, in small


class FlakyBus:
    """The webhook's bus, which can be down: the webhook then answers 503 and /readyz says so.

    ``now`` is the webhook's clock: after a failed publish it stays out of
    rotation for a while (scaler/webhook/app.py), so a test that brings the bus
    back lets that time pass with :meth:`restore`.
    """

    def __init__(self, bus: SqliteBus) -> None:
        self.bus, self.down = bus, False
        self.now = [1_700_000_000.0]

    def restore(self) -> None:
        self.down = False
        self.now[0] += 60  # past the webhook's not-ready window after a failed publish

    def publish(self, data: bytes, attributes: Mapping[str, str]) -> str:
        if self.down:
            raise BusUnavailable("bus down (test)")
        return self.bus.publish(data, attributes)

    def ready(self) -> bool:
        return not self.down


class HookLog:
    """GitHub's side of App webhooks: posts events to the webhook, keeps the delivery log, redelivers.

    Serves ``GET /app/hook/deliveries`` (newest first, one page) and ``POST
    .../{id}/attempts`` (posts the event again and logs a new attempt with
    ``redelivery: true``, as GitHub does) on a scripted server. Every request
    the sweeper sends is first checked by Prism against GitHub's OpenAPI
    description, and every record served against its ``hook-delivery-item``
    schema, so the stand-in cannot drift from GitHub's contract.
    """

    def __init__(self, server: ScriptedGitHub, webhook_url: str, prism: str | None = None) -> None:
        self.webhook_url, self.prism = webhook_url, prism
        self.attempts: list[dict[str, Any]] = []
        self.bodies: dict[str, bytes] = {}
        self.posts: list[int] = []  # delivery ids the sweeper asked to redeliver
        self._lock = threading.Lock()
        spec = json.loads(GITHUB_SPEC.read_text(encoding="utf-8"))
        self.item = jsonschema.Draft7Validator(spec["components"]["schemas"]["hook-delivery-item"])
        server.script("GET", DELIVERIES, self._list)
        server.script("POST", ATTEMPTS, self._redeliver)

    def deliver(self, body: bytes, guid: str, redelivery: bool = False) -> int:
        headers = {
            "X-GitHub-Event": "workflow_job",
            "X-GitHub-Delivery": guid,
            "X-Hub-Signature-256": sign(body, SECRET),
            "Content-Type": "application/json",
        }
        code = requests.post(f"{self.webhook_url}/webhook", data=body, headers=headers, timeout=10).status_code
        with self._lock:
            self.bodies[guid] = body
            attempt = {
                "id": len(self.attempts) + 1, "guid": guid, "redelivery": redelivery, "duration": 0.01,
                "delivered_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "status": "OK" if 200 <= code < 300 else f"Invalid HTTP Response: {code}", "status_code": code,
                "event": "workflow_job", "action": json.loads(body)["action"], "installation_id": 42,
                "repository_id": 7, "throttled_at": None,
            }  # fmt: skip
            self.attempts.append(attempt)
        return code

    def _conforms(self, rec: Recorded, prefer: str | None = None) -> None:
        if self.prism is None:
            return
        headers = {k: v for k, v in rec.headers.items() if k.lower() in ("authorization", "accept", "user-agent")}
        headers |= {"Prefer": prefer} if prefer else {}
        answer = requests.request(rec.method, f"{self.prism}{rec.path}", headers=headers, timeout=30)
        assert answer.status_code < 400, f"{rec.method} {rec.path} breaks GitHub's OpenAPI: {answer.text[:300]}"

    def _list(self, rec: Recorded) -> Reply:
        self._conforms(rec)
        with self._lock:
            page = list(reversed(self.attempts))
        for item in page:
            errors = [e.message for e in self.item.iter_errors(item) if "None is not of type" not in e.message]
            assert not errors, errors
        return Reply(200, page)

    def _redeliver(self, rec: Recorded) -> Reply:
        self._conforms(rec, "dynamic=true")  # GitHub's own example for this endpoint breaks its schema
        delivery_id = int(rec.path.split("/")[4])
        with self._lock:
            self.posts.append(delivery_id)
            guid = next(a["guid"] for a in self.attempts if a["id"] == delivery_id)
        self.deliver(self.bodies[guid], guid, redelivery=True)  # GitHub answers 202 and delivers
        return Reply(202, {})


@pytest.fixture
def hookshot(
    tmp_path: Path, scripted_github: ScriptedGitHub, webhook_examples: tuple[Example, ...]
) -> Iterator[tuple[HookLog, FlakyBus, WebhookIntake, list[bytes]]]:
    """The webhook served over HTTP on a bus that can fail, GitHub's delivery log, and queued jobs to send."""
    flaky = FlakyBus(SqliteBus(tmp_path / "bus.db"))
    intake = make_intake(tmp_path, publisher=flaky, clock=lambda: flaky.now[0])
    server = make_server("127.0.0.1", 0, intake.app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    queued = [e.body for e in webhook_examples if e.action == "queued" and b'"self-hosted"' in e.body]
    assert queued, "the octokit examples have a self-hosted queued job"
    try:
        yield HookLog(scripted_github, f"http://127.0.0.1:{server.server_port}"), flaky, intake, queued
    finally:
        server.shutdown()
        intake.tap.close()


def test_sweeps_over_overlapping_windows_redeliver_each_guid_once(
    hookshot: tuple[HookLog, FlakyBus, WebhookIntake, list[bytes]], scripted_github: ScriptedGitHub, github_app_key: str
) -> None:
    hooks, bus, intake, queued = hookshot
    bus.down = True
    assert [hooks.deliver(queued[0], f"guid-{i}") for i in range(3)] == [503, 503, 503]
    sweep = sweeper(scripted_github, github_app_key)  # no readiness probe: redeliveries fail while the bus is down
    first = sweep.sweep(datetime.now(UTC) - timedelta(days=3))
    assert (len(first.redelivered), first.already_redelivered) == (3, 0)
    for _ in range(2):  # the next runs, every 5 minutes, over the same 3 days: GitHub's log says "done"
        later = sweep.sweep(datetime.now(UTC) - timedelta(days=3))
        assert (later.redelivered, later.already_redelivered, later.outcome) == ([], 3, "ok")
    assert sorted(hooks.posts) == [1, 2, 3]  # each GUID's original attempt, once
    assert intake.published() == []
    bus.restore()
    again = sweep.sweep(datetime.now(UTC) - timedelta(days=3), again=True)  # an operator after the outage
    assert (len(again.redelivered), again.failed) == (3, [])  # each GUID redelivered and answered 2xx
    # The three deliveries carry one signed event: it reaches the bus once (the webhook de-duplicates on it).
    assert [m.attributes["action"] for m in intake.published()] == ["queued"]


def test_a_sweep_spends_nothing_while_the_webhook_cannot_publish(
    hookshot: tuple[HookLog, FlakyBus, WebhookIntake, list[bytes]], scripted_github: ScriptedGitHub, github_app_key: str
) -> None:
    hooks, bus, intake, queued = hookshot
    bus.down = True
    assert hooks.deliver(queued[0], "lost-guid") == 503
    sweep = DeliverySweeper(
        AppCredentials(123, github_app_key), GitHubHttp(scripted_github.url), webhook_url=hooks.webhook_url
    )
    waiting = sweep.sweep(datetime.now(UTC) - timedelta(days=3))
    assert (waiting.outcome, waiting.redelivered, hooks.posts) == ("webhook_not_ready", [], [])
    bus.restore()
    recovered = sweep.sweep(datetime.now(UTC) - timedelta(days=3))
    assert (recovered.outcome, [d.guid for d in recovered.redelivered]) == ("ok", ["lost-guid"])
    assert [m.attributes["action"] for m in intake.published()] == ["queued"]
    assert sweep.sweep(datetime.now(UTC) - timedelta(days=3)).skipped == 1  # delivered now: nothing more to do


def test_a_lost_queued_delivery_is_recovered_by_the_scheduled_job(
    hookshot: tuple[HookLog, FlakyBus, WebhookIntake, list[bytes]],
    scripted_github: ScriptedGitHub,
    prism_github: str,
    github_app_key: str,
) -> None:
    """What the hub stack schedules every 5 minutes, run as declared: its args, its env, its secret."""
    hooks, bus, intake, queued = hookshot
    hooks.prism = prism_github  # every request the job sends must be one GitHub's OpenAPI accepts
    hub = run_captures([EXAMPLES / "Pulumi.hub.yaml"])["hub"]
    (job,) = [r["inputs"] for r in of_type(hub, "cloudrunv2/job:Job")]
    container = job["template"]["template"]["containers"][0]
    env: dict[str, str] = {}
    for item in container["envs"]:
        if "valueSource" in item:  # the App key, from the one secret the job may read
            assert item["valueSource"]["secretKeyRef"]["secret"].endswith("/secrets/garo-webhook-app-key")
            env[item["name"]] = github_app_key
        else:
            env[item["name"]] = item["value"]
    assert env["GARO_WEBHOOK_URL"].startswith("https://") and env["GARO_GITHUB_APP_ID"] == "100001"
    env |= {"GARO_GITHUB_API_URL": scripted_github.url, "GARO_WEBHOOK_URL": hooks.webhook_url}

    bus.down = True  # the webhook answers 503: GitHub logs a failed delivery and never retries it
    assert hooks.deliver(queued[0], "lost-queued") == 503
    assert intake.published() == []
    bus.restore()
    result = CliRunner().invoke(main, container["args"], env=env)
    assert result.exit_code == 0, result.output
    (message,) = intake.published()
    assert message.attributes["action"] == "queued" and json.loads(message.data)["workflow_job"]["id"]
    assert [a["redelivery"] for a in hooks.attempts] == [False, True]
    again = CliRunner().invoke(main, container["args"], env=env)  # the next scheduled run
    assert again.exit_code == 0 and "redelivered 0, skipped 1" in again.output and hooks.posts == [1]
