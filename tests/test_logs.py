"""One log format for the webhook and the agent: the same keys, and never an exception's message."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scaler import logs
from tests.harness.webhooks import SECRET, load_examples, make_intake

JOB = next(e for e in load_examples() if e.action == "queued" and "k8s" in e.payload["workflow_job"]["labels"])
BASE_KEYS = {"time", "severity", "logger", "message"}


def lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


@pytest.fixture
def agent_logging() -> Iterator[None]:
    """The root logger as ``garo agent`` configures it; pytest's own handlers come back afterwards."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    yield
    root.handlers[:], root.level = saved[0], saved[1]


def test_a_view_that_raises_logs_one_json_line_without_its_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    intake = make_intake(tmp_path, testing=False)  # what a client sees in production

    @intake.app.get("/boom")
    def boom() -> str:
        raise RuntimeError(f"could not use token {SECRET}")

    response = intake.client.get("/boom", headers={"X-GitHub-Delivery": "d-500"})
    assert (response.status_code, response.json) == (
        500,
        {"status": "internal_error", "error": "Internal Server Error"},
    )
    err = capsys.readouterr().err
    assert SECRET not in err and "could not use" not in err
    (line,) = lines(err)  # one line, JSON: not Flask's plain-text traceback next to it
    assert line["severity"] == "ERROR" and line["logger"] == "scaler.webhook"
    assert (line["outcome"], line["status"], line["delivery"]) == ("internal_error", 500, "d-500")
    assert line["exception"] == "RuntimeError"
    assert line["stack"][-1].endswith(" boom")  # where it was raised, for on-call
    intake.tap.close()


def test_the_harness_surfaces_view_bugs_as_tracebacks(tmp_path: Path) -> None:
    intake = make_intake(tmp_path)

    @intake.app.get("/boom")
    def boom() -> str:
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError, match="a bug"):
        intake.client.get("/boom")
    intake.tap.close()


def test_agent_exception_logs_carry_the_type_only(agent_logging: None, capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("INFO")  # what `garo agent` does first
    log = logging.getLogger("scaler.agent.loop")
    try:
        raise ValueError(f"Bearer {SECRET}")
    except ValueError:
        log.exception("agent iteration failed", extra={"error": "ValueError"})
    err = capsys.readouterr().err
    assert SECRET not in err and "Bearer" not in err
    (line,) = lines(err)
    assert line["exception"] == "ValueError" and line["message"] == "agent iteration failed"


def test_both_services_write_the_same_keys(
    agent_logging: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    intake = make_intake(tmp_path)
    assert intake.post(JOB.body).status_code == 202
    (webhook,) = lines(capsys.readouterr().err)

    logs.configure("INFO")
    job_id = webhook["job_id"]
    logging.getLogger("scaler.agent.loop").info(
        "job started", extra={"job_id": job_id, "group": "k8s", "jit_config": "c2VjcmV0", "github_token": "ghs_x"}
    )
    (agent,) = lines(capsys.readouterr().err)

    assert BASE_KEYS <= webhook.keys() and BASE_KEYS <= agent.keys()
    assert (webhook["severity"], agent["severity"]) == ("INFO", "INFO")
    assert webhook["time"].endswith("Z") and agent["time"].endswith("Z")
    # extra fields sit at the top level in both, under the same names
    assert agent["job_id"] == webhook["job_id"] and agent["group"] == webhook["group"] == "k8s"
    # the secret-name filter: a field named like a secret never reaches the line
    assert "jit_config" not in agent and "github_token" not in agent
    intake.tap.close()
