"""A simulated fleet: the cloud for ``garo demo`` and for the agent's tests.

The demo runs the webhook, the agent and a simulated boot agent as separate
processes, so the fleet lives in a JSON file (default ``.garo/fleet/fleet.json``)
guarded by an advisory ``flock``; every call is read-modify-write under that lock,
which makes each call atomic across processes just as a cloud API call is.
With ``state_dir=None`` the fleet lives in memory (tests).

States are stored with the time they were entered and progress lazily on read
(``creating``/``resuming`` become ``running`` after ``boot_delay``), so no
background thread is needed and an injected clock makes tests deterministic.
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from scaler.backends.base import (
    SECRET_METADATA,
    BackendError,
    CreateFailure,
    CreateResult,
    Failure,
    Instance,
    InstanceState,
)
from scaler.naming import INSTANCE_NAME_RE

DEFAULT_STATE_DIR = Path(".garo/fleet")
CAPACITY_ERROR = CreateFailure(Failure.CAPACITY, "the local fleet's capacity for this group is reached")
_BOOTING = {InstanceState.CREATING.value, InstanceState.RESUMING.value}

Fleet = dict[str, dict[str, dict[str, Any]]]  # group -> name -> record


class LocalBackend:
    """Implements :class:`scaler.backends.base.Backend` on a local (file or memory) fleet.

    ``capacity`` caps how many instances a group may hold; names beyond it fail
    with ``Failure.CAPACITY``, as a cloud out of machines does, so the agent's
    capacity-failure path can be exercised without a cloud.
    """

    def __init__(
        self,
        state_dir: str | Path | None = DEFAULT_STATE_DIR,
        *,
        boot_delay: float = 2.0,
        clock: Callable[[], float] = time.time,
        capacity: Mapping[str, int] | None = None,
        zone: str = "local-a",
    ) -> None:
        self.boot_delay = boot_delay
        self.clock = clock
        self.capacity = dict(capacity or {})
        self.zone = zone
        self._memory: Fleet = {}
        self._thread_lock = threading.Lock()
        self._path: Path | None = None
        if state_dir is not None:
            directory = Path(state_dir)
            directory.mkdir(parents=True, exist_ok=True)
            self._path = directory / "fleet.json"

    # ------------------------------------------------------------------ storage

    @contextlib.contextmanager
    def _fleet(self) -> Iterator[Fleet]:
        """Yield the whole fleet for read-modify-write under a process-wide lock."""
        with self._thread_lock:
            if self._path is None:
                yield self._memory
                return
            lock_path = self._path.with_suffix(".lock")
            with open(lock_path, "a+") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    fleet: Fleet = json.loads(self._path.read_text()) if self._path.exists() else {}
                    yield fleet
                    tmp = self._path.with_suffix(f".tmp{os.getpid()}")
                    tmp.write_text(json.dumps(fleet, sort_keys=True))
                    os.replace(tmp, self._path)
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)

    def _settle(self, records: dict[str, dict[str, Any]]) -> None:
        """Advance booting instances whose boot delay has passed."""
        now = self.clock()
        for record in records.values():
            if record["state"] in _BOOTING and now - record["since"] >= self.boot_delay:
                record["state"] = InstanceState.RUNNING.value
                record["since"] = now

    def _new_record(self, state: InstanceState, metadata: Mapping[str, str]) -> dict[str, Any]:
        now = self.clock()
        return {"state": state.value, "since": now, "created_at": now, "labels": {}, "metadata": dict(metadata)}

    # ------------------------------------------------------------------ Backend

    def create(self, group: str, names: Sequence[str], metadata: Mapping[str, Mapping[str, str]]) -> CreateResult:
        """Create named instances; existing names are reported created and left alone."""
        _check_names(names)
        created: list[str] = []
        existed: list[str] = []
        failed: dict[str, CreateFailure] = {}
        with self._fleet() as fleet:
            records = fleet.setdefault(group, {})
            limit = self.capacity.get(group)
            for name in dict.fromkeys(names):
                if name in records:
                    created.append(name)
                    existed.append(name)
                elif limit is not None and len(records) >= limit:
                    failed[name] = CAPACITY_ERROR
                else:
                    records[name] = self._new_record(InstanceState.CREATING, metadata.get(name, {}))
                    created.append(name)
        return CreateResult(created=tuple(created), failed=failed, existed=tuple(existed))

    def delete(self, group: str, names: Sequence[str]) -> None:
        with self._fleet() as fleet:
            records = fleet.get(group, {})
            for name in names:
                records.pop(name, None)

    def list(self, group: str) -> Sequence[Instance]:
        with self._fleet() as fleet:
            records = fleet.get(group, {})
            self._settle(records)
            return [
                Instance(
                    name=name,
                    group=group,
                    state=InstanceState(r["state"]),
                    created_at=r["created_at"],
                    labels=dict(r["labels"]),
                    zone=self.zone,
                    metadata={k: v for k, v in r["metadata"].items() if k not in SECRET_METADATA},
                )
                for name, r in sorted(records.items())
            ]

    def resume_standby(self, group: str, count: int) -> Sequence[str]:
        """Resume the oldest standby instances first (they have waited longest)."""
        resumed: list[str] = []
        with self._fleet() as fleet:
            records = fleet.get(group, {})
            standby = sorted(
                (r["created_at"], name) for name, r in records.items() if r["state"] == InstanceState.STANDBY.value
            )
            for _, name in standby[: max(count, 0)]:
                records[name]["state"] = InstanceState.RESUMING.value
                records[name]["since"] = self.clock()
                resumed.append(name)
        return resumed

    def set_metadata(self, group: str, name: str, items: Mapping[str, str]) -> None:
        with self._fleet() as fleet:
            record = fleet.get(group, {}).get(name)
            if record is None:
                raise BackendError(f"instance {name!r} not found in group {group!r}", reason=Failure.NOT_FOUND)
            record["metadata"].update(items)
            for key in [k for k, v in items.items() if v == ""]:
                del record["metadata"][key]  # an empty value removes the key, as on GCE

    # ------------------------------------------------------------------ the simulated VMs' side (local_vm.py)

    def get_metadata(self, group: str, name: str) -> dict[str, str]:
        """What the VM would read from its metadata server."""
        with self._fleet() as fleet:
            record = fleet.get(group, {}).get(name)
            if record is None:
                raise BackendError(f"instance {name!r} not found in group {group!r}", reason=Failure.NOT_FOUND)
            return dict(record["metadata"])

    def set_labels(self, group: str, name: str, labels: Mapping[str, str]) -> None:
        """Merge labels (the boot agent reports ``garo-state`` this way); unknown names are ignored."""
        with self._fleet() as fleet:
            record = fleet.get(group, {}).get(name)
            if record is not None:
                record["labels"].update(labels)

    def groups(self) -> builtins.list[str]:
        with self._fleet() as fleet:
            return sorted(fleet)


def _check_names(names: Sequence[str]) -> None:
    """Refuse names GCE would refuse, so the demo catches naming bugs the cloud would."""
    for name in names:
        if not INSTANCE_NAME_RE.match(name):
            raise BackendError(
                f"invalid instance name {name!r} (RFC 1035, at most 63 characters)", reason=Failure.INVALID
            )
