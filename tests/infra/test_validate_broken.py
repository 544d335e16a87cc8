"""`garo validate` (and `garo plan`) reject every broken stack file with its key path and message.

Each file under tests/infra/broken/ states the line it must produce in its
first line (``# expect: <key path>: <message>``); each directory under
broken/across/ is a set of stack files only wrong together.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from scaler.cli import main

BROKEN = Path(__file__).parent / "broken"
SINGLE = sorted(BROKEN.glob("*.yaml"))
ACROSS = sorted(p for p in (BROKEN / "across").iterdir() if p.is_dir())


def expectation(path: Path) -> str:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name} must start with '# expect: <key path>: <message>'"
    return first.removeprefix("# expect: ")


@pytest.mark.parametrize("path", SINGLE, ids=[p.stem for p in SINGLE])
def test_broken_stack_file_is_rejected_with_key_path(path: Path) -> None:
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 1
    expected = expectation(path)
    assert expected.split(": ", 1)[0].startswith("garo:")
    assert f"  - {expected}" in result.stderr, result.stderr
    assert f"ok: {path}" not in result.output


@pytest.mark.parametrize("directory", ACROSS, ids=[p.name for p in ACROSS])
def test_stacks_wrong_only_together_are_rejected(directory: Path) -> None:
    files = sorted(directory.glob("*.yaml"))
    expected = next(expectation(f) for f in files if f.read_text().startswith("# expect: "))
    for path in files:  # each file alone is fine...
        assert CliRunner().invoke(main, ["validate", str(path)]).exit_code == 0
    result = CliRunner().invoke(main, ["validate", *map(str, files)])  # ...together they are not
    assert result.exit_code == 1
    assert f"across stacks: {expected}" in result.stderr, result.stderr


def test_plaintext_secret_is_never_echoed() -> None:
    path = BROKEN / "plaintext-secret.yaml"
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert "PLAINTEXT-LEAK-4417" not in result.output + result.stderr
    assert result.stderr.count("garo:github.runnerApp.privateKey") == 1


def test_plan_refuses_a_broken_stack_before_running_the_program() -> None:
    path = BROKEN / "max-below-min.yaml"
    done = subprocess.run(
        [sys.executable, "-m", "scaler.cli", "plan", str(path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1
    assert "garo:groups[0].max: max (2) is smaller than min (5)" in done.stderr
    assert done.stdout == ""
