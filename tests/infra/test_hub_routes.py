"""The hub takes a department's route only together with its subscription (issue 11: "202 published, then lost").

On Pub/Sub, an event routed to a department whose subscription does not exist
yet is published and kept by no one. A department stack exports its `route`
only after `pulumi up` created its subscription, but a route left from a
partial update must not slip through: the hub requires both outputs.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DECLARE_HUB = """
import sys
import scaler.plan as plan
real = plan.referenced_outputs
def outputs(path, config):
    found = real(path, config)
    if sys.argv[1] == "no-subscription":
        found = {ref: {k: v for k, v in out.items() if k != "subscription"} for ref, out in found.items()}
    return found
plan.referenced_outputs = outputs
try:
    declared = plan.declare("examples/Pulumi.hub.yaml")
except Exception as exc:
    print("refused:", type(exc).__name__, exc)
    sys.exit(3)
print("routes:", sorted(d["name"] for d in declared.outputs["routes"][0]["departments"]))
"""


def declare_hub(variant: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", DECLARE_HUB, variant], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_a_department_route_needs_its_subscription() -> None:
    whole = declare_hub("whole")
    assert whole.returncode == 0, whole.stdout + whole.stderr
    assert "routes: ['payments', 'research']" in whole.stdout
    partial = declare_hub("no-subscription")
    assert partial.returncode == 3, partial.stdout + partial.stderr
    assert "subscription" in partial.stdout
