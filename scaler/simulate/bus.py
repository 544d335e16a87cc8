"""An in-memory subscription on the virtual clock, with the semantics of the real ones.

Pulled messages are leased and come back when the lease runs out unless
acknowledged; an ack for a lease that already ran out is ignored; a deadline of
0 hands a message back at once. That is the Subscriber contract the agent is
written against (scaler/bus/base.py), so the agent sees the same at-least-once
delivery it sees from Pub/Sub or the embedded bus.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from scaler.bus.base import Message


@dataclass
class LeasedMessage:
    id: str
    data: bytes
    attributes: dict[str, str]
    lease_until: float = 0.0
    token: str = ""
    attempts: int = 0


class SimBus:
    def __init__(self, clock: Callable[[], float], lease: float = 60.0) -> None:
        self.clock = clock
        self.lease = lease
        self.entries: dict[str, LeasedMessage] = {}
        self.published = 0
        self._ids = itertools.count(1)

    def publish(self, data: bytes, attributes: Mapping[str, str]) -> str:
        """Store one message (the Publisher side of the contract); its id."""
        mid = str(next(self._ids))
        self.entries[mid] = LeasedMessage(mid, bytes(data), dict(attributes))
        return mid

    def publish_event(self, department: str, group: str, action: str, payload: dict[str, Any]) -> None:
        """What the webhook publishes for one ``workflow_job`` delivery."""
        self.published += 1
        job_id = str(payload["workflow_job"]["id"])
        attributes = {"department": department, "group": group, "action": action, "job_id": job_id}
        attributes["delivery"] = f"{job_id}-{action}-{self.published}"
        self.publish(json.dumps(payload).encode(), attributes)

    def ready_count(self) -> int:
        now = self.clock()
        return sum(1 for e in self.entries.values() if e.lease_until <= now)

    def next_lease_end(self) -> float | None:
        """When the earliest leased message comes back (the agent must look again then)."""
        now = self.clock()
        later = [e.lease_until for e in self.entries.values() if e.lease_until > now]
        return min(later) if later else None

    # ------------------------------------------------------------------ Subscriber

    def ready(self) -> bool:
        return True

    def _due(self, now: float) -> Iterator[LeasedMessage]:
        """Messages not leased, in the order a pull takes them (publish order; a subclass may reorder)."""
        return (e for e in self.entries.values() if e.lease_until <= now)

    def pull(self, max_messages: int = 100, timeout: float = 1.0) -> Sequence[Message]:
        now = self.clock()
        out: list[Message] = []
        for entry in itertools.islice(self._due(now), max_messages):
            entry.attempts += 1
            entry.lease_until = now + self.lease
            entry.token = f"{entry.id}:{entry.attempts}"
            out.append(Message(entry.token, entry.id, entry.data, dict(entry.attributes), entry.attempts))
        return out

    def _entry(self, ack_id: str) -> LeasedMessage | None:
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
