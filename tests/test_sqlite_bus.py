"""The embedded bus behaves like Pub/Sub, across processes sharing one file."""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import sqlite3
import time
from pathlib import Path

import pytest

from scaler.bus.base import BusUnavailable
from scaler.bus.sqlite import SqliteBus

CTX = multiprocessing.get_context("spawn")  # nothing inherited: a real separate process


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _attrs(department: str, job: int) -> dict[str, str]:
    return {"department": department, "group": "g", "action": "queued", "job_id": str(job), "delivery": f"d-{job}"}


def test_filtered_subscriptions_share_one_file(tmp_path: Path) -> None:
    path = tmp_path / "bus.db"
    data = SqliteBus(path, subscription="data", filter={"department": "data"})
    web = SqliteBus(path, subscription="web", filter={"department": "web"})
    publisher = SqliteBus(path)
    publisher.publish(b"one", _attrs("data", 1))
    publisher.publish(b"two", _attrs("web", 2))
    publisher.publish(b"three", _attrs("data", 3))
    assert [m.data for m in data.pull(timeout=0)] == [b"one", b"three"]
    assert [m.data for m in web.pull(timeout=0)] == [b"two"]
    late = SqliteBus(path, subscription="late", filter={"department": "data"})
    assert late.pull(timeout=0) == []  # like Pub/Sub: only messages published after it exists
    with pytest.raises(ValueError, match="exists with filter"):
        SqliteBus(path, subscription="web", filter={"department": "data"})


