"""A simulated cloud behind the agent's Backend contract, timed by a latency model.

Each VM goes ``creating`` -> ``running`` after a *create* draw; its boot agent
is up a *boot* draw later, and its runner comes online a *runner start-up*
draw after both the boot agent is up and the JIT config is in its metadata.
A delete takes a *delete* draw (the VM is billed until then). A create may fail
with a capacity error at the model's rate; a spot VM is preempted after an
exponential time at the model's hourly rate (its job, if any, fails, as on
GitHub). Standby pools (``standbyPool``) are kept full by the cloud, as a MIG
standby policy or an EC2 warm pool does: resuming one takes a *resume* draw
for the pool's mode, and the cloud starts a replacement.

Every change of state is put on the :class:`~scaler.simulate.clock.Timeline`,
so the simulation wakes the agent exactly when something happened.
"""

from __future__ import annotations

import bisect
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from scaler import naming
from scaler.backends.base import (
    JIT_KEY,
    SECRET_METADATA,
    STATE_LABEL,
    BackendError,
    CreateFailure,
    CreateResult,
    Failure,
    Instance,
    InstanceState,
)
from scaler.config import StackConfig
from scaler.simulate.clock import Timeline, VirtualClock
from scaler.simulate.models import CloudModel, Distribution

CAPACITY = CreateFailure(Failure.CAPACITY, "simulated: no capacity for this shape in the zone")
STANDBY_SLOT_BASE = 9000  # standby VMs take warm-name slots from here, clear of the agent's warm slots


@dataclass
class SimVm:
    name: str
    group: str
    state: InstanceState
    created_at: float
    metadata: dict[str, str]
    labels: dict[str, str] = field(default_factory=dict)
    serial: int = 0
    boot_done: float = float("inf")  # when the boot agent is up (inf: not booted yet)
    startup: float = 0.0  # its runner start-up draw (drawn at creation: draws do not follow agent steps)
    runner_starting: bool = False
    billed_from: float = 0.0  # start of the current billed (non-standby) stretch
    # Its listing entry until it changes (``SimCloud._changed``): a listing rebuilds only changed VMs.
    listed: Instance | None = field(default=None, repr=False, compare=False)


@dataclass
class Usage:
    """What the cloud did, for the report."""

    vm_seconds: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))  # group -> billed s
    standby_seconds: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    calls: Counter[str] = field(default_factory=Counter)  # Backend method -> calls
    capacity_errors: int = 0
    preemptions: int = 0
    created: Counter[str] = field(default_factory=Counter)
    # (time, group, active VM count) after every change, for the "VMs over time" plot
    active_series: list[tuple[float, str, int]] = field(default_factory=list)
    log: list[tuple[float, str, str]] = field(default_factory=list)  # (time, event, name), kept when asked


