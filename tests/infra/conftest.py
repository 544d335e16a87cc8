"""Run each example stack through the real program under Pulumi's mocks, once per session.

Pulumi's runtime state is process-global, so every stack runs in its own
Python process (in parallel); the capture holds the rendered plan and, from
the same run, the unmasked declaration (``scaler.plan.declare``), so the
secret-leak checks can look for the values everywhere the masking let through.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
STACKS = ("hub", "payments", "research")  # GCP
AWS_STACKS = ("mobile",)
ALL_STACKS = STACKS + AWS_STACKS
# Stand-ins for decrypted secure values; they must reach Secret Manager and nothing else.
SENTINELS = {
    "garo:github.webhookSecret": "whsec-SENTINEL-7f3a9c0e",
    "garo:github.runnerApp.privateKey": "-----BEGIN RSA PRIVATE KEY----- SENTINEL-b81d44 -----END RSA PRIVATE KEY-----",
    "garo:github.webhookApp.privateKey": "-----BEGIN RSA PRIVATE KEY----- SENTINEL-webhook-app-93c2 -----END RSA PRIVATE KEY-----",
    "gcp:credentials": '{"type": "service_account", "private_key": "SENTINEL-gcp-credentials-5e1f"}',
}
# What to look for: each sentinel's token, which survives being re-encoded (a JSON value inside JSON is escaped).
SENTINEL_TOKENS = tuple(re.search(r"SENTINEL-[0-9a-z-]+", value).group() for value in SENTINELS.values())  # type: ignore[union-attr]
_CAPTURE = """
import json, sys
from scaler.plan import declare, masked, render_json, render_table
d = declare(sys.argv[1], secret_values=json.load(sys.stdin))
p = masked(d)
raw_resources = [{"type": r.type, "name": r.name, "custom": r.custom, "inputs": r.raw_inputs} for r in d.resources]
print(json.dumps({"table": render_table(p), "json": render_json(p), "resources": p.resources,
                  "raw_resources": raw_resources, "outputs": p.outputs,
                  "raw_outputs": {k: value for k, (value, _) in d.outputs.items()}}))
"""


def run_captures(paths: list[Path]) -> dict[str, dict[str, Any]]:
    procs = {
        path: subprocess.Popen(
            [sys.executable, "-c", _CAPTURE, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for path in paths
    }
    captures = {}
    for path, proc in procs.items():
        out, err = proc.communicate(json.dumps(SENTINELS), timeout=120)
        assert proc.returncode == 0, f"plan of {path.name} failed:\n{err}"
        captures[path.name.split(".")[1]] = json.loads(out)
    return captures


@pytest.fixture(scope="session")
def captures() -> dict[str, dict[str, Any]]:
    return run_captures([EXAMPLES / f"Pulumi.{stack}.yaml" for stack in ALL_STACKS])


def of_type(capture: dict[str, Any], kind: str, raw: bool = False) -> list[dict[str, Any]]:
    """Custom resources whose type ends with ``kind`` (e.g. ``compute/firewall:Firewall``)."""
    key = "raw_resources" if raw else "resources"
    return [r for r in capture[key] if r["custom"] and r["type"].endswith(kind)]
