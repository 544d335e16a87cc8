"""The portal's versioned outputs: every example stack honours docs/portal-outputs.schema.json."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from infra.stack import PORTAL_VERSION
from scaler.cli import main
from tests.infra.conftest import ALL_STACKS


@pytest.mark.parametrize("stack", ALL_STACKS)
def test_garo_outputs_accepts_each_stack_portal(captures: dict[str, Any], stack: str, tmp_path: Path) -> None:
    saved = tmp_path / f"{stack}.json"
    saved.write_text(json.dumps(captures[stack]["raw_outputs"]))  # as `pulumi stack output --json` prints it
    result = CliRunner().invoke(main, ["outputs", "--from-file", str(saved)])
    assert result.exit_code == 0, result.stderr
    portal = json.loads(result.stdout)
    assert portal["version"] == PORTAL_VERSION == 2 and portal["costLabels"]["garo-department"] == (
        "hub" if stack == "hub" else stack
    )


def test_garo_outputs_names_each_broken_field(captures: dict[str, Any], tmp_path: Path) -> None:
    portal = copy.deepcopy(captures["payments"]["raw_outputs"]["portal"])
    portal["groups"][1]["max"] = -1
    del portal["subscription"]
    saved = tmp_path / "broken.json"
    saved.write_text(json.dumps({"portal": portal}))
    result = CliRunner().invoke(main, ["outputs", "--from-file", str(saved)])
    assert result.exit_code == 1
    assert "portal.groups.1.max: -1 is less than the minimum of 1" in result.stderr
    assert "'subscription' is a required property" in result.stderr


def test_garo_outputs_without_cli_or_file_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    result = CliRunner().invoke(main, ["outputs", "payments"])
    assert result.exit_code == 1
    assert "--from-file" in result.stderr
