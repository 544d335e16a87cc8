"""A made-up cloud with its own error codes, added from outside to prove the contract suite cloud-neutral.

``ToyCloud`` stands for some cloud's API: pools of VMs, tags, and errors that
carry the cloud's own codes (``ERR_NO_ROOM``, ``ERR_BAD_NAME`` ...).
``ToyBackend`` is what a contributor would write in ``scaler/backends/``: the
five contract calls on top of that API, mapping each code onto a
:class:`~scaler.backends.base.Failure`.

Loaded as a pytest plugin (``-p tests.contract.toy_backend``), it registers
the backend in :data:`scaler.backends.registry.BACKENDS` and its harness in
``tests/contract/harnesses.py``, exactly the two lines a new cloud adds;
``tests/contract/test_extra_backend.py`` runs the unchanged suite with it.
With ``GARO_TOY_WITHOUT_HARNESS=1`` only the backend is registered, to show
that the suite then fails.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

import pytest

from scaler.backends import registry
from scaler.backends.base import (
    SECRET_METADATA,
    BackendError,
    CreateFailure,
    CreateResult,
    Failure,
    Instance,
    InstanceState,
)
from tests.contract.harnesses import GROUP, HARNESSES, Harness

if TYPE_CHECKING:
    from scaler.agent.settings import AgentSettings
    from scaler.config import StackConfig


class ToyCode(StrEnum):
    """The toy cloud's vocabulary: nothing like GCE's or EC2's."""

    NO_ROOM = "ERR_NO_ROOM"  # the pool's hosts are full
    OVER_LIMIT = "ERR_OVER_LIMIT"  # the account's VM limit
    SLOW_DOWN = "ERR_SLOW_DOWN"
    BAD_NAME = "ERR_BAD_NAME"
    NO_SUCH_VM = "ERR_NO_SUCH_VM"
    NO_SUCH_POOL = "ERR_NO_SUCH_POOL"


# The one place the toy's codes meet Garo's words.
TOY_FAILURES: Mapping[ToyCode, Failure] = {
    ToyCode.NO_ROOM: Failure.CAPACITY,
    ToyCode.OVER_LIMIT: Failure.QUOTA,
    ToyCode.SLOW_DOWN: Failure.THROTTLED,
    ToyCode.BAD_NAME: Failure.INVALID,
    ToyCode.NO_SUCH_VM: Failure.NOT_FOUND,
    ToyCode.NO_SUCH_POOL: Failure.NOT_FOUND,
}


