"""`garo demo --cloud aws`: the same story with the agent's AwsBackend against a moto server over HTTP."""

from __future__ import annotations

import re
import sys

import pytest
from click.testing import CliRunner

from scaler import cli
from scaler.demo import run_demo
from scaler.demo.parts import DEMO_JOBS


def test_aws_demo_takes_every_job_from_queued_to_instance_terminated() -> None:
    lines: list[str] = []
    assert run_demo(lines.append, time_limit=90, cloud="aws") == 0, "\n".join(lines)
    text = "\n".join(lines)
    # Where to look: the moto endpoint and a boto3 command that lists the department's instances.
    endpoint = re.search(r"moto server (http://127\.0\.0\.1:\d+)", text)
    assert endpoint is not None, text
    assert f"endpoint_url='{endpoint.group(1)}').describe_instances(" in text
    job_ids = sorted({int(m) for m in re.findall(r"queued\s+job (5\d{9}): 202 published", text)})
    assert len(job_ids) == len(DEMO_JOBS)
    instance_of: dict[str, str] = {}
    for line in lines:
        found = re.search(r"VM ([a-z0-9-]+): running, InService in ASG garo-eng-\w+ \((i-[0-9a-f]+), ", line)
        if found:
            instance_of[found.group(1)] = found.group(2)
    for job_id in job_ids:
        started = [i for i, line in enumerate(lines) if re.search(rf"in_progress job {job_id} on ([a-z0-9-]+)", line)]
        finished = [i for i, line in enumerate(lines) if f"completed   job {job_id} on" in line]
        assert len(started) == 1 and len(finished) == 1 and started[0] < finished[0], text
        runner = re.search(rf"in_progress job {job_id} on ([a-z0-9-]+)", lines[started[0]])
        assert runner is not None
        # The runner's instance joined its ASG, got its own S3 object, whose boot agent read and deleted it.
        instance = instance_of[runner.group(1)]
        written = [
            i for i, line in enumerate(lines) if re.search(rf"S3 .*/jit/AROA\w+:{instance}: JIT config written", line)
        ]
        read = [
            i
            for i, line in enumerate(lines)
            if re.search(rf"{instance}: its boot agent read .*:{instance} and deleted it", line)
        ]
        assert len(written) == 1 and len(read) == 1 and written[0] < read[0] < started[0], text
        deleted = [i for i, line in enumerate(lines) if f"VM {runner.group(1)}: deleted" in line]
        assert deleted and deleted[0] > finished[0], f"the instance that ran {job_id} must go after it completed"
    assert "waits: group linux is at its max of 2 VMs" in text
    assert f"jobs:            {len(DEMO_JOBS)}/{len(DEMO_JOBS)} completed" in text
    # Read back from moto: nothing left running, the ASGs back at zero, no config left in the bucket.
    assert "garo-eng-linux desired 0 members 0, garo-eng-gpu desired 0 members 0" in text
    assert f"EC2 instances:   {len(DEMO_JOBS)} terminated; JIT objects left in s3://garo-eng-jit-demo: 0" in text
    calls = re.search(r"cloud API:\s+(.*)", text)
    assert calls is not None
    counted = dict((k, int(v)) for k, v in re.findall(r"(\w+) (\d+)", calls.group(1)))
    assert 1 <= counted["RunInstances"] <= len(DEMO_JOBS)  # names asked for together share one
    # Deleted by id with decrement: one call per VM at most (detaching many at once, or one by one).
    removals = counted.get("DetachInstances", 0) + counted.get("TerminateInstanceInAutoScalingGroup", 0)
    assert 1 <= removals <= len(DEMO_JOBS)
    assert counted["PutObject"] == len(DEMO_JOBS) and "SetDesiredCapacity" not in counted


def test_aws_demo_says_in_one_line_how_to_install_moto_when_it_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "moto", None)  # import moto -> ImportError
    monkeypatch.setitem(sys.modules, "moto.server", None)
    result = CliRunner().invoke(cli.main, ["demo", "--cloud", "aws"])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0
    assert "pip install 'moto[server]" in result.output
