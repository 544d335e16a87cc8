"""PubSubPublisher / PubSubSubscriber against the fake Pub/Sub, through the real client.

What a user notices: the webhook answers only once Pub/Sub has the event; when
Pub/Sub is down the webhook fails fast (a bounded wait, not GitHub's 10 s
timeout); when it comes back, events for the same job flow again; the agent
sees each event until it acknowledges it.
"""

from __future__ import annotations

import threading
import time

import grpc
import pytest

from scaler.bus.base import BusUnavailable, Message, Publisher, Subscriber
from scaler.bus.pubsub import PubSubPublisher, PubSubSubscriber
from tests.harness.pubsub import PubSubEmulator

ATTRS = {"department": "ci", "group": "linux", "action": "queued", "job_id": "42", "delivery": "d-1"}


@pytest.fixture
def bus(pubsub_emulator: PubSubEmulator):
    pubsub_emulator.create_topic("jobs")
    pubsub_emulator.create_subscription("dept-ci", "jobs", filter='attributes.department = "ci"')
    publisher = PubSubPublisher(pubsub_emulator.project, "jobs", timeout=2.0, ready_cache_seconds=0)
    subscriber = PubSubSubscriber(pubsub_emulator.project, "dept-ci", timeout=2.0)
    yield publisher, subscriber
    publisher.close()
    subscriber.close()


def test_implements_the_bus_contract(bus):
    publisher, subscriber = bus
    assert isinstance(publisher, PubSubPublisher) and isinstance(subscriber, PubSubSubscriber)
    _p: Publisher = publisher
    _s: Subscriber = subscriber


def test_publish_returns_once_accepted_with_attributes_and_no_ordering_key(pubsub_emulator, bus):
    publisher, subscriber = bus
    message_id = publisher.publish(b'{"job": 42}', ATTRS)
    (stored,) = pubsub_emulator.published("jobs")
    assert stored.message_id == message_id
    assert stored.attributes == ATTRS and stored.ordering_key == "" and stored.data == b'{"job": 42}'
    (msg,) = subscriber.pull(timeout=2)
    assert msg == Message(ack_id=msg.ack_id, message_id=message_id, data=b'{"job": 42}', attributes=ATTRS)


def test_publish_to_missing_topic_raises_bus_unavailable(pubsub_emulator):
    publisher = PubSubPublisher(pubsub_emulator.project, "no-such-topic", timeout=2.0)
    with pytest.raises(BusUnavailable):
        publisher.publish(b"x", ATTRS)
    publisher.close()


@pytest.mark.timeout(30)  # publish must give up on its own; it never hangs until GitHub's timeout
def test_server_down_raises_then_publishing_works_again(pubsub_emulator, bus):
    publisher, subscriber = bus
    publisher.publish(b"queued", ATTRS)
    pubsub_emulator.stop()
    with pytest.raises(BusUnavailable):
        publisher.publish(b"in_progress", ATTRS)
    assert publisher.ready() is False
    pubsub_emulator.start()
    publisher.timeout = 10.0  # room for gRPC's reconnect backoff
    publisher.publish(b"completed", ATTRS)
    assert [m.data for m in pubsub_emulator.published("jobs")][-1] == b"completed"
    assert publisher.ready() is True


def test_a_rejected_publish_does_not_stop_the_next(pubsub_emulator, bus):
    publisher, _ = bus
    pubsub_emulator.fail_next("Publish", grpc.StatusCode.PERMISSION_DENIED)
    with pytest.raises(BusUnavailable):
        publisher.publish(b"queued", ATTRS)
    publisher.publish(b"queued-again", ATTRS)
    assert [m.data for m in pubsub_emulator.published("jobs")] == [b"queued-again"]


def test_attribute_names_that_clash_with_the_client_are_refused(pubsub_emulator, bus):
    publisher, _ = bus
    with pytest.raises(ValueError):
        publisher.publish(b"x", {**ATTRS, "topic": "other"})
    assert pubsub_emulator.published("jobs") == []


def test_transient_failure_is_retried_within_the_timeout(pubsub_emulator, bus):
    publisher, _ = bus
    pubsub_emulator.fail_next("Publish", grpc.StatusCode.UNAVAILABLE, times=2)
    publisher.publish(b"queued", ATTRS)
    assert [m.data for m in pubsub_emulator.published("jobs")] == [b"queued"]