class ToyCloudError(Exception):
    def __init__(self, code: ToyCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


@dataclass
class ToyVm:
    phase: str  # "booting", "up", "sleeping", "waking"
    born: float
    tags: dict[str, str] = field(default_factory=dict)


_TOY_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")


class ToyCloud:
    """The cloud's API. Time moves only when ``tick`` is called; ``room`` caps a pool's VMs."""

    def __init__(self) -> None:
        self.pools: dict[str, dict[str, ToyVm]] = {}
        self.room: dict[str, int] = {}
        self.now = 0.0

    def pool(self, pool: str) -> dict[str, ToyVm]:
        if pool not in self.pools:
            raise ToyCloudError(ToyCode.NO_SUCH_POOL, f"pool {pool} does not exist")
        return self.pools[pool]

    def launch(self, pool: str, names: Sequence[str], tags: Mapping[str, Mapping[str, str]]) -> dict[str, ToyCode]:
        """Launch VMs (a batch is checked whole first); per-name codes for the ones that found no room."""
        vms = self.pool(pool)
        bad = [n for n in names if not _TOY_NAME.match(n)]
        if bad:
            raise ToyCloudError(ToyCode.BAD_NAME, f"names must be lowercase letters, digits and dashes: {bad}")
        refused: dict[str, ToyCode] = {}
        for name in names:
            if name in vms:
                continue
            if len(vms) >= self.room.get(pool, 1_000):
                refused[name] = ToyCode.NO_ROOM
                continue
            vms[name] = ToyVm("booting", self.now, dict(tags.get(name, {})))
        return refused

    def terminate(self, pool: str, name: str) -> None:
        if self.pool(pool).pop(name, None) is None:
            raise ToyCloudError(ToyCode.NO_SUCH_VM, f"{name} is not in {pool}")

    def wake(self, pool: str, name: str) -> None:
        self.pool(pool)[name].phase = "waking"

    def tag(self, pool: str, name: str, tags: Mapping[str, str | None]) -> None:
        vm = self.pool(pool).get(name)
        if vm is None:
            raise ToyCloudError(ToyCode.NO_SUCH_VM, f"{name} is not in {pool}")
        for key, value in tags.items():
            if value is None:
                vm.tags.pop(key, None)
            else:
                vm.tags[key] = value

    def tick(self) -> None:
        self.now += 60
        for vms in self.pools.values():
            for vm in vms.values():
                if vm.phase in ("booting", "waking"):
                    vm.phase = "up"


_PHASES = {
    "booting": InstanceState.CREATING,
    "up": InstanceState.RUNNING,
    "sleeping": InstanceState.STANDBY,
    "waking": InstanceState.RESUMING,
}


def _failure(exc: ToyCloudError) -> BackendError:
    return BackendError(str(exc), reason=TOY_FAILURES.get(exc.code, Failure.UNKNOWN))


class ToyBackend:
    """:class:`scaler.backends.base.Backend` on the toy cloud; a Garo group is a toy pool of the same name."""

    def __init__(self, cloud: ToyCloud) -> None:
        self.cloud = cloud

    def create(self, group: str, names: Sequence[str], metadata: Mapping[str, Mapping[str, str]]) -> CreateResult:
        wanted = list(dict.fromkeys(names))
        try:
            there = tuple(n for n in wanted if n in self.cloud.pool(group))
            refused = self.cloud.launch(group, wanted, metadata)
        except ToyCloudError as exc:
            raise _failure(exc) from None
        failed = {name: CreateFailure(TOY_FAILURES[code], f"{code}") for name, code in refused.items()}
        return CreateResult(created=tuple(n for n in wanted if n not in failed), failed=failed, existed=there)

    def delete(self, group: str, names: Sequence[str]) -> None:
        for name in names:
            try:
                self.cloud.terminate(group, name)
            except ToyCloudError as exc:
                if exc.code is not ToyCode.NO_SUCH_VM:  # already gone is what we wanted
                    raise _failure(exc) from None

    def list(self, group: str) -> Sequence[Instance]:
        try:
            vms = self.cloud.pool(group)
        except ToyCloudError as exc:
            raise _failure(exc) from None
        return [
            Instance(
                name=name,
                group=group,
                state=_PHASES[vm.phase],
                created_at=vm.born + 1,
                metadata={k: v for k, v in vm.tags.items() if k not in SECRET_METADATA},
            )
            for name, vm in sorted(vms.items())
        ]

    def resume_standby(self, group: str, count: int) -> Sequence[str]:
        sleeping = [name for name, vm in sorted(self.cloud.pool(group).items()) if vm.phase == "sleeping"]
        for name in sleeping[: max(count, 0)]:
            self.cloud.wake(group, name)
        return sleeping[: max(count, 0)]

    def set_metadata(self, group: str, name: str, items: Mapping[str, str]) -> None:
        try:
            self.cloud.tag(group, name, {k: (v if v != "" else None) for k, v in items.items()})
        except ToyCloudError as exc:
            raise _failure(exc) from None


def _toy_factory(config: StackConfig, settings: AgentSettings) -> ToyBackend:
    return ToyBackend(ToyCloud())


def _toy_harness(request: pytest.FixtureRequest) -> Harness:
    cloud = ToyCloud()
    cloud.pools[GROUP] = {}

    def seed_standby(names: Sequence[str]) -> None:
        for name in names:
            cloud.pools[GROUP][name] = ToyVm("sleeping", cloud.now)

    def exhaust() -> None:
        cloud.room[GROUP] = len(cloud.pools[GROUP])

    return Harness(
        ToyBackend(cloud),
        cloud.tick,
        seed_standby,
        exhaust,
        lambda name: dict(cloud.pools[GROUP][name].tags),
    )


def pytest_configure(config: pytest.Config) -> None:
    registry.BACKENDS = {**registry.BACKENDS, "toy": _toy_factory}
    if os.environ.get("GARO_TOY_WITHOUT_HARNESS") != "1":
        HARNESSES["toy"] = _toy_harness
