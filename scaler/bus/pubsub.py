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
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

import grpc
from google import pubsub_v1 as gapic
from google.api_core import exceptions as gexc
from google.api_core.gapic_v1 import routing_header
from google.cloud import pubsub_v1
from google.pubsub_v1.services.publisher.transports.base import DEFAULT_CLIENT_INFO
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
# Pub/Sub's limits per Publish call (cloud.google.com/pubsub/quotas): 1,000 messages, 10 MB.
_MAX_BATCH_MESSAGES = 1000
_MAX_BATCH_BYTES = 9_000_000  # data; attributes and framing stay well inside the rest
_RAW_MESSAGE = gapic.PubsubMessage.pb()  # the protobuf classes behind the proto-plus types
_RAW_REQUEST = gapic.PublishRequest.pb()
_RAW_RESPONSE = gapic.PublishResponse.pb()
_PUBLISH_METHOD = "/google.pubsub.v1.Publisher/Publish"  # as the generated transport names it
# PublisherClient.publish takes attributes as keyword arguments; these names would collide.
_RESERVED_ATTRIBUTES = frozenset({"topic", "data", "ordering_key", "retry", "timeout"})  # the client's keywords


class _Pending:
    """One message waiting for a Publish call.

    ``wake`` is a lock taken at creation and released once, by whoever has news for the
    message's request thread: its call ended (``message_id`` or ``error`` set), or it
    became the leader. A bare lock is the cheapest way to park and wake a thread.
    """

    __slots__ = ("abandoned", "error", "lead", "message", "message_id", "size", "taken", "wake")

    def __init__(self, message: Any, size: int) -> None:
        self.message = message
        self.size = size
        self.message_id = ""
        self.error: BaseException | None = None
        self.wake = threading.Lock()
        self.wake.acquire()
        self.lead = False  # this thread sends the next Publish call
        self.taken = False  # in a Publish call (on the wire, or done)
        self.abandoned = False  # its publisher stopped waiting before a call took it: later calls leave it out

    @property
    def finished(self) -> bool:
        return bool(self.message_id) or self.error is not None


