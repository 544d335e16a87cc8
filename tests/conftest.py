"""Shared fixtures: the stand-ins from the brief live in tests/harness/ as pytest plugins.

Under ``make test`` (``GARO_NO_SKIP=1``) a skipped test fails: `make test` installs every
tool the tests use, so a test that cannot run there is a broken setup, never a pass.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import Any

import pytest

pytest_plugins: list[str] = [
    "tests.harness.github",
    "tests.harness.aws",
    "tests.harness.compute",
    "tests.harness.gce_identity",
    "tests.harness.pubsub",
    "tests.harness.webhooks",
]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("GARO_NO_SKIP") == "1" and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped under `make test`, where every check must run: {report.longrepr}"