def test_ready_reflects_topic_reachability(pubsub_emulator, bus):
    publisher, _ = bus
    assert publisher.ready() is True
    missing = PubSubPublisher(pubsub_emulator.project, "no-such-topic", ready_cache_seconds=0)
    assert missing.ready() is False
    cached = PubSubPublisher(pubsub_emulator.project, "jobs", ready_cache_seconds=60)
    assert cached.ready() is True
    pubsub_emulator.stop()
    assert cached.ready() is True  # answered from cache: /readyz does not hammer Pub/Sub
    assert publisher.ready() is False


def test_pull_ack_and_redelivery(pubsub_emulator, bus):
    publisher, subscriber = bus
    publisher.publish(b"job", ATTRS)
    publisher.publish(b"other-dept", {**ATTRS, "department": "web"})
    (msg,) = subscriber.pull(max_messages=10, timeout=2)
    assert msg.data == b"job" and msg.delivery_attempt == 1
    assert subscriber.pull(timeout=0.3) == []  # leased, and the web message is not ours
    pubsub_emulator.advance(11)
    (again,) = subscriber.pull(timeout=2)  # not acked in time: handed out again
    assert again.message_id == msg.message_id
    subscriber.ack([again.ack_id])
    pubsub_emulator.advance(60)
    assert subscriber.pull(timeout=0.3) == []
    assert pubsub_emulator.unacked("dept-ci") == 0


def test_modify_ack_deadline_zero_hands_back_now(bus):
    publisher, subscriber = bus
    publisher.publish(b"job", ATTRS)
    (msg,) = subscriber.pull(timeout=2)
    subscriber.modify_ack_deadline([msg.ack_id], 0)
    (again,) = subscriber.pull(timeout=2)
    assert again.message_id == msg.message_id
    with pytest.raises(ValueError):
        subscriber.modify_ack_deadline([again.ack_id], 601)
    subscriber.ack([])  # nothing to do is not an error


def test_delivery_attempt_counts_with_dead_lettering(pubsub_emulator, bus):
    publisher, _ = bus
    pubsub_emulator.create_topic("jobs-dlq")
    pubsub_emulator.create_subscription("dept-dl", "jobs", dead_letter_topic_id="jobs-dlq", max_delivery_attempts=5)
    subscriber = PubSubSubscriber(pubsub_emulator.project, "dept-dl")
    publisher.publish(b"job", ATTRS)
    seen = []
    for _ in range(5):
        (msg,) = subscriber.pull(timeout=2)
        seen.append(msg.delivery_attempt)
        subscriber.modify_ack_deadline([msg.ack_id], 0)
    assert seen == [1, 2, 3, 4, 5]
    assert subscriber.pull(timeout=0.3) == []  # sixth time round it went to the dead-letter topic
    assert [m.data for m in pubsub_emulator.published("jobs-dlq")] == [b"job"]
    subscriber.close()


def test_subscriber_errors_are_bus_unavailable(pubsub_emulator, bus):
    _, subscriber = bus
    missing = PubSubSubscriber(pubsub_emulator.project, "no-such-sub")
    with pytest.raises(BusUnavailable):
        missing.pull(timeout=1)
    pubsub_emulator.stop()
    with pytest.raises(BusUnavailable):
        subscriber.pull(timeout=1)
    with pytest.raises(BusUnavailable):
        subscriber.ack(["ack-1-1-1"])


