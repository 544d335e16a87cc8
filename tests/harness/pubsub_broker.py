"""The state behind the fake Pub/Sub server: topics, subscriptions, leases.

Kept free of gRPC so the rules read in one place. It works on the client
library's own protobuf types (``google.pubsub_v1.types`` ``.pb()`` classes), so
what the server stores is exactly what the real client sent. Errors carry the
gRPC status code Pub/Sub would answer with.

Time comes from an injectable :class:`Clock`: real monotonic time plus an
offset that tests push forward, so an ack deadline of 10 s (Pub/Sub's minimum)
expires instantly in a test while the real streaming client's own timers keep
running on real time.
"""

from __future__ import annotations

import itertools
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.pubsub_v1.types import pubsub

from tests.harness.pubsub_filter import FilterError, compile_filter

PubsubMessage = pubsub.PubsubMessage.pb()
ReceivedMessage = pubsub.ReceivedMessage.pb()
Subscription = pubsub.Subscription.pb()

_ID = r"[A-Za-z][A-Za-z0-9\-_.~+%]{2,254}"
TOPIC_RE = re.compile(rf"projects/([^/]+)/topics/({_ID})")
SUB_RE = re.compile(rf"projects/([^/]+)/subscriptions/({_ID})")
ACK_ID_RE = re.compile(r"ack-(\d+)-(\d+)-(\d+)")
DELETED_TOPIC = "_deleted-topic_"
MAX_MESSAGES_PER_PUBLISH = 1000
MAX_REQUEST_BYTES = 10 * 1000 * 1000
MAX_ATTRIBUTES = 100


class PubSubError(Exception):
    """An error the server answers with; ``code`` is the gRPC status Pub/Sub uses."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class Clock:
    """Monotonic seconds plus an offset tests can push forward with advance()."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.listeners: list[Callable[[], None]] = []

    def now(self) -> float:
        return time.monotonic() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds
        for wake in self.listeners:
            wake()


@dataclass
class _Pending:
    """One message in one subscription: available, or leased until ``lease_until``."""

    message: Any  # PubsubMessage protobuf
    deliveries: int = 0
    lease_until: float | None = None
    ack_id: str = ""


@dataclass
class _Sub:
    proto: Any  # Subscription protobuf
    matches: Callable[[Mapping[str, str]], bool]
    number: int
    pending: dict[str, _Pending] = field(default_factory=dict)  # message_id -> entry, publish order
    by_ack_id: dict[str, str] = field(default_factory=dict)  # ack_id -> message_id


def _check_name(regex: re.Pattern[str], name: str, what: str) -> None:
    m = regex.fullmatch(name)
    if m is None or m.group(2).startswith("goog"):
        raise PubSubError(grpc.StatusCode.INVALID_ARGUMENT, f"Invalid {what} name: {name!r}")


