"""The local backend speaking AWS's failure vocabulary, for the property test (issue 10).

Every refusal is a real botocore ``ClientError`` with an EC2, Auto Scaling or
S3 error code, turned into the backend vocabulary by ``AwsBackend``'s own
mapping (:func:`scaler.backends.aws.backend_error`, :func:`~scaler.backends.aws.failure_for`),
so the agent sees exactly what it would see from ``AwsBackend``: capacity and
unsupported-type refusals for some names of a batch (a partial batch),
throttling on any call, internal errors, and a terminate that says the
instance is not in the group any more (after the terminate landed). Seeded: an example replays exactly.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from botocore.exceptions import ClientError

from scaler.backends.aws import backend_error, failure_for
from scaler.backends.base import CreateFailure, CreateResult, Instance
from scaler.backends.local import LocalBackend

CREATE_CODES = ("InsufficientInstanceCapacity", "Unsupported", "VcpuLimitExceeded", "SpotMaxPriceTooLow")
CALL_CODES = (("RequestLimitExceeded", 503), ("Throttling", 400), ("InternalError", 500), ("SlowDown", 503))


def client_error(code: str, status: int, operation: str) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": f"simulated {code}"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        operation,
    )


class AwsFaults:
    """Wraps a :class:`LocalBackend`; fails a seeded fraction of calls and names the way AWS does."""

    def __init__(self, inner: LocalBackend, rng: random.Random, rate: float = 0.15) -> None:
        self.inner = inner
        self.rng = rng
        self.rate = rate
        self.refused: dict[str, int] = {}  # AWS error code -> times used
        self._failed_last: set[str] = set()

    def _maybe_fail(self, operation: str) -> None:
        """Fail this call, never twice in a row per operation: botocore's retry modes absorb most throttling."""
        if operation not in self._failed_last and self.rng.random() < self.rate:
            self._failed_last.add(operation)
            code, status = self.rng.choice(CALL_CODES)
            self.refused[code] = self.refused.get(code, 0) + 1
            raise backend_error(client_error(code, status, operation), operation)
        self._failed_last.discard(operation)

    def create(self, group: str, names: Sequence[str], metadata: Mapping[str, Mapping[str, str]]) -> CreateResult:
        self._maybe_fail("CreateFleet")
        refused: dict[str, CreateFailure] = {}
        for name in names:
            if self.rng.random() < self.rate:
                code = self.rng.choice(CREATE_CODES)
                self.refused[code] = self.refused.get(code, 0) + 1
                refused[name] = CreateFailure(failure_for(code), code)
        result = self.inner.create(group, [n for n in names if n not in refused], metadata)
        return CreateResult(created=result.created, failed={**result.failed, **refused})

    def delete(self, group: str, names: Sequence[str]) -> None:
        """Sometimes the terminate lands but the answer is an error (a retried call after a lost response)."""
        self.inner.delete(group, names)
        if self.rng.random() < self.rate:
            code = "InvalidInstanceID.NotFound"
            self.refused[code] = self.refused.get(code, 0) + 1
            raise backend_error(client_error(code, 400, "TerminateInstances"), "TerminateInstanceInAutoScalingGroup")

    def list(self, group: str) -> Sequence[Instance]:
        self._maybe_fail("DescribeInstances")
        return self.inner.list(group)

    def resume_standby(self, group: str, count: int) -> Sequence[str]:
        self._maybe_fail("SetDesiredCapacity")
        return self.inner.resume_standby(group, count)

    def set_metadata(self, group: str, name: str, items: Mapping[str, str]) -> None:
        self._maybe_fail("PutObject")
        self.inner.set_metadata(group, name, items)
