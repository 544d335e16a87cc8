"""The fake Pub/Sub must reject what Pub/Sub rejects and deliver the way Pub/Sub delivers.

Everything here goes through the real google-cloud-pubsub client on the wire,
so a test that passes against the fake exercises the same requests production
sends. If the fake accepted anything, the bus tests built on it would prove nothing.
"""

from __future__ import annotations

import threading

import pytest
from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1
from google.pubsub_v1 import PublisherClient as GapicPublisher

from tests.harness.pubsub import PubSubEmulator


@pytest.fixture
def clients(pubsub_emulator: PubSubEmulator):
    publisher = pubsub_v1.PublisherClient(batch_settings=pubsub_v1.types.BatchSettings(max_latency=0.01))
    subscriber = pubsub_v1.SubscriberClient()
    yield publisher, subscriber
    publisher.stop()
    subscriber.close()


@pytest.fixture
def topic(pubsub_emulator: PubSubEmulator) -> str:
    return pubsub_emulator.create_topic("jobs")


def pull(subscriber, emu: PubSubEmulator, sub_id: str, n: int = 10) -> list:
    response = subscriber.pull(subscription=emu.subscription_path(sub_id), max_messages=n, timeout=5)
    return list(response.received_messages)


# -- what Pub/Sub rejects ------------------------------------------------------


def test_publish_to_missing_topic_is_not_found(pubsub_emulator, clients):
    publisher, _ = clients
    with pytest.raises(gexc.NotFound):
        publisher.publish(pubsub_emulator.topic_path("nope"), b"x").result(timeout=10)


def test_duplicate_topic_already_exists(pubsub_emulator, clients, topic):
    publisher, _ = clients
    with pytest.raises(gexc.AlreadyExists):
        publisher.create_topic(name=topic)


def test_names_follow_pubsub_rules(pubsub_emulator, clients):
    publisher, _ = clients
    for bad in ("ab", "1jobs", "goog-jobs", "jobs/x"):
        with pytest.raises(gexc.InvalidArgument):
            publisher.create_topic(name=f"projects/{pubsub_emulator.project}/topics/{bad}")


@pytest.mark.parametrize(
    "bad_filter",
    [
        'attributes.department == "ci"',  # no == in the language
        "attributes.department = ci",  # values are quoted strings
        'attributes.a = "1" AND attributes.b = "2" OR attributes:c',  # AND/OR mixed without parentheses
        'attributes.a = "1" and attributes:b',  # operators are upper case
        '(attributes.a = "1"',
        "hasPrefix(attributes.a)",
        "x" * 257,
    ],
)
def test_invalid_filter_is_rejected_and_nothing_created(pubsub_emulator, clients, topic, bad_filter):
    _, subscriber = clients
    name = pubsub_emulator.subscription_path("dept-ci")
    with pytest.raises(gexc.InvalidArgument):
        subscriber.create_subscription(request={"name": name, "topic": topic, "filter": bad_filter})
    with pytest.raises(gexc.NotFound):
        subscriber.get_subscription(subscription=name)


@pytest.mark.parametrize("seconds", [5, 9, 601])
def test_ack_deadline_out_of_range_is_rejected(pubsub_emulator, clients, topic, seconds):
    _, subscriber = clients
    with pytest.raises(gexc.InvalidArgument):
        subscriber.create_subscription(
            request={"name": pubsub_emulator.subscription_path("s-x"), "topic": topic, "ack_deadline_seconds": seconds}
        )


def test_subscription_defaults_and_bounds_accepted(pubsub_emulator, clients, topic):
    _, subscriber = clients
    made = subscriber.create_subscription(
        request={"name": pubsub_emulator.subscription_path("s-default"), "topic": topic}
    )
    assert made.ack_deadline_seconds == 10
    for seconds in (10, 600):
        name = pubsub_emulator.subscription_path(f"s-{seconds}")
        subscriber.create_subscription(request={"name": name, "topic": topic, "ack_deadline_seconds": seconds})
    with pytest.raises(gexc.AlreadyExists):
        subscriber.create_subscription(request={"name": pubsub_emulator.subscription_path("s-10"), "topic": topic})
    with pytest.raises(gexc.NotFound):
        subscriber.create_subscription(
            request={"name": pubsub_emulator.subscription_path("s-orphan"), "topic": pubsub_emulator.topic_path("gone")}
        )