class Broker:
    """Topics, subscriptions and leases, guarded by one condition variable."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock or Clock()
        self.cond = threading.Condition()
        self.clock.listeners.append(self.wake)
        self.topics: dict[str, Any] = {}
        self.subs: dict[str, _Sub] = {}
        self.published: dict[str, list[Any]] = {}  # topic name -> every accepted PubsubMessage
        self._ids = itertools.count(1)
        self._sub_numbers = itertools.count(1)

    def wake(self) -> None:
        with self.cond:
            self.cond.notify_all()

    # -- topics --------------------------------------------------------
    def create_topic(self, topic: Any) -> Any:
        _check_name(TOPIC_RE, topic.name, "topic")
        with self.cond:
            if topic.name in self.topics:
                raise PubSubError(grpc.StatusCode.ALREADY_EXISTS, "Topic already exists")
            self.topics[topic.name] = topic
            self.published.setdefault(topic.name, [])
            return topic

    def get_topic(self, name: str) -> Any:
        _check_name(TOPIC_RE, name, "topic")
        with self.cond:
            if name not in self.topics:
                raise PubSubError(grpc.StatusCode.NOT_FOUND, "Topic not found")
            return self.topics[name]

    def delete_topic(self, name: str) -> None:
        self.get_topic(name)
        with self.cond:
            del self.topics[name]
            for sub in self.subs.values():
                if sub.proto.topic == name:
                    sub.proto.topic = DELETED_TOPIC

    def publish(self, topic: str, messages: Iterable[Any]) -> list[str]:
        msgs = list(messages)
        self.get_topic(topic)
        _validate_messages(msgs)
        with self.cond:
            ids = []
            for m in msgs:
                stored = PubsubMessage()
                stored.CopyFrom(m)
                stored.message_id = str(next(self._ids))
                stored.publish_time.GetCurrentTime()
                self.published[topic].append(stored)
                for sub in self.subs.values():
                    if sub.proto.topic == topic and sub.matches(stored.attributes):
                        sub.pending[stored.message_id] = _Pending(stored)
                ids.append(stored.message_id)
            self.cond.notify_all()
            return ids

    # -- subscriptions -------------------------------------------------
    def create_subscription(self, sub: Any) -> Any:
        s = sub  # mutated to carry the defaults, as Pub/Sub's answer does
        _check_name(SUB_RE, s.name, "subscription")
        self.get_topic(s.topic)
        if s.ack_deadline_seconds == 0:
            s.ack_deadline_seconds = 10
        if not 10 <= s.ack_deadline_seconds <= 600:
            raise PubSubError(grpc.StatusCode.INVALID_ARGUMENT, "Invalid ack_deadline_seconds: must be 10..600")
        try:
            matches = compile_filter(s.filter)
        except FilterError as exc:
            raise PubSubError(grpc.StatusCode.INVALID_ARGUMENT, f"Invalid filter: {exc}") from exc
        if s.HasField("dead_letter_policy"):
            dlp = s.dead_letter_policy
            if dlp.max_delivery_attempts == 0:
                dlp.max_delivery_attempts = 5
            if not 5 <= dlp.max_delivery_attempts <= 100:
                raise PubSubError(grpc.StatusCode.INVALID_ARGUMENT, "max_delivery_attempts must be 5..100")
            self.get_topic(dlp.dead_letter_topic)
        with self.cond:
            if s.name in self.subs:
                raise PubSubError(grpc.StatusCode.ALREADY_EXISTS, "Subscription already exists")
            self.subs[s.name] = _Sub(s, matches, next(self._sub_numbers))
            return s

    def get_subscription(self, name: str) -> _Sub:
        _check_name(SUB_RE, name, "subscription")
        with self.cond:
            if name not in self.subs:
                raise PubSubError(grpc.StatusCode.NOT_FOUND, "Subscription does not exist")
            return self.subs[name]

    def delete_subscription(self, name: str) -> None:
        self.get_subscription(name)
        with self.cond:
            del self.subs[name]
            self.cond.notify_all()

    # -- delivery ------------------------------------------------------
    def lease(self, name: str, max_messages: int, deadline_s: int | None = None) -> list[Any]:
        """Lease up to max_messages now (no waiting); the caller holds nothing."""
        with self.cond:
            sub = self.get_subscription(name)
            now = self.clock.now()
            out: list[Any] = []
            blocked_keys: set[str] = set()
            ordered = sub.proto.enable_message_ordering
            dlp = sub.proto.dead_letter_policy if sub.proto.HasField("dead_letter_policy") else None
            for mid, entry in list(sub.pending.items()):
                if len(out) >= max_messages:
                    break
                key = entry.message.ordering_key
                leased = entry.lease_until is not None and entry.lease_until > now
                if ordered and key and (key in blocked_keys or leased):
                    blocked_keys.add(key)  # one message per key in flight, in publish order
                    continue
                if leased:
                    continue
                if dlp is not None and entry.deliveries >= dlp.max_delivery_attempts:
                    self._dead_letter(sub, mid, entry, dlp.dead_letter_topic)
                    continue
                entry.deliveries += 1
                sub.by_ack_id.pop(entry.ack_id, None)
                entry.ack_id = f"ack-{sub.number}-{mid}-{entry.deliveries}"
                sub.by_ack_id[entry.ack_id] = mid
                entry.lease_until = now + (deadline_s or sub.proto.ack_deadline_seconds)
                out.append(
                    ReceivedMessage(
                        ack_id=entry.ack_id,
                        message=entry.message,
                        delivery_attempt=entry.deliveries if dlp is not None else 0,
                    )
                )
                if key:
                    blocked_keys.add(key)
            return out

    def wait_lease(
        self,
        name: str,
        max_messages: int,
        until: float,
        deadline_s: int | None = None,
        alive: Callable[[], bool] = lambda: True,
    ) -> list[Any]:
        """Lease, waiting (real time) until something arrives or ``until`` (time.monotonic) passes.

        ``alive`` is checked under the lock just before leasing, so a stream that
        has closed does not swallow messages until their deadline.
        """
        with self.cond:
            while True:
                got = self.lease(name, max_messages, deadline_s) if alive() else []
                remaining = until - time.monotonic()
                if got or remaining <= 0 or not alive():
                    return got
                self.cond.wait(min(remaining, 0.05))

    def _dead_letter(self, sub: _Sub, mid: str, entry: _Pending, dlq: str) -> None:
        del sub.pending[mid]
        sub.by_ack_id.pop(entry.ack_id, None)
        if dlq not in self.topics:
            return
        fwd = PubsubMessage()
        fwd.CopyFrom(entry.message)
        attrs = fwd.attributes
        attrs["CloudPubSubDeadLetterSourceDeliveryCount"] = str(entry.deliveries)
        attrs["CloudPubSubDeadLetterSourceSubscription"] = SUB_RE.fullmatch(sub.proto.name).group(2)
        attrs["CloudPubSubDeadLetterSourceSubscriptionProject"] = SUB_RE.fullmatch(sub.proto.name).group(1)
        fwd.ClearField("message_id")
        fwd.ClearField("publish_time")
        self.publish(dlq, [fwd])  # the condition's lock is an RLock: re-entry is fine

    def _entries(self, name: str, ack_ids: Iterable[str]) -> tuple[_Sub, list[str]]:
        sub = self.get_subscription(name)
        ids = list(ack_ids)
        if not ids:
            raise PubSubError(grpc.StatusCode.INVALID_ARGUMENT, "ack_ids must not be empty")
        for a in ids:
            if not ACK_ID_RE.fullmatch(a):
                raise PubSubError(grpc.StatusCode.INVALID_ARGUMENT, f"You have passed an invalid ack ID: {a!r}")
        return sub, [sub.by_ack_id[a] for a in ids if a in sub.by_ack_id]

    def acknowledge(self, name: str, ack_ids: Iterable[str]) -> None:
        with self.cond:
            sub, mids = self._entries(name, ack_ids)
            for mid in mids:
                entry = sub.pending.pop(mid)
                sub.by_ack_id.pop(entry.ack_id, None)
            self.cond.notify_all()

    def modify_ack_deadline(self, name: str, ack_ids: Iterable[str], seconds: int) -> None:
        if not 0 <= seconds <= 600:
            raise PubSubError(grpc.StatusCode.INVALID_ARGUMENT, "ack_deadline_seconds must be 0..600")
        with self.cond:
            sub, mids = self._entries(name, ack_ids)
            for mid in mids:
                sub.pending[mid].lease_until = self.clock.now() + seconds if seconds else None
            self.cond.notify_all()


def _validate_messages(msgs: list[Any]) -> None:
    """Reject what Pub/Sub rejects: empty batches, empty messages, oversize data or attributes."""
    if not 1 <= len(msgs) <= MAX_MESSAGES_PER_PUBLISH:
        raise PubSubError(grpc.StatusCode.INVALID_ARGUMENT, "A publish request must contain 1..1000 messages")
    total = sum(m.ByteSize() for m in msgs)
    if total > MAX_REQUEST_BYTES:
        raise PubSubError(grpc.StatusCode.INVALID_ARGUMENT, f"Request payload size {total} exceeds 10MB")
    for m in msgs:
        attrs: Mapping[str, str] = m.attributes
        if not m.data and not attrs:
            raise PubSubError(grpc.StatusCode.INVALID_ARGUMENT, "Some messages contain no data and no attributes")
        if len(attrs) > MAX_ATTRIBUTES:
            raise PubSubError(grpc.StatusCode.INVALID_ARGUMENT, "A message may have at most 100 attributes")
        for k, v in attrs.items():
            if not 0 < len(k.encode()) <= 256 or k.startswith("goog"):
                raise PubSubError(grpc.StatusCode.INVALID_ARGUMENT, f"Invalid attribute key {k[:40]!r}")
            if len(v.encode()) > 1024:
                raise PubSubError(grpc.StatusCode.INVALID_ARGUMENT, f"Attribute {k!r} value exceeds 1024 bytes")
        if len(m.ordering_key.encode()) > 1024:
            raise PubSubError(grpc.StatusCode.INVALID_ARGUMENT, "ordering_key exceeds 1024 bytes")
