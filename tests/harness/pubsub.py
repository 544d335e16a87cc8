"""A Pub/Sub server on real gRPC for the real ``google-cloud-pubsub`` client.

No Pub/Sub emulator can be installed here, but the client library honours
``PUBSUB_EMULATOR_HOST``. This module serves the ``google.pubsub.v1`` Publisher
and Subscriber services on a free loopback port, speaking the client library's
own protobuf messages (the library ships no servicer classes, so the methods
are registered with gRPC generic handlers under the same method paths its
transport calls). The rules live in :mod:`tests.harness.pubsub_broker`.

Fixture ``pubsub_emulator``: starts a server, sets ``PUBSUB_EMULATOR_HOST`` and
``PUBSUB_PROJECT_ID`` and yields a :class:`PubSubEmulator` with helpers to
create topics/subscriptions, inspect published messages, push the clock past
ack deadlines, take the server down and bring it back on the same port, and
make the next calls of a method fail with a chosen status code.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import empty_pb2
from google.pubsub_v1.types import pubsub

from tests.harness.pubsub_broker import Broker, Clock, PubSubError

pb = {name: getattr(pubsub, name).pb() for name in pubsub.__all__ if hasattr(getattr(pubsub, name), "pb")}
_MAX_BYTES = 32 * 1024 * 1024  # above Pub/Sub's 10 MB so the broker, not gRPC, rejects big publishes
_STREAM_POLL_S = 0.2


@dataclass(frozen=True)
class PublishedMessage:
    """A message as the server accepted it (what a subscriber would later see)."""

    message_id: str
    data: bytes
    attributes: dict[str, str]
    ordering_key: str


class _Service:
    """The RPC methods: translate requests to broker calls and PubSubError to gRPC statuses."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.faults: dict[str, list[grpc.StatusCode]] = {}
        self.open_streams = 0
        self.lock = threading.Lock()

    def _fault(self, method: str, context: grpc.ServicerContext) -> None:
        with self.lock:
            queue = self.faults.get(method)
            code = queue.pop(0) if queue else None
        if code is not None:
            context.abort(code, f"injected failure of {method}")

    def unary(self, method: str, fn: Callable[[Any, grpc.ServicerContext], Any]) -> Callable[..., Any]:
        def handler(request: Any, context: grpc.ServicerContext) -> Any:
            self._fault(method, context)
            try:
                return fn(request, context)
            except PubSubError as exc:
                context.abort(exc.code, str(exc))

        return handler

    def pull(self, req: Any, context: grpc.ServicerContext) -> Any:
        if req.max_messages <= 0:
            raise PubSubError(grpc.StatusCode.INVALID_ARGUMENT, "max_messages must be positive")
        remaining = context.time_remaining()
        wait = 0.0 if req.return_immediately else min(remaining - 0.05 if remaining else 10.0, 10.0)
        got = self.broker.wait_lease(req.subscription, req.max_messages, time.monotonic() + wait)
        return pb["PullResponse"](received_messages=got)

    def streaming_pull(self, requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
        self._fault("StreamingPull", context)
        first = next(requests, None)
        if first is None or not first.subscription:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "The first request must name a subscription")
        if not 10 <= first.stream_ack_deadline_seconds <= 600:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "stream_ack_deadline_seconds must be 10..600")
        name, deadline, closed = first.subscription, [first.stream_ack_deadline_seconds], threading.Event()
        try:
            props = pb["StreamingPullResponse"].SubscriptionProperties(
                message_ordering_enabled=self.broker.get_subscription(name).proto.enable_message_ordering
            )
            self._stream_acks(name, first)
        except PubSubError as exc:
            context.abort(exc.code, str(exc))

        def read() -> None:  # acks, modacks and heartbeats arrive while we stream messages out
            try:
                for req in requests:
                    deadline[0] = req.stream_ack_deadline_seconds or deadline[0]
                    self._stream_acks(name, req)
            except (grpc.RpcError, PubSubError, ValueError):
                pass
            finally:
                closed.set()
                self.broker.wake()

        threading.Thread(target=read, name="pubsub-fake-stream", daemon=True).start()
        alive = lambda: not closed.is_set() and context.is_active()  # noqa: E731
        with self.lock:
            self.open_streams += 1
        try:
            while alive():
                try:
                    got = self.broker.wait_lease(name, 100, time.monotonic() + _STREAM_POLL_S, deadline[0], alive)
                except PubSubError as exc:
                    context.abort(exc.code, str(exc))
                if got:
                    yield pb["StreamingPullResponse"](received_messages=got, subscription_properties=props)
        finally:
            with self.lock:
                self.open_streams -= 1

    def _stream_acks(self, name: str, req: Any) -> None:
        if len(req.modify_deadline_seconds) != len(req.modify_deadline_ack_ids):
            raise PubSubError(grpc.StatusCode.INVALID_ARGUMENT, "modify_deadline lists differ in length")
        if req.ack_ids:
            self.broker.acknowledge(name, req.ack_ids)
        for ack_id, seconds in zip(req.modify_deadline_ack_ids, req.modify_deadline_seconds, strict=True):
            self.broker.modify_ack_deadline(name, [ack_id], seconds)

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        b, empty = self.broker, empty_pb2.Empty

        def rpc(method: str, req: str, resp: Any, fn: Callable[[Any], Any]) -> grpc.RpcMethodHandler:
            call = self.pull if method == "Pull" else lambda request, _context: fn(request)
            return grpc.unary_unary_rpc_method_handler(
                self.unary(method, call),
                request_deserializer=pb[req].FromString,
                response_serializer=resp.SerializeToString,
            )

        publisher = {
            "CreateTopic": rpc("CreateTopic", "Topic", pb["Topic"], b.create_topic),
            "GetTopic": rpc("GetTopic", "GetTopicRequest", pb["Topic"], lambda r: b.get_topic(r.topic)),
            "DeleteTopic": rpc(
                "DeleteTopic", "DeleteTopicRequest", empty, lambda r: b.delete_topic(r.topic) or empty()
            ),
            "Publish": rpc(
                "Publish",
                "PublishRequest",
                pb["PublishResponse"],
                lambda r: pb["PublishResponse"](message_ids=b.publish(r.topic, r.messages)),
            ),
        }
        subscriber = {
            "CreateSubscription": rpc("CreateSubscription", "Subscription", pb["Subscription"], b.create_subscription),
            "GetSubscription": rpc(
                "GetSubscription",
                "GetSubscriptionRequest",
                pb["Subscription"],
                lambda r: b.get_subscription(r.subscription).proto,
            ),
            "DeleteSubscription": rpc(
                "DeleteSubscription",
                "DeleteSubscriptionRequest",
                empty,
                lambda r: b.delete_subscription(r.subscription) or empty(),
            ),
            "Pull": rpc("Pull", "PullRequest", pb["PullResponse"], lambda r: None),
            "Acknowledge": rpc(
                "Acknowledge",
                "AcknowledgeRequest",
                empty,
                lambda r: b.acknowledge(r.subscription, r.ack_ids) or empty(),
            ),
            "ModifyAckDeadline": rpc(
                "ModifyAckDeadline",
                "ModifyAckDeadlineRequest",
                empty,
                lambda r: b.modify_ack_deadline(r.subscription, r.ack_ids, r.ack_deadline_seconds) or empty(),
            ),
            "StreamingPull": grpc.stream_stream_rpc_method_handler(
                self.streaming_pull,
                request_deserializer=pb["StreamingPullRequest"].FromString,
                response_serializer=pb["StreamingPullResponse"].SerializeToString,
            ),
        }
        return [
            grpc.method_handlers_generic_handler("google.pubsub.v1.Publisher", publisher),
            grpc.method_handlers_generic_handler("google.pubsub.v1.Subscriber", subscriber),
        ]


