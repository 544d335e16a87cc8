"""An in-memory at-least-once bus with the faults a real one has.

Same semantics as the Subscriber contract (and Pub/Sub): pulled messages are
leased, come back after the lease unless acknowledged, and a stale ack (lease
already expired and re-leased) is ignored. On top, the test can duplicate
messages, deliver them out of order and lose some (GitHub does not redeliver
every webhook), all driven by a seeded RNG.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from scaler.bus.base import Message


@dataclass
class _Entry:
    id: str
    data: bytes
    attributes: dict[str, str]
    lease_until: float = 0.0
    token: str = ""
    attempts: int = 0


class MemoryBus:
    def __init__(
        self,
        clock: Callable[[], float],
        rng: random.Random | None = None,
        *,
        duplicate: float = 0.0,
        drop: float = 0.0,
        drop_actions: tuple[str, ...] = ("in_progress", "completed"),
        shuffle: bool = False,
        lease: float = 60.0,
    ) -> None:
        self.clock = clock
        self.rng = rng or random.Random(0)
        self.duplicate, self.drop, self.drop_actions, self.shuffle = duplicate, drop, drop_actions, shuffle
        self.lease = lease
        self.entries: dict[str, _Entry] = {}
        self.dropped: list[dict[str, str]] = []
        self._ids = itertools.count(1)
        self.published = 0

    def publish(self, data: bytes, attributes: Mapping[str, str]) -> str:
        self.published += 1
        if attributes.get("action") in self.drop_actions and self.rng.random() < self.drop:
            self.dropped.append(dict(attributes))
            return "dropped"
        copies = 2 if self.rng.random() < self.duplicate else 1
        mid = ""
        for _ in range(copies):
            mid = str(next(self._ids))
            self.entries[mid] = _Entry(mid, data, dict(attributes))
        return mid

    def publish_event(self, department: str, group: str, action: str, payload: dict[str, Any]) -> None:
        job_id = str(payload["workflow_job"]["id"])
        attrs = {"department": department, "group": group, "action": action, "job_id": job_id}
        attrs["delivery"] = f"{job_id}-{action}-{self.published}"
        self.publish(json.dumps(payload).encode(), attrs)

    def ready(self) -> bool:
        return True

    def pull(self, max_messages: int = 100, timeout: float = 1.0) -> Sequence[Message]:
        now = self.clock()
        ready = [e for e in self.entries.values() if e.lease_until <= now]
        if self.shuffle:
            self.rng.shuffle(ready)
        out = []
        for entry in ready[:max_messages]:
            entry.attempts += 1
            entry.lease_until = now + self.lease
            entry.token = f"{entry.id}:{entry.attempts}"
            out.append(Message(entry.token, entry.id, entry.data, dict(entry.attributes), entry.attempts))
        return out

    def _entry(self, ack_id: str) -> _Entry | None:
        entry = self.entries.get(ack_id.split(":")[0])
        return entry if entry is not None and entry.token == ack_id else None

    def ack(self, ack_ids: Sequence[str]) -> None:
        for ack_id in ack_ids:
            if self._entry(ack_id) is not None:
                del self.entries[ack_id.split(":")[0]]

    def modify_ack_deadline(self, ack_ids: Sequence[str], seconds: int) -> None:
        for ack_id in ack_ids:
            entry = self._entry(ack_id)
            if entry is not None:
                entry.lease_until = self.clock() + seconds

    def pending(self) -> int:
        return len(self.entries)
