"""A new backend is a module, a registry entry and a harness: the contract suite itself never changes.

The toy cloud of ``tests/contract/toy_backend.py`` (its own error codes, mapped
onto ``Failure``) is registered from outside, by a pytest plugin, and the
unchanged suite runs in a fresh pytest process: every contract test runs for
it and passes. Registered without a harness, the same backend fails the suite.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from tests.contract import test_backend_contract

ROOT = Path(__file__).resolve().parents[2]
SUITE = Path(test_backend_contract.__file__).relative_to(ROOT)
CONTRACT_TESTS = sorted(name for name in vars(test_backend_contract) if name.startswith("test_"))


def _run_suite_with_toy(tmp_path: Path, **env: str) -> dict[str, str]:
    """Run the contract suite for the toy backend only; test name -> outcome."""
    report = tmp_path / "report.xml"
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.contract.toy_backend"]
        + [str(SUITE), "-k", "toy", f"--junitxml={report}"],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    outcomes: dict[str, str] = {}
    for case in ET.parse(report).iter("testcase"):
        name = case.attrib["name"]
        problems = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        outcomes[name] = problems[0] if problems else "passed"
    return outcomes


def test_a_registered_backend_with_its_own_failure_codes_passes_the_unchanged_suite(tmp_path: Path) -> None:
    outcomes = _run_suite_with_toy(tmp_path)
    assert len(CONTRACT_TESTS) >= 9
    assert outcomes == {f"{test}[toy]": "passed" for test in CONTRACT_TESTS}


def test_a_registered_backend_without_a_harness_fails_the_suite(tmp_path: Path) -> None:
    outcomes = _run_suite_with_toy(tmp_path, GARO_TOY_WITHOUT_HARNESS="1")
    assert outcomes and set(outcomes) == {f"{test}[toy]" for test in CONTRACT_TESTS}
    assert set(outcomes.values()) == {"error"}  # the fixture fails: not skipped, not passed