def _publish_concurrently(publisher: PubSubPublisher, count: int) -> dict[bytes, str | BaseException]:
    """``count`` publishes released at once from as many threads: data -> message id, or the error raised."""
    outcomes: dict[bytes, str | BaseException] = {}
    start = threading.Barrier(count)

    def publish(data: bytes) -> None:
        start.wait()
        try:
            outcomes[data] = publisher.publish(data, {**ATTRS, "delivery": data.decode()})
        except BusUnavailable as exc:
            outcomes[data] = exc

    threads = [threading.Thread(target=publish, args=(f"d-{i}".encode(),)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return outcomes


def test_concurrent_publishes_each_get_the_id_of_their_own_message(pubsub_emulator, bus):
    """A webhook worker's request threads share Publish calls; each still answers for its own event."""
    publisher, _ = bus
    calls: list[int] = []  # messages per Publish call, as the server received them
    broker_publish = pubsub_emulator.broker.publish

    def counting_publish(topic, messages):
        calls.append(len(messages))
        return broker_publish(topic, messages)

    pubsub_emulator.broker.publish = counting_publish
    outcomes = _publish_concurrently(publisher, 32)
    stored = {m.message_id: m for m in pubsub_emulator.published("jobs")}
    assert len(stored) == 32 and sum(calls) == 32
    assert len(calls) < 32  # messages that waited while a call was on the wire went out together
    for data, message_id in outcomes.items():
        assert isinstance(message_id, str), message_id
        assert stored[message_id].data == data and stored[message_id].attributes["delivery"] == data.decode()


def test_a_refused_shared_call_fails_only_its_own_messages(pubsub_emulator, bus):
    """The Publish call that PERMISSION_DENIED refuses fails the messages it carried (503 for those
    deliveries, GitHub redelivers them); every message answered with an id is on the topic, once."""
    publisher, _ = bus
    pubsub_emulator.fail_next("Publish", grpc.StatusCode.PERMISSION_DENIED)
    outcomes = _publish_concurrently(publisher, 16)
    failed = [data for data, outcome in outcomes.items() if isinstance(outcome, BaseException)]
    assert len(outcomes) == 16 and failed
    stored = pubsub_emulator.published("jobs")
    assert sorted(m.data for m in stored) == sorted(data for data in outcomes if data not in failed)
    assert {m.message_id for m in stored} == {outcomes[m.data] for m in stored}


def test_messages_that_arrive_during_a_call_go_out_together_in_the_next(pubsub_emulator, bus):
    """While one Publish call is on the wire, the messages that arrive wait for it and then share one
    call; each publisher still gets the id of its own message, and none is sent twice."""
    publisher, _ = bus
    calls: list[int] = []
    on_the_wire, release = threading.Event(), threading.Event()
    broker_publish = pubsub_emulator.broker.publish

    def held_publish(topic, messages):
        calls.append(len(messages))
        if len(calls) == 1:  # hold the first call at the server until the others are queued
            on_the_wire.set()
            release.wait(10)
        return broker_publish(topic, messages)

    pubsub_emulator.broker.publish = held_publish
    outcomes: dict[bytes, str] = {}

    def publish(data: bytes) -> None:
        outcomes[data] = publisher.publish(data, {**ATTRS, "delivery": data.decode()})

    first = threading.Thread(target=publish, args=(b"first",))
    first.start()
    assert on_the_wire.wait(10)
    later = [threading.Thread(target=publish, args=(f"later-{i}".encode(),)) for i in range(8)]
    for thread in later:
        thread.start()
    waited = 0
    while len(publisher._queue) < 8 and waited < 1000:  # all eight queued behind the call on the wire
        time.sleep(0.01)
        waited += 1
    release.set()
    for thread in [first, *later]:
        thread.join(10)
    assert calls == [1, 8]
    stored = {m.message_id: m.data for m in pubsub_emulator.published("jobs")}
    assert len(stored) == 9 and {stored[message_id]: message_id for message_id in stored} == outcomes


def test_a_message_whose_publisher_gave_up_while_queued_is_not_sent(pubsub_emulator, bus):
    """A request that timed out waiting behind a stuck call got 503: its message must not be published
    afterwards by the next call (GitHub's redelivery publishes it)."""
    publisher, _ = bus
    on_the_wire, release = threading.Event(), threading.Event()
    broker_publish = pubsub_emulator.broker.publish

    def held_publish(topic, messages):
        if not on_the_wire.is_set():
            on_the_wire.set()
            release.wait(10)
        return broker_publish(topic, messages)

    pubsub_emulator.broker.publish = held_publish
    publisher.timeout = 10.0  # the first call may wait at the server longer than the second request waits
    leader = threading.Thread(target=publisher.publish, args=(b"stuck", ATTRS))
    leader.start()
    assert on_the_wire.wait(10)
    publisher.timeout = 0.5
    with pytest.raises(BusUnavailable):
        publisher.publish(b"gave-up", {**ATTRS, "delivery": "d-2"})  # queued behind the stuck call, times out
    release.set()
    leader.join(10)
    publisher.publish(b"next", {**ATTRS, "delivery": "d-3"})
    assert b"gave-up" not in [m.data for m in pubsub_emulator.published("jobs")]
    assert [m.data for m in pubsub_emulator.published("jobs")][-1] == b"next"