def test_lease_redelivery_stale_ack_and_nack(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "bus.db"
    bus = SqliteBus(path, subscription="s", ack_deadline=10, clock=clock)
    bus.publish(b"job", _attrs("d", 1))
    [first] = bus.pull(timeout=0)
    assert first.delivery_attempt == 1
    assert bus.pull(timeout=0) == []  # leased
    clock.now += 11
    [second] = bus.pull(timeout=0)
    assert (second.message_id, second.delivery_attempt) == (first.message_id, 2)
    bus.ack([first.ack_id])  # the expired lease's ack is ignored: the message is someone else's now
    bus.modify_ack_deadline([second.ack_id], 0)  # hand it back at once
    [third] = bus.pull(timeout=0)
    assert third.delivery_attempt == 3
    bus.modify_ack_deadline([third.ack_id], 60)  # still working: extend
    clock.now += 30
    assert bus.pull(timeout=0) == []
    bus.ack([third.ack_id])
    clock.now += 100
    assert bus.pull(timeout=0) == []


def test_dead_letter_after_max_attempts(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "bus.db"
    bus = SqliteBus(path, subscription="s", ack_deadline=5, max_delivery_attempts=3, clock=clock)
    bus.publish(b"poison", _attrs("d", 1))
    bus.publish(b"fine", _attrs("d", 2))
    attempts = []
    for _ in range(5):
        for message in bus.pull(timeout=0):
            if message.data == b"fine":
                bus.ack([message.ack_id])
            else:
                attempts.append(message.delivery_attempt)
        clock.now += 6
    assert attempts == [1, 2, 3]
    [dead] = bus.dead_letters()
    assert (dead.data, dead.delivery_attempt, dead.attributes["job_id"]) == (b"poison", 3, "1")


def test_same_delivery_is_stored_once(tmp_path: Path) -> None:
    bus = SqliteBus(tmp_path / "bus.db", subscription="s")
    first = bus.publish(b"x", _attrs("d", 1))
    assert bus.publish(b"x", _attrs("d", 1)) == first
    assert bus.publish(b"y", {"department": "d"}) != bus.publish(b"y", {"department": "d"})  # no GUID: no dedup
    assert len(bus.pull(timeout=0)) == 3


def test_locked_file_raises_bus_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "bus.db"
    bus = SqliteBus(path, busy_timeout=0.1)
    assert bus.ready()
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    with pytest.raises(BusUnavailable):
        bus.publish(b"x", _attrs("d", 1))
    blocker.execute("ROLLBACK")
    assert bus.publish(b"x", _attrs("d", 1))
    assert not SqliteBus(tmp_path / "missing" / "deeper" / "bus.db").ready()  # one missing level is created


@pytest.mark.timeout(30)
def test_a_stalled_lock_holder_makes_publish_fail_fast_not_hang(tmp_path: Path) -> None:
    """Another process stuck while holding the bus (Ctrl-Z, debugger): the webhook answers 503 in time."""
    bus = SqliteBus(tmp_path / "bus.db", busy_timeout=0.3)
    holder = os.open(str(tmp_path / "bus.db.lock"), os.O_RDWR | os.O_CREAT)
    fcntl.flock(holder, fcntl.LOCK_EX)  # a second open file description: conflicts like another process
    try:
        with pytest.raises(BusUnavailable, match="locked by another process"):
            bus.publish(b"{}", {"department": "a", "delivery": "d-1"})
    finally:
        fcntl.flock(holder, fcntl.LOCK_UN)
        os.close(holder)
    assert bus.publish(b"{}", {"department": "a", "delivery": "d-1"})  # and works once the holder lets go


def test_purge_keeps_unsettled_messages(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "bus.db"
    bus = SqliteBus(path, subscription="s", retention=60, clock=clock)
    bus.publish(b"done", _attrs("d", 1))
    bus.publish(b"pending", _attrs("d", 2))
    [done, _] = bus.pull(timeout=0)
    bus.ack([done.ack_id])
    clock.now += 120
    assert bus.purge() == 1
    [pending] = bus.pull(timeout=0)
    assert pending.data == b"pending"


# ----------------------------------------------------------------- across processes


def _publish_many(path: str, department: str, count: int) -> None:
    bus = SqliteBus(path)
    for i in range(count):
        bus.publish(f"{department}-{i}".encode(), _attrs(department, i + (1000 if department == "web" else 0)))


def _pull_and_crash(path: str, queue: multiprocessing.Queue) -> None:
    bus = SqliteBus(path, subscription="agent", filter={"department": "data"}, ack_deadline=0.5)
    queue.put([(m.message_id, m.delivery_attempt) for m in bus.pull(max_messages=10, timeout=5)])
    # exits without ack: an agent killed mid-work


def _pull_and_ack(path: str, queue: multiprocessing.Queue) -> None:
    bus = SqliteBus(path, subscription="agent", filter={"department": "data"}, ack_deadline=0.5)
    messages = bus.pull(max_messages=10, timeout=5)
    bus.ack([m.ack_id for m in messages])
    queue.put([(m.message_id, m.delivery_attempt) for m in messages])


def _run(target: object, *args: object) -> None:
    process = CTX.Process(target=target, args=args)
    process.start()
    process.join(30)
    assert process.exitcode == 0


def test_two_processes_lease_redeliver_and_ack(tmp_path: Path) -> None:
    path = str(tmp_path / "bus.db")
    agent = SqliteBus(path, subscription="agent", filter={"department": "data"}, ack_deadline=0.5)
    others = SqliteBus(path, subscription="web", filter={"department": "web"})
    # Two publisher processes at once (two gunicorn workers).
    publishers = [CTX.Process(target=_publish_many, args=(path, d, 20)) for d in ("data", "web")]
    for p in publishers:
        p.start()
    for p in publishers:
        p.join(30)
        assert p.exitcode == 0
    assert len(others.pull(max_messages=100, timeout=0)) == 20
    queue: multiprocessing.Queue = CTX.Queue()
    _run(_pull_and_crash, path, queue)
    crashed = queue.get(timeout=10)
    assert len(crashed) == 10 and all(attempt == 1 for _, attempt in crashed)
    time.sleep(0.6)  # past the dead process's ack deadline
    _run(_pull_and_ack, path, queue)
    acked = queue.get(timeout=10)
    assert [(m, a) for m, a in acked] == [(m, 2) for m, _ in crashed]  # the same messages, second attempt
    time.sleep(0.6)
    rest = agent.pull(max_messages=100, timeout=0)
    assert len(rest) == 10 and {m.message_id for m in rest}.isdisjoint(m for m, _ in acked)
    assert all(m.attributes["department"] == "data" for m in rest)


def test_the_bus_file_is_private_to_its_owner(tmp_path: Path) -> None:
    """It holds raw webhook payloads: no other local user may read them."""
    old = os.umask(0o022)  # the usual umask, under which SQLite creates files 0644
    try:
        path = tmp_path / "state" / "bus.db"
        bus = SqliteBus(path, subscription="data", filter={"department": "data"})
        SqliteBus(path).publish(b"payload", _attrs("data", 1))
        assert [m.data for m in bus.pull(timeout=0)] == [b"payload"]
    finally:
        os.umask(old)
    assert (path.parent.stat().st_mode & 0o777) == 0o700
    files = [path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}.lock")]
    assert {f.name: f.stat().st_mode & 0o777 for f in files} == {f.name: 0o600 for f in files}


def test_synchronous_off_is_refused(tmp_path: Path) -> None:
    """OFF lets a crash lose messages whose publish already returned (the webhook's 202)."""
    with pytest.raises(ValueError, match="synchronous=OFF is refused"):
        SqliteBus(tmp_path / "bus.db", synchronous="off")
    assert not (tmp_path / "bus.db").exists()