@pytest.mark.parametrize("attempts", [4, 101])
def test_dead_letter_attempts_out_of_range_is_rejected(pubsub_emulator, clients, topic, attempts):
    _, subscriber = clients
    dlq = pubsub_emulator.create_topic("jobs-dlq")
    with pytest.raises(gexc.InvalidArgument):
        subscriber.create_subscription(
            request={
                "name": pubsub_emulator.subscription_path("s-dlq"),
                "topic": topic,
                "dead_letter_policy": {"dead_letter_topic": dlq, "max_delivery_attempts": attempts},
            }
        )


def test_message_limits_are_enforced(pubsub_emulator, topic):
    gapic = GapicPublisher()  # the raw API, without the handwritten client's own checks
    with pytest.raises(gexc.InvalidArgument):
        gapic.publish(topic=topic, messages=[{"data": b"x", "attributes": {"k": "v" * 1025}}])
    with pytest.raises(gexc.InvalidArgument):
        gapic.publish(topic=topic, messages=[{"data": b"x" * (10 * 1000 * 1000 + 1)}])
    with pytest.raises(gexc.InvalidArgument):
        gapic.publish(topic=topic, messages=[{"data": b""}])
    with pytest.raises(gexc.InvalidArgument):
        gapic.publish(topic=topic, messages=[{"data": b"x", "attributes": {"googthing": "1"}}])
    assert pubsub_emulator.published("jobs") == []


# -- how Pub/Sub delivers ------------------------------------------------------


def test_each_department_subscription_gets_only_its_messages(pubsub_emulator, clients, topic):
    publisher, subscriber = clients
    pubsub_emulator.create_subscription("dept-ci", "jobs", filter='attributes.department = "ci"')
    pubsub_emulator.create_subscription("dept-web", "jobs", filter='attributes.department = "web"')
    pubsub_emulator.create_subscription(
        "linux-not-ci",
        "jobs",
        filter='(hasPrefix(attributes.group, "linux") OR attributes:urgent) AND NOT attributes.department = "ci"',
    )
    for dept, group in [("ci", "linux-x64"), ("web", "linux-arm"), ("ci", "win"), ("web", "win"), ("data", "mac")]:
        publisher.publish(topic, f"{dept}/{group}".encode(), department=dept, group=group).result(timeout=10)

    def bodies(sub_id: str) -> set[bytes]:
        return {m.message.data for m in pull(subscriber, pubsub_emulator, sub_id)}

    assert bodies("dept-ci") == {b"ci/linux-x64", b"ci/win"}
    assert bodies("dept-web") == {b"web/linux-arm", b"web/win"}
    assert bodies("linux-not-ci") == {b"web/linux-arm"}


def test_unacked_message_is_redelivered_after_its_deadline(pubsub_emulator, clients, topic):
    publisher, subscriber = clients
    pubsub_emulator.create_subscription("dept-ci", "jobs")
    publisher.publish(topic, b"job-1").result(timeout=10)
    (first,) = pull(subscriber, pubsub_emulator, "dept-ci")
    assert (
        subscriber.pull(
            subscription=pubsub_emulator.subscription_path("dept-ci"), max_messages=10, timeout=0.5
        ).received_messages
        == []
    )
    pubsub_emulator.advance(11)
    (again,) = pull(subscriber, pubsub_emulator, "dept-ci")
    assert again.message.message_id == first.message.message_id and again.ack_id != first.ack_id
    subscriber.acknowledge(subscription=pubsub_emulator.subscription_path("dept-ci"), ack_ids=[again.ack_id])
    pubsub_emulator.advance(60)
    assert pubsub_emulator.unacked("dept-ci") == 0


def test_nack_redelivers_now_and_extension_holds(pubsub_emulator, clients, topic):
    publisher, subscriber = clients
    path = pubsub_emulator.create_subscription("dept-ci", "jobs")
    publisher.publish(topic, b"job-1").result(timeout=10)
    (first,) = pull(subscriber, pubsub_emulator, "dept-ci")
    subscriber.modify_ack_deadline(subscription=path, ack_ids=[first.ack_id], ack_deadline_seconds=0)
    (again,) = pull(subscriber, pubsub_emulator, "dept-ci")
    assert again.message.data == b"job-1"
    subscriber.modify_ack_deadline(subscription=path, ack_ids=[again.ack_id], ack_deadline_seconds=120)
    pubsub_emulator.advance(60)  # past the subscription's 10 s, inside the extension
    assert subscriber.pull(subscription=path, max_messages=10, timeout=0.5).received_messages == []
    with pytest.raises(gexc.InvalidArgument):
        subscriber.modify_ack_deadline(subscription=path, ack_ids=[again.ack_id], ack_deadline_seconds=601)
    with pytest.raises(gexc.InvalidArgument):
        subscriber.acknowledge(subscription=path, ack_ids=["not-an-ack-id"])


