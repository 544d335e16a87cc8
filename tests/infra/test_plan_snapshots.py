"""`garo plan` output for the examples is stable: any change shows up as a reviewed snapshot diff.

Regenerate after an intended change with ``GARO_UPDATE_SNAPSHOTS=1 pytest tests/infra``
and commit the snapshots with the change that caused them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.infra.conftest import ALL_STACKS, EXAMPLES, ROOT

SNAPSHOTS = Path(__file__).parent / "snapshots"
UPDATE = os.environ.get("GARO_UPDATE_SNAPSHOTS") == "1"


def check(path: Path, actual: str) -> None:
    if UPDATE or not path.exists():
        path.write_text(actual, encoding="utf-8")
        if not UPDATE:
            pytest.fail(f"{path.name} did not exist; written now, review and commit it")
        return
    expected = path.read_text(encoding="utf-8")
    assert actual == expected, f"garo plan changed for {path.name}; if intended, rerun with GARO_UPDATE_SNAPSHOTS=1"


@pytest.mark.parametrize("stack", ALL_STACKS)
def test_plan_table_and_json_match_snapshots(captures: dict[str, Any], stack: str) -> None:
    check(SNAPSHOTS / f"{stack}.txt", captures[stack]["table"])
    check(SNAPSHOTS / f"{stack}.json", captures[stack]["json"])


def test_cli_plan_prints_the_snapshot() -> None:
    """The real command, in its own process, prints exactly what the snapshot holds."""
    done = subprocess.run(
        [sys.executable, "-m", "scaler.cli", "plan", "--json", str(EXAMPLES / "Pulumi.research.yaml")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == (SNAPSHOTS / "research.json").read_text(encoding="utf-8")
