"""`make demo` is a newcomer's first contact: it must run the loop end to end and say so."""

from __future__ import annotations

import re

from scaler.demo import run_demo
from scaler.demo.parts import DEMO_JOBS


def test_demo_takes_every_job_from_queued_to_vm_deleted() -> None:
    lines: list[str] = []
    assert run_demo(lines.append, time_limit=60) == 0, "\n".join(lines)
    text = "\n".join(lines)
    # GitHub's examples as they are: the ping, a hosted job and an unserved label set.
    assert "ping: 200 pong" in text
    assert "202 github_hosted" in text
    assert "202 unmatched" in text
    job_ids = sorted({int(m) for m in re.findall(r"queued\s+job (5\d{9}): 202 published", text)})
    assert len(job_ids) == len(DEMO_JOBS)
    for job_id in job_ids:
        started = [i for i, line in enumerate(lines) if re.search(rf"in_progress job {job_id} on ([a-z0-9-]+)", line)]
        finished = [i for i, line in enumerate(lines) if f"completed   job {job_id} on" in line]
        assert len(started) == 1 and len(finished) == 1 and started[0] < finished[0], text
        runner = re.search(rf"in_progress job {job_id} on ([a-z0-9-]+)", lines[started[0]])
        assert runner is not None
        deleted = [i for i, line in enumerate(lines) if f"VM {runner.group(1)}: deleted" in line]
        assert deleted and deleted[0] > finished[0], f"the VM that ran {job_id} must be deleted after it completed"
    # The third linux job waits for a VM to free up: the group's max is 2.
    assert "waits: group linux is at its max of 2 VMs" in text
    assert f"jobs:            {len(DEMO_JOBS)}/{len(DEMO_JOBS)} completed" in text
    assert re.search(r"VMs:\s+(\d+) created, \1 deleted, 0 left", text)