def test_dead_letter_after_max_attempts(pubsub_emulator, clients, topic):
    publisher, subscriber = clients
    pubsub_emulator.create_topic("jobs-dlq")
    pubsub_emulator.create_subscription("dlq-reader", "jobs-dlq")
    path = pubsub_emulator.create_subscription(
        "dept-ci", "jobs", dead_letter_topic_id="jobs-dlq", max_delivery_attempts=5
    )
    publisher.publish(topic, b"poison", department="ci").result(timeout=10)
    attempts = []
    for _ in range(5):
        (m,) = pull(subscriber, pubsub_emulator, "dept-ci")
        attempts.append(m.delivery_attempt)
        subscriber.modify_ack_deadline(subscription=path, ack_ids=[m.ack_id], ack_deadline_seconds=0)
    assert attempts == [1, 2, 3, 4, 5]
    assert subscriber.pull(subscription=path, max_messages=10, timeout=0.5).received_messages == []
    (dead,) = pull(subscriber, pubsub_emulator, "dlq-reader")
    assert dead.message.data == b"poison"
    assert dead.message.attributes["department"] == "ci"
    assert dead.message.attributes["CloudPubSubDeadLetterSourceDeliveryCount"] == "5"
    assert pubsub_emulator.unacked("dept-ci") == 0


def test_ordered_subscription_hands_out_one_message_per_key(pubsub_emulator, clients, topic):
    _, subscriber = clients
    publisher = pubsub_v1.PublisherClient(
        publisher_options=pubsub_v1.types.PublisherOptions(enable_message_ordering=True)
    )
    path = pubsub_emulator.create_subscription("dept-ci", "jobs", enable_message_ordering=True)
    for body in (b"queued", b"in_progress", b"completed"):
        publisher.publish(topic, body, ordering_key="job-7").result(timeout=10)
    seen = []
    for _ in range(3):
        (m,) = pull(subscriber, pubsub_emulator, "dept-ci")
        seen.append(m.message.data)
        assert m.message.ordering_key == "job-7"
        subscriber.acknowledge(subscription=path, ack_ids=[m.ack_id])
    assert seen == [b"queued", b"in_progress", b"completed"]
    publisher.stop()


def test_streaming_pull_with_the_real_subscriber(pubsub_emulator, clients, topic):
    publisher, subscriber = clients
    path = pubsub_emulator.create_subscription("dept-ci", "jobs", filter='attributes.department = "ci"')
    received: list[tuple[bytes, int]] = []
    done = threading.Event()
    nacked_once: set[bytes] = set()

    def callback(message) -> None:
        received.append((message.data, message.delivery_attempt or 0))
        if message.data == b"job-2" and message.data not in nacked_once:
            nacked_once.add(message.data)
            message.nack()  # handed back at once, comes round again on the stream
            return
        message.ack()
        if sum(1 for d, _ in received if d == b"job-2") == 2 and len(received) == 4:
            done.set()

    future = subscriber.subscribe(path, callback)
    for i in (1, 2, 3):
        publisher.publish(topic, f"job-{i}".encode(), department="ci").result(timeout=10)
    publisher.publish(topic, b"other", department="web").result(timeout=10)
    try:
        assert done.wait(timeout=20), received
    finally:
        future.cancel()
        future.result(timeout=10)
    pubsub_emulator.wait_streams_closed()
    assert sorted(d for d, _ in received) == [b"job-1", b"job-2", b"job-2", b"job-3"]
    assert pubsub_emulator.unacked("dept-ci") == 0


def test_streaming_pull_on_missing_subscription_fails_the_future(pubsub_emulator, clients):
    _, subscriber = clients
    future = subscriber.subscribe(pubsub_emulator.subscription_path("missing"), lambda m: m.ack())
    with pytest.raises(gexc.NotFound):
        future.result(timeout=20)


def test_injected_unavailable_is_retried_by_the_client(pubsub_emulator, clients, topic):
    publisher, _ = clients
    pubsub_emulator.fail_next("Publish", times=2)
    assert publisher.publish(topic, b"x").result(timeout=20)
    assert [m.data for m in pubsub_emulator.published("jobs")] == [b"x"]


def test_filter_parser_matches_pubsub_semantics():
    from tests.harness.pubsub_filter import compile_filter

    f = compile_filter('attributes.a != "1" AND NOT (attributes:b OR hasPrefix(attributes.`c.d`, "x"))')
    assert f({"a": "2"}) and f({}) and f({"c.d": "yx"})
    assert not f({"a": "1"}) and not f({"b": ""}) and not f({"c.d": "xy"})
    assert compile_filter("")({"anything": "1"})
