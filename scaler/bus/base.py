"""The event bus between the webhook and the agents.

Two implementations share this contract: Google Pub/Sub (production) and an
embedded SQLite bus (local development, ``make demo``). Both are at-least-once:
a pulled message is leased, not removed; it comes back after its ack deadline
unless acknowledged, and goes to the dead-letter store after N deliveries. The
agent acknowledges only once a message's effect is durable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol


class BusUnavailable(RuntimeError):
    """The bus did not accept or return messages; the caller should retry later.

    ``contended``: the bus is there but another writer holds it (a lock), which
    passes in moments; the webhook then stays ready (leaving the load balancer
    would turn GitHub's retryable 503 into connection errors). Anything else
    (a full disk, an unreachable topic) marks the webhook not ready for a while.
    """

    def __init__(self, message: str, *, contended: bool = False) -> None:
        super().__init__(message)
        self.contended = contended


@dataclass(frozen=True)
class Message:
    """A message as a subscriber sees it."""

    ack_id: str
    message_id: str
    data: bytes
    attributes: Mapping[str, str] = field(default_factory=dict)
    delivery_attempt: int = 1


class Publisher(Protocol):
    def publish(self, data: bytes, attributes: Mapping[str, str]) -> str:
        """Block until the bus accepted the message; return its id. Raise BusUnavailable."""
        ...

    def ready(self) -> bool:
        """True when the bus can be reached (used by /readyz)."""
        ...


class Subscriber(Protocol):
    def pull(self, max_messages: int = 100, timeout: float = 1.0) -> Sequence[Message]:
        """Lease up to max_messages; may return fewer (or none) after timeout seconds."""
        ...

    def ack(self, ack_ids: Sequence[str]) -> None:
        """The messages' effects are durable: never deliver them again."""
        ...

    def modify_ack_deadline(self, ack_ids: Sequence[str], seconds: int) -> None:
        """Extend a lease (still working) or, with 0, hand the messages back now."""
        ...