class PubSubEmulator:
    """Handle on one fake Pub/Sub server; state survives stop()/start() like the real service's."""

    def __init__(self, project: str = "garo-test", clock: Clock | None = None) -> None:
        self.project = project
        self.clock = clock or Clock()
        self.broker = Broker(self.clock)
        self.service = _Service(self.broker)
        self.port = 0
        self._server: grpc.Server | None = None
        self._executor = ThreadPoolExecutor(max_workers=1)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        """Serve (again) on the same port, so clients configured with ``host`` reconnect."""
        self._executor = ThreadPoolExecutor(max_workers=32, thread_name_prefix="pubsub-fake")
        server = grpc.server(
            self._executor,
            options=[("grpc.max_receive_message_length", _MAX_BYTES), ("grpc.max_send_message_length", _MAX_BYTES)],
        )
        server.add_generic_rpc_handlers(self.service.handlers())
        self.port = server.add_insecure_port(self.host)
        if not self.port:
            raise RuntimeError("could not bind the fake Pub/Sub server")
        server.start()
        self._server = server

    def stop(self) -> None:
        """Simulate "bus down": connections are refused until start()."""
        if self._server is not None:
            self._server.stop(grace=0).wait()
            self._server = None
            self._executor.shutdown(wait=False, cancel_futures=True)  # no idle threads pile up across tests
            self.broker.wake()

    @contextmanager
    def down(self) -> Iterator[None]:
        self.stop()
        try:
            yield
        finally:
            self.start()

    def fail_next(self, method: str, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE, times: int = 1) -> None:
        """Make the next ``times`` calls of ``method`` (e.g. "Publish") fail with ``code``."""
        with self.service.lock:
            self.service.faults.setdefault(method, []).extend([code] * times)

    def wait_streams_closed(self, timeout: float = 5.0) -> None:
        """Wait until the server has seen every StreamingPull end (a closed client is not instant)."""
        end = time.monotonic() + timeout
        while self.service.open_streams and time.monotonic() < end:
            time.sleep(0.02)
        if self.service.open_streams:
            raise TimeoutError(f"{self.service.open_streams} StreamingPull streams still open")

    def advance(self, seconds: float) -> None:
        """Move the server's clock forward (ack deadlines expire without waiting)."""
        self.clock.advance(seconds)

    def topic_path(self, topic_id: str) -> str:
        return f"projects/{self.project}/topics/{topic_id}"

    def subscription_path(self, subscription_id: str) -> str:
        return f"projects/{self.project}/subscriptions/{subscription_id}"

    def create_topic(self, topic_id: str) -> str:
        return self.broker.create_topic(pb["Topic"](name=self.topic_path(topic_id))).name

    def create_subscription(
        self,
        subscription_id: str,
        topic_id: str,
        *,
        filter: str = "",
        ack_deadline_seconds: int = 10,
        dead_letter_topic_id: str | None = None,
        max_delivery_attempts: int = 5,
        enable_message_ordering: bool = False,
    ) -> str:
        """Same validation as CreateSubscription over the wire (raises PubSubError)."""
        sub = pb["Subscription"](
            name=self.subscription_path(subscription_id),
            topic=self.topic_path(topic_id),
            filter=filter,
            ack_deadline_seconds=ack_deadline_seconds,
            enable_message_ordering=enable_message_ordering,
        )
        if dead_letter_topic_id:
            sub.dead_letter_policy.dead_letter_topic = self.topic_path(dead_letter_topic_id)
            sub.dead_letter_policy.max_delivery_attempts = max_delivery_attempts
        return self.broker.create_subscription(sub).name

    def published(self, topic_id: str) -> list[PublishedMessage]:
        """Every message the topic accepted, in order."""
        with self.broker.cond:
            return [
                PublishedMessage(m.message_id, m.data, dict(m.attributes), m.ordering_key)
                for m in self.broker.published.get(self.topic_path(topic_id), [])
            ]

    def unacked(self, subscription_id: str) -> int:
        """Messages the subscription still holds (unacknowledged = still to do)."""
        with self.broker.cond:
            return len(self.broker.get_subscription(self.subscription_path(subscription_id)).pending)


@pytest.fixture
def pubsub_emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[PubSubEmulator]:
    """A running fake Pub/Sub; the real client finds it through PUBSUB_EMULATOR_HOST."""
    emulator = PubSubEmulator()
    emulator.start()
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", emulator.host)
    monkeypatch.setenv("PUBSUB_PROJECT_ID", emulator.project)
    try:
        yield emulator
    finally:
        emulator.stop()
