"""Google Pub/Sub implementation of the bus contract (scaler/bus/base.py).

The webhook publishes one message per ``workflow_job`` event, unordered:
GitHub does not order its deliveries and several workers publish side by side,
so an ordering key would order nothing that matters, and on an ordered
subscription a ``queued`` message the agent holds for capacity would block its
job's ``completed`` (scaler/webhook/app.py; the agent copes with any order).
A webhook must answer GitHub within seconds, so we publish with ``retry=None``
and retry with tenacity (backoff with jitter) until a bounded deadline.

Clients are created lazily (constructing a publisher needs no credentials yet)
and belong to the instance: no import-time side effects, no globals.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_before_delay

from scaler.bus.base import BusUnavailable, Message
from scaler.retries import wait_equal_jitter

# Errors worth another attempt before giving up; anything else (NotFound,
# PermissionDenied, InvalidArgument) will not heal within a webhook request.
_TRANSIENT = (
    gexc.ServiceUnavailable,
    gexc.DeadlineExceeded,
    gexc.InternalServerError,
    gexc.Aborted,
    gexc.TooManyRequests,
    TimeoutError,
)
_ACK_CHUNK = 1000
# PublisherClient.publish takes attributes as keyword arguments; these names would collide.
_RESERVED_ATTRIBUTES = frozenset({"topic", "data", "ordering_key", "retry", "timeout"})  # the client's keywords


class PubSubPublisher:
    """Publish to ``projects/<project>/topics/<topic>``; ``publish`` blocks until accepted."""

    def __init__(
        self,
        project: str,
        topic: str,
        *,
        timeout: float = 5.0,
        max_latency: float = 0.005,
        ready_cache_seconds: float = 5.0,
        client: Any = None,
    ) -> None:
        self.topic_path = f"projects/{project}/topics/{topic}"
        self.timeout = timeout
        self._max_latency = max_latency
        self._ready_cache_seconds = ready_cache_seconds
        self._ready_at = float("-inf")
        self._ready = False
        self._client = client
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = pubsub_v1.PublisherClient(
                    # Small batches, short latency: each webhook request waits for its message.
                    batch_settings=pubsub_v1.types.BatchSettings(
                        max_messages=100, max_bytes=1_000_000, max_latency=self._max_latency
                    ),
                )
            return self._client

    def publish(self, data: bytes, attributes: Mapping[str, str]) -> str:
        """Return the message id once Pub/Sub accepted it; raise BusUnavailable after ``timeout``.

        ValueError (a programming error, not an outage) for attribute names the client reserves.
        """
        clash = _RESERVED_ATTRIBUTES.intersection(attributes)
        if clash:
            raise ValueError(f"attribute names reserved by the Pub/Sub client: {sorted(clash)}")
        deadline = time.monotonic() + self.timeout

        def attempt() -> str:
            remaining = max(deadline - time.monotonic(), 0.05)
            try:
                future = self.client.publish(self.topic_path, data, retry=None, timeout=remaining, **attributes)
                return str(future.result(timeout=remaining + 0.5))
            except (ValueError, RuntimeError) as exc:  # message too large, client stopped
                raise BusUnavailable(f"Pub/Sub rejected the message for {self.topic_path}: {exc}") from exc

        def give_up(state: RetryCallState) -> NoReturn:
            error = state.outcome.exception() if state.outcome is not None else None
            raise BusUnavailable(f"Pub/Sub did not accept the message for {self.topic_path}: {error!r}") from error

        retrying = Retrying(
            retry=retry_if_exception_type(_TRANSIENT),
            wait=wait_equal_jitter(0.05, 0.5),
            stop=stop_before_delay(self.timeout),
            retry_error_callback=give_up,
        )
        try:
            return retrying(attempt)
        except gexc.GoogleAPICallError as exc:  # NotFound, PermissionDenied...: will not heal within a request
            raise BusUnavailable(f"Pub/Sub did not accept the message for {self.topic_path}: {exc!r}") from exc

    def ready(self) -> bool:
        """True if the topic answered GetTopic recently (cached so /readyz stays cheap)."""
        now = time.monotonic()
        if now - self._ready_at < self._ready_cache_seconds:
            return self._ready
        try:
            self.client.get_topic(topic=self.topic_path, retry=None, timeout=min(self.timeout, 2.0))
            self._ready = True
        except gexc.GoogleAPICallError:
            self._ready = False
        self._ready_at = time.monotonic()
        return self._ready

    def close(self) -> None:
        """Flush pending batches and stop the client's threads."""
        if self._client is not None:
            self._client.stop()


class PubSubSubscriber:
    """Synchronous pull from ``projects/<project>/subscriptions/<subscription>``.

    The agent pulls, works, then acks only once the effect is durable; a plain
    pull loop makes that explicit (no callback threads holding leases for us).
    """

    def __init__(self, project: str, subscription: str, *, timeout: float = 10.0, client: Any = None) -> None:
        self.subscription_path = f"projects/{project}/subscriptions/{subscription}"
        self.timeout = timeout
        self._client = client
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = pubsub_v1.SubscriberClient()
            return self._client

    def pull(self, max_messages: int = 100, timeout: float = 1.0) -> Sequence[Message]:
        """Lease up to max_messages; an empty list when nothing arrived within ``timeout``."""
        try:
            response = self.client.pull(
                request={"subscription": self.subscription_path, "max_messages": max_messages},
                retry=None,
                timeout=timeout,
            )
        except gexc.DeadlineExceeded:
            return []
        except gexc.GoogleAPICallError as exc:
            raise BusUnavailable(f"pull from {self.subscription_path} failed: {exc!r}") from exc
        return [
            Message(
                ack_id=rm.ack_id,
                message_id=rm.message.message_id,
                data=bytes(rm.message.data),
                attributes=dict(rm.message.attributes),
                # Pub/Sub counts attempts only with a dead-letter policy; otherwise 0 means "unknown".
                delivery_attempt=max(1, rm.delivery_attempt),
            )
            for rm in response.received_messages
        ]

    def ack(self, ack_ids: Sequence[str]) -> None:
        for chunk in _chunks(ack_ids):
            self._call("acknowledge", subscription=self.subscription_path, ack_ids=chunk)

    def modify_ack_deadline(self, ack_ids: Sequence[str], seconds: int) -> None:
        if not 0 <= seconds <= 600:
            raise ValueError("ack deadline must be 0..600 seconds")
        for chunk in _chunks(ack_ids):
            self._call(
                "modify_ack_deadline", subscription=self.subscription_path, ack_ids=chunk, ack_deadline_seconds=seconds
            )

    def _call(self, method: str, **kwargs: Any) -> None:
        try:
            getattr(self.client, method)(**kwargs, retry=None, timeout=self.timeout)
        except gexc.GoogleAPICallError as exc:
            raise BusUnavailable(f"{method} on {self.subscription_path} failed: {exc!r}") from exc

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def _chunks(ack_ids: Sequence[str]) -> list[list[str]]:
    ids = list(ack_ids)
    return [ids[i : i + _ACK_CHUNK] for i in range(0, len(ids), _ACK_CHUNK)]