class SimCloud:
    """Implements :class:`scaler.backends.base.Backend` on virtual time."""

    # Metadata writes the agent makes at once (scaler.agent.executor): calls here take no real
    # time, so one after another, which also keeps a run independent of thread scheduling.
    metadata_writers = 1

    def __init__(
        self,
        config: StackConfig,
        model: CloudModel,
        runner_startup: Distribution,
        clock: VirtualClock,
        timeline: Timeline,
        rng: random.Random,
        *,
        on_runner_start: Callable[[str], None],
        on_vm_lost: Callable[[str], None],
        on_change: Callable[[float | None], None],
        keep_log: bool = False,
    ) -> None:
        """``on_change(look_by)`` is called when a VM's state changes on its own.

        ``look_by`` is None when a VM went away; when one became usable, the
        latest time the agent may first see it without changing the run: its
        boot agent is up then, so a JIT config that arrives sooner starts its
        runner no sooner (see :meth:`_maybe_start_runner`).
        """
        self.config = config
        self.model = model
        self.startup = runner_startup
        self.clock = clock
        self.timeline = timeline
        self.rng = rng
        self.on_runner_start = on_runner_start
        self.on_vm_lost = on_vm_lost
        self.on_change = on_change
        self.keep_log = keep_log
        self.vms: dict[str, dict[str, SimVm]] = {g.name: {} for g in config.groups}
        self.usage = Usage()
        self._serial = 0
        self._standby_slots: dict[str, int] = {g.name: 0 for g in config.groups}
        self._has_standby = {g.name: g.standby_pool.size > 0 for g in config.groups}
        # group -> its listing (sorted by name) until a VM comes or goes; a VM that only changed is
        # swapped in place at the next listing (``_stale``), since the agent lists on most of its steps.
        self._listed: dict[str, list[Instance]] = {}
        self._position: dict[str, dict[str, int]] = {}  # group -> name -> index in its listing
        self._names: dict[str, list[str]] = {g.name: [] for g in config.groups}  # each group's VM names, sorted
        self._stale: dict[str, set[str]] = {}  # group -> names whose listing entry is out of date

    def begin(self) -> None:
        """The simulation starts now: the standby pools are there already, as in a running department."""
        for group in self.config.groups:
            for _ in range(group.standby_pool.size):
                self._add_standby(group.name, ready=True)

    # ------------------------------------------------------------------ helpers

    def _note(self, event: str, name: str) -> None:
        if self.keep_log:
            self.usage.log.append((self.clock.now, event, name))

    def _records(self, group: str) -> dict[str, SimVm]:
        if group not in self.vms:
            raise BackendError(f"no instance group {group!r}", reason=Failure.NOT_FOUND)
        return self.vms[group]

    def _touch(self, group: str) -> None:
        """A VM came or went (or may have): the group's listing is rebuilt at the next ``list``."""
        self._listed.pop(group, None)

    def _changed(self, vm: SimVm) -> None:
        """The VM's state, labels or metadata changed: its entry in the listing is stale."""
        vm.listed = None
        self._stale.setdefault(vm.group, set()).add(vm.name)

    def _forget(self, group: str, name: str) -> None:
        """The VM is gone from the cloud."""
        del self.vms[group][name]
        names = self._names[group]
        del names[bisect.bisect_left(names, name)]

    def _count_active(self, group: str) -> None:
        self._touch(group)
        vms = self.vms[group]
        # Only a standby pool's VMs are ever in standby: without one, every VM is active (no count).
        active = (
            sum(1 for v in vms.values() if v.state is not InstanceState.STANDBY)
            if self._has_standby[group]
            else len(vms)
        )
        self.usage.active_series.append((self.clock.now, group, active))

    def _bill(self, vm: SimVm) -> None:
        """Close the VM's current billed stretch at now."""
        seconds = self.clock.now - vm.billed_from
        if vm.state is InstanceState.STANDBY:
            self.usage.standby_seconds[vm.group] += seconds
        else:
            self.usage.vm_seconds[vm.group] += seconds
        vm.billed_from = self.clock.now

    def _new_vm(self, group: str, name: str, metadata: Mapping[str, str], state: InstanceState) -> SimVm:
        self._serial += 1
        now = self.clock.now
        vm = SimVm(name, group, state, now, dict(metadata), serial=self._serial, billed_from=now)
        vm.startup = self.startup.sample(self.rng)
        if name not in self.vms[group]:
            bisect.insort(self._names[group], name)
        self.vms[group][name] = vm
        self.usage.created[group] += 1
        self._touch(group)
        return vm

    def _add_standby(self, group: str, ready: bool = False) -> None:
        """The cloud refills the standby pool: create and boot, then suspend (or stop)."""
        self._has_standby[group] = True
        slot = STANDBY_SLOT_BASE + self._standby_slots[group]
        self._standby_slots[group] = (self._standby_slots[group] + 1) % 999
        name = naming.warm_name(self.config.department, group, slot)
        vm = self._new_vm(group, name, {}, InstanceState.CREATING)
        if ready:
            vm.state = InstanceState.STANDBY
            return
        delay = self.model.create.sample(self.rng) + self.model.boot.sample(self.rng)
        self._count_active(group)
        serial = vm.serial

        def suspended() -> None:
            if self._alive(group, name, serial) and vm.state is InstanceState.CREATING:
                self._bill(vm)
                vm.state = InstanceState.STANDBY
                self._changed(vm)
                self._count_active(group)
                self.on_change(self.clock.now)

        self.timeline.at(self.clock.now + delay, suspended)

    def ready_without_jit(self, pending: dict[str, str]) -> bool:
        """Whether a VM the agent still owes a JIT config could take it now (running or resuming)."""
        for name, group in pending.items():
            vm = self.vms.get(group, {}).get(name)
            if vm is not None and vm.state in (InstanceState.RUNNING, InstanceState.RESUMING):
                return True
        return False

    def _alive(self, group: str, name: str, serial: int) -> bool:
        vm = self.vms.get(group, {}).get(name)
        return vm is not None and vm.serial == serial

    def _running(self, vm: SimVm, boot: float) -> None:
        """The VM is listed running now; its boot agent is up ``boot`` seconds later."""
        vm.state = InstanceState.RUNNING
        vm.boot_done = self.clock.now + boot
        self._changed(vm)
        self.on_change(vm.boot_done)
        self._note("running", vm.name)
        self._maybe_start_runner(vm)
        group = next(g for g in self.config.groups if g.name == vm.group)
        rate = self.model.spot_preemption_per_hour.value
        if group.spot and rate > 0:
            serial = vm.serial
            self.timeline.at(
                self.clock.now + self.rng.expovariate(rate / 3600.0), lambda: self._preempt(vm.group, vm.name, serial)
            )

    def _maybe_start_runner(self, vm: SimVm) -> None:
        secret = vm.metadata.get(JIT_KEY)
        if vm.runner_starting or not secret or vm.boot_done == float("inf"):
            return
        vm.runner_starting = True
        serial, group, name = vm.serial, vm.group, vm.name
        at = max(self.clock.now, vm.boot_done) + vm.startup

        def start() -> None:
            if self._alive(group, name, serial) and vm.state is InstanceState.RUNNING:
                vm.labels[STATE_LABEL] = "running"
                self._changed(vm)
                self._note("runner-online", name)
                self.on_runner_start(secret)

        self.timeline.at(at, start)

    def _preempt(self, group: str, name: str, serial: int) -> None:
        vm = self.vms.get(group, {}).get(name)
        if vm is None or vm.serial != serial or vm.state is InstanceState.DELETING:
            return
        self.usage.preemptions += 1
        self._note("preempted", name)
        self._bill(vm)
        self._forget(group, name)
        self._count_active(group)
        self.on_vm_lost(name)

    def finish(self, group: str, name: str) -> None:
        """The VM's job ended: its boot agent says so (``garo-state: done``)."""
        vm = self.vms.get(group, {}).get(name)
        if vm is not None:
            vm.labels[STATE_LABEL] = "done"
            self._changed(vm)

    def bill_to_now(self) -> None:
        """Bill every VM still there up to now: at the end of a run, and where a piece's window begins or ends."""
        for records in self.vms.values():
            for vm in records.values():
                self._bill(vm)

    # ------------------------------------------------------------------ Backend

    def create(self, group: str, names: Sequence[str], metadata: Mapping[str, Mapping[str, str]]) -> CreateResult:
        self.usage.calls["create"] += 1
        records = self._records(group)
        created: list[str] = []
        existed: list[str] = []
        failed: dict[str, CreateFailure] = {}
        for name in dict.fromkeys(names):
            if name in records:
                created.append(name)
                existed.append(name)
                continue
            if self.rng.random() < self.model.capacity_error_rate.value:
                self.usage.capacity_errors += 1
                failed[name] = CAPACITY
                continue
            vm = self._new_vm(group, name, metadata.get(name, {}), InstanceState.CREATING)
            self._note("create", name)
            created.append(name)
            serial = vm.serial
            create, boot = self.model.create.sample(self.rng), self.model.boot.sample(self.rng)

            def running(vm: SimVm = vm, serial: int = serial, boot: float = boot) -> None:
                if self._alive(vm.group, vm.name, serial) and vm.state is InstanceState.CREATING:
                    self._running(vm, boot)

            self.timeline.at(self.clock.now + create, running)
        if created:
            self._count_active(group)
        return CreateResult(created=tuple(created), failed=failed, existed=tuple(existed))

    def delete(self, group: str, names: Sequence[str]) -> None:
        self.usage.calls["delete"] += 1
        records = self._records(group)
        for name in names:
            vm = records.get(name)
            if vm is None or vm.state is InstanceState.DELETING:
                continue
            self._bill(vm)
            vm.state = InstanceState.DELETING
            self._changed(vm)
            self._note("delete", name)
            self.on_vm_lost(name)
            serial = vm.serial

            def gone(vm: SimVm = vm, serial: int = serial) -> None:
                if self._alive(vm.group, vm.name, serial):
                    self._bill(vm)
                    self._forget(vm.group, vm.name)
                    self._count_active(vm.group)
                    self.on_change(None)

            self.timeline.at(self.clock.now + self.model.delete.sample(self.rng), gone)

    def list(self, group: str) -> Sequence[Instance]:
        self.usage.calls["list"] += 1
        records = self._records(group)
        listed = self._listed.get(group)
        stale = self._stale.pop(group, None)
        if listed is None:
            names = self._names[group]
            listed = [vm.listed if vm.listed is not None else self._entry(vm) for vm in map(records.__getitem__, names)]
            self._listed[group] = listed
            self._position[group] = dict(zip(names, range(len(names)), strict=True))
        elif stale:
            position = self._position[group]
            for name in stale:
                vm = records.get(name)
                if vm is not None and name in position:
                    listed[position[name]] = self._entry(vm)
        return list(listed)

    @staticmethod
    def _entry(vm: SimVm) -> Instance:
        if vm.listed is None:
            vm.listed = Instance(
                name=vm.name,
                group=vm.group,
                state=vm.state,
                created_at=vm.created_at,
                labels=dict(vm.labels),
                zone="sim-a",
                metadata={k: v for k, v in vm.metadata.items() if k not in SECRET_METADATA},
            )
        return vm.listed

    def resume_standby(self, group: str, count: int) -> Sequence[str]:
        self.usage.calls["resume_standby"] += 1
        records = self._records(group)
        spec = next(g for g in self.config.groups if g.name == group)
        phase = self.model.resume_suspended if spec.standby_pool.mode == "suspended" else self.model.resume_stopped
        standby = sorted((v for v in records.values() if v.state is InstanceState.STANDBY), key=lambda v: v.created_at)
        resumed: list[str] = []
        for vm in standby[: max(count, 0)]:
            self._bill(vm)
            vm.state = InstanceState.RESUMING
            self._changed(vm)
            self._note("resume", vm.name)
            resumed.append(vm.name)
            serial = vm.serial

            def running(vm: SimVm = vm, serial: int = serial) -> None:
                if self._alive(vm.group, vm.name, serial) and vm.state is InstanceState.RESUMING:
                    self._running(vm, 0.0)  # the resume draw includes getting the boot agent back

            self.timeline.at(self.clock.now + phase.sample(self.rng), running)
            self._add_standby(group)
        if resumed:
            self._count_active(group)
        return resumed

    def set_metadata(self, group: str, name: str, items: Mapping[str, str]) -> None:
        self.usage.calls["set_metadata"] += 1
        vm = self._records(group).get(name)
        if vm is None or vm.state is InstanceState.DELETING:
            raise BackendError(f"instance {name!r} not found in group {group!r}", reason=Failure.NOT_FOUND)
        self._changed(vm)
        for key, value in items.items():
            if value == "":
                vm.metadata.pop(key, None)
            else:
                vm.metadata[key] = value
        if items.get(JIT_KEY):
            self._maybe_start_runner(vm)
