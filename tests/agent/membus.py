"""An in-memory at-least-once bus with the faults a real one has.

The simulator's bus (scaler/simulate/bus.py: leases, redelivery after the
lease, stale acks ignored, the Subscriber contract) plus what tests inject:
duplicated messages, out-of-order delivery and lost events (GitHub does not
redeliver every webhook), all driven by a seeded RNG.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from scaler.simulate.bus import LeasedMessage, SimBus


class MemoryBus(SimBus):
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
        super().__init__(clock, lease)
        self.rng = rng or random.Random(0)
        self.duplicate, self.drop, self.drop_actions, self.shuffle = duplicate, drop, drop_actions, shuffle
        self.dropped: list[dict[str, str]] = []

    def publish(self, data: bytes, attributes: Mapping[str, str]) -> str:
        self.published += 1
        if attributes.get("action") in self.drop_actions and self.rng.random() < self.drop:
            self.dropped.append(dict(attributes))
            return "dropped"
        copies = 2 if self.rng.random() < self.duplicate else 1
        mid = ""
        for _ in range(copies):
            mid = super().publish(data, attributes)
        return mid

    def publish_event(self, department: str, group: str, action: str, payload: dict[str, Any]) -> None:
        job_id = str(payload["workflow_job"]["id"])
        attrs = {"department": department, "group": group, "action": action, "job_id": job_id}
        attrs["delivery"] = f"{job_id}-{action}-{self.published}"
        self.publish(json.dumps(payload).encode(), attrs)

    def _due(self, now: float) -> Iterator[LeasedMessage]:
        ready = [e for e in self.entries.values() if e.lease_until <= now]
        if self.shuffle:
            self.rng.shuffle(ready)
        return iter(ready)

    def pending(self) -> int:
        return len(self.entries)