class PubSubPublisher:
    """Publish to ``projects/<project>/topics/<topic>``; ``publish`` blocks until accepted.

    Group commit, as the embedded bus does it (scaler/bus/sqlite.py): the
    request threads of a worker share Publish calls. A publisher queues its
    message; if no call is on the wire it leads one, sending everything queued
    so far, else it parks until a call carried its message (or it is made the
    next leader: the oldest waiting message leads the next call). While one
    call is on the wire the next batch gathers, with no timer and no wait when
    there is no concurrency, and a parked thread wakes once, with its answer.
    The client library's own batching (``PublisherClient.publish``)
    waits ``max_latency`` before each batch and starts two threads per batch;
    under steady load that cost more latency and CPU than the call itself
    (docs/benchmarks.md, "Webhook at fixed rates").
    """

    def __init__(
        self,
        project: str,
        topic: str,
        *,
        timeout: float = 5.0,
        ready_cache_seconds: float = 5.0,
        client: Any = None,
    ) -> None:
        self.topic_path = f"projects/{project}/topics/{topic}"
        self.timeout = timeout
        self._ready_cache_seconds = ready_cache_seconds
        self._ready_at = float("-inf")
        self._ready = False
        self._client = client
        self._lock = threading.Lock()
        self._queue: deque[_Pending] = deque()  # messages waiting for the next Publish call
        self._queue_lock = threading.Lock()
        self._leading = False  # a request thread is sending a Publish call (under _queue_lock)
        self._metadata = (
            routing_header.to_grpc_metadata((("topic", self.topic_path),)),
            DEFAULT_CLIENT_INFO.to_grpc_metadata(),
        )
        self._publish_rpc: Any = None

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                # The generated client: one Publish RPC per call, no batching threads of its
                # own; it honours PUBSUB_EMULATOR_HOST as the high-level client does.
                self._client = gapic.PublisherClient()
            return self._client

    @property
    def _publish_call(self) -> Any:
        """The Publish method on the client's gRPC channel (plain protobuf in and out)."""
        if self._publish_rpc is None:
            self._publish_rpc = self.client.transport.grpc_channel.unary_unary(
                _PUBLISH_METHOD,
                request_serializer=_RAW_REQUEST.SerializeToString,
                response_deserializer=_RAW_RESPONSE.FromString,
            )
        return self._publish_rpc

    def publish(self, data: bytes, attributes: Mapping[str, str]) -> str:
        """Return the message id once Pub/Sub accepted it; raise BusUnavailable after ``timeout``.

        ValueError (a programming error, not an outage) for attribute names the client reserves.
        """
        clash = _RESERVED_ATTRIBUTES.intersection(attributes)
        if clash:
            raise ValueError(f"attribute names reserved by the Pub/Sub client: {sorted(clash)}")
        if len(data) > _MAX_BATCH_BYTES:
            raise BusUnavailable(f"Pub/Sub rejected the message for {self.topic_path}: {len(data)} bytes is too large")
        # The plain protobuf message, not the proto-plus wrapper: a tenth of the CPU to build.
        message = _RAW_MESSAGE(data=data, attributes=attributes)
        deadline = time.monotonic() + self.timeout

        def attempt() -> str:
            return self._publish_once(_Pending(message, len(data)), deadline)

        try:
            # The first attempt outside tenacity: setting up its loop cost about a quarter of the
            # publisher's CPU per message. After a transient failure the loop starts at once (one quick
            # second attempt), then backs off.
            try:
                return attempt()
            except _TRANSIENT:
                pass

            def give_up(state: RetryCallState) -> NoReturn:
                error = state.outcome.exception() if state.outcome is not None else None
                raise BusUnavailable(f"Pub/Sub did not accept the message for {self.topic_path}: {error!r}") from error

            retrying = Retrying(
                retry=retry_if_exception_type(_TRANSIENT),
                wait=wait_equal_jitter(0.05, 0.5),
                stop=stop_before_delay(max(deadline - time.monotonic(), 0.0)),
                retry_error_callback=give_up,
            )
            return retrying(attempt)
        except gexc.GoogleAPICallError as exc:  # NotFound, PermissionDenied...: will not heal within a request
            raise BusUnavailable(f"Pub/Sub did not accept the message for {self.topic_path}: {exc!r}") from exc

    def _publish_once(self, pending: _Pending, deadline: float) -> str:
        """Queue ``pending`` and wait for its Publish call, leading one if no one else is; its id, or the call's error."""
        with self._queue_lock:
            self._queue.append(pending)
            pending.lead = not self._leading
            self._leading = True
        if not pending.lead:
            self._wait(pending, deadline)
        if pending.lead:
            self._lead(deadline)
        if pending.error is not None:
            raise pending.error
        return pending.message_id

    def _wait(self, pending: _Pending, deadline: float) -> None:
        """Park until ``pending``'s call ended or it was made the leader; TimeoutError if neither in time."""
        if pending.wake.acquire(timeout=max(deadline - time.monotonic(), 0.0)):
            return
        with self._queue_lock:
            if pending.lead or pending.finished:  # woken just as the wait ended
                return
            if not pending.taken:
                pending.abandoned = True
                raise TimeoutError(f"no Publish call carried the message within {self.timeout:g} s")
        # On the wire in another thread's call, whose own timeout ends it: its outcome is ours.
        if not pending.wake.acquire(timeout=self.timeout):
            raise TimeoutError(f"the Publish call carrying the message did not end within {self.timeout:g} s")

    def _lead(self, deadline: float) -> None:
        """Send one Publish call with what is queued (this thread's message first), then hand the lead on.

        The next leader is the oldest message still waiting, so no request thread leads
        more than one call: under steady load each call carries what gathered while the
        previous one was on the wire, and the threads it carried only wake once, with
        their answer.
        """
        try:
            self._send(self._take_batch(), deadline)
        finally:
            with self._queue_lock:
                while self._queue and self._queue[0].abandoned:
                    self._queue.popleft()
                if self._queue:
                    successor = self._queue[0]
                    successor.lead = True
                    successor.wake.release()
                else:
                    self._leading = False

    def _take_batch(self) -> list[_Pending]:
        """What is queued, up to Pub/Sub's limits per call (1,000 messages, 10 MB), oldest first."""
        batch: list[_Pending] = []
        size = 0
        with self._queue_lock:
            while self._queue and len(batch) < _MAX_BATCH_MESSAGES:
                head = self._queue[0]
                if head.abandoned:
                    self._queue.popleft()
                    continue
                if batch and size + head.size > _MAX_BATCH_BYTES:
                    break
                batch.append(self._queue.popleft())
                head.taken = True
                size += head.size
        return batch

    def _send(self, batch: list[_Pending], deadline: float) -> None:
        """One Publish call for ``batch``; every message of it gets the call's outcome.

        The call goes straight to the generated client's gRPC channel with the plain
        protobuf messages and the metadata the client would add: its wrappers
        (proto-plus, retry and timeout objects, a logging interceptor) cost more CPU per
        call than the call itself, and we retry with tenacity anyway. gRPC errors become
        the client's exceptions (``from_grpc_error``), as in its own wrapper.
        """
        try:
            if batch:
                request = _RAW_REQUEST(topic=self.topic_path, messages=[p.message for p in batch])
                try:
                    response = self._publish_call(
                        request, timeout=max(deadline - time.monotonic(), 0.05), metadata=self._metadata
                    )
                except grpc.RpcError as exc:
                    raise gexc.from_grpc_error(exc) from exc
                ids = list(response.message_ids)
                if len(ids) != len(batch):
                    raise BusUnavailable(f"Pub/Sub answered {len(ids)} message ids for {len(batch)} messages")
                for pending, message_id in zip(batch, ids, strict=True):
                    pending.message_id = message_id
        except Exception as exc:  # each publisher decides (retry, or 503) for its own message
            for pending in batch:
                pending.error = exc
        finally:
            for pending in batch:
                if not pending.finished:  # interrupted: outcome unknown
                    pending.error = BusUnavailable(f"publishing to {self.topic_path} was interrupted")
                if not pending.lead:  # the leader is this thread, awake already
                    pending.wake.release()

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
        """Close the client's channel (a publish returns only once sent, so nothing is pending)."""
        if self._client is not None:
            self._client.transport.close()


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
