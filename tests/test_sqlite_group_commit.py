"""Group commit in the SQLite bus: concurrent publishes share a transaction, and none returns early.

A publish that returned is what the webhook answers 202 on, so it must be
committed: visible to a fresh connection at once, and still there after the
publishing process is killed mid-batch.
"""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from scaler.bus.base import BusUnavailable
from scaler.bus.sqlite import SqliteBus

CTX = multiprocessing.get_context("spawn")


class CountingClock:
    """Each transaction reads the clock once: equal published_at values mean one transaction."""

    def __init__(self) -> None:
        self.now = 1_000_000.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            self.now += 1
            return self.now


def _attrs(delivery: str) -> dict[str, str]:
    return {"department": "data", "group": "g", "action": "queued", "job_id": delivery, "delivery": delivery}


def _stored(path: Path) -> dict[str, tuple[int, float]]:
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT delivery, id, published_at FROM messages").fetchall()
    return {delivery: (message_id, at) for delivery, message_id, at in rows}


def _wait_for(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def _leads_a_transaction(bus: SqliteBus) -> bool:
    """A publisher holds this process's write lock with its batch taken from the queue (so it waits for the file).

    False before any publisher ran (the write lock is free) and while its message still sits in the queue.
    """
    return bus._write_lock.locked() and not bus._queue


class HeldLock:
    """Holds the bus's writer lock file as another process's writer would."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def release(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def _publish_in_threads(bus: SqliteBus, deliveries: list[str], results: dict[str, object]) -> list[threading.Thread]:
    def publish(delivery: str) -> None:
        try:
            results[delivery] = bus.publish(delivery.encode(), _attrs(delivery))
        except BusUnavailable as exc:
            results[delivery] = exc

    threads = [threading.Thread(target=publish, args=(d,)) for d in deliveries]
    for thread in threads:
        thread.start()
    return threads


def test_publishes_waiting_for_the_lock_commit_together_and_only_then_return(tmp_path: Path) -> None:
    path = tmp_path / "bus.db"
    bus = SqliteBus(path, subscription="data", filter={"department": "data"}, clock=CountingClock())
    held = HeldLock(path)  # another worker is writing
    results: dict[str, object] = {}
    first = _publish_in_threads(bus, ["first"], results)
    _wait_for(lambda: _leads_a_transaction(bus))  # "first" took its batch and waits for the file lock
    rest = _publish_in_threads(bus, [f"d-{i}" for i in range(6)], results)
    _wait_for(lambda: len(bus._queue) == 6)
    time.sleep(0.05)
    assert results == {} and _stored(path) == {}  # nothing committed, so nothing acknowledged
    held.release()
    for thread in first + rest:
        thread.join(10)
    stored = _stored(path)
    assert {d: str(stored[d][0]) for d in results} == results  # every caller got its own committed id
    assert len({stored[f"d-{i}"][1] for i in range(6)}) == 1  # the six queued ones: one transaction
    assert stored["first"][1] != stored["d-0"][1]
    assert sorted(m.attributes["delivery"] for m in bus.pull(max_messages=10, timeout=0)) == sorted(results)


def test_a_failing_message_fails_alone(tmp_path: Path) -> None:
    path = tmp_path / "bus.db"
    bus = SqliteBus(path, subscription="data", filter={"department": "data"})
    with sqlite3.connect(path) as db:  # stands in for any error particular to one message
        db.execute(
            "CREATE TRIGGER poison BEFORE INSERT ON messages WHEN NEW.delivery = 'poison' "
            "BEGIN SELECT RAISE(ABORT, 'poisoned'); END"
        )
    held = HeldLock(path)
    results: dict[str, object] = {}
    first = _publish_in_threads(bus, ["first"], results)
    _wait_for(lambda: _leads_a_transaction(bus))
    batch = _publish_in_threads(bus, ["ok-1", "poison", "ok-2"], results)
    _wait_for(lambda: len(bus._queue) == 3)
    held.release()
    for thread in first + batch:
        thread.join(10)
    assert isinstance(results.pop("poison"), BusUnavailable)
    assert sorted(_stored(path)) == sorted(results) == ["first", "ok-1", "ok-2"]


def test_busy_file_fails_the_whole_batch_without_retrying_each(tmp_path: Path) -> None:
    """A database locked past the timeout answers 503 to the batch at once: retrying each would multiply the wait."""
    path = tmp_path / "bus.db"
    bus = SqliteBus(path, busy_timeout=0.2)
    assert bus.ready()
    transactions: list[int] = []
    insert = bus._insert
    bus._insert = lambda batch: (transactions.append(len(batch)), insert(batch))[1]  # type: ignore[method-assign]
    held = HeldLock(path)
    results: dict[str, object] = {}
    first = _publish_in_threads(bus, ["first"], results)
    _wait_for(lambda: _leads_a_transaction(bus))
    batch = _publish_in_threads(bus, [f"d-{i}" for i in range(4)], results)
    _wait_for(lambda: len(bus._queue) == 4)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # e.g. someone inspecting the file with the sqlite3 shell
    held.release()
    for thread in first + batch:
        thread.join(10)
    blocker.execute("ROLLBACK")
    assert len(results) == 5 and all(isinstance(r, BusUnavailable) for r in results.values())
    assert transactions == [1, 4]
    assert _stored(path) == {}
    assert bus.publish(b"later", _attrs("later"))


# ----------------------------------------------------------------- across processes


def _publisher(path: str, prefix: str, threads: int, per_thread: int, acked: multiprocessing.Queue) -> None:
    bus = SqliteBus(path)

    def run(t: int) -> None:
        for i in range(per_thread):
            delivery = f"{prefix}-{t}-{i}"
            message_id = bus.publish(delivery.encode(), _attrs(delivery))
            acked.put((delivery, message_id))  # the webhook's 202

    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def test_processes_and_threads_publish_concurrently(tmp_path: Path) -> None:
    path = str(tmp_path / "bus.db")
    agent = SqliteBus(path, subscription="data", filter={"department": "data"})
    acked: multiprocessing.Queue = CTX.Queue()
    processes = [CTX.Process(target=_publisher, args=(path, p, 4, 25, acked)) for p in ("a", "b")]
    for process in processes:
        process.start()
    replies = [acked.get(timeout=60) for _ in range(200)]
    for process in processes:
        process.join(30)
        assert process.exitcode == 0
    stored = _stored(Path(path))
    assert len(stored) == 200
    assert dict(replies) == {d: str(message_id) for d, (message_id, _) in stored.items()}
    assert len(agent.pull(max_messages=500, timeout=0)) == 200


def _publish_until_killed(path: str, prefix: str, log: str) -> None:
    """Four threads publish; each reply is appended to ``log`` in one write once publish returned."""
    bus = SqliteBus(path)
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def run(t: int) -> None:
        for i in range(10**6):
            delivery = f"{prefix}-{t}-{i}"
            message_id = bus.publish(delivery.encode(), _attrs(delivery))
            os.write(fd, f"{delivery} {message_id}\n".encode())

    workers = [threading.Thread(target=run, args=(t,)) for t in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


@pytest.mark.timeout(120)
def test_killed_mid_batch_loses_nothing_acknowledged(tmp_path: Path) -> None:
    path, log = str(tmp_path / "bus.db"), tmp_path / "acked.log"
    SqliteBus(path, subscription="data", filter={"department": "data"})
    for attempt in range(3):
        process = CTX.Process(target=_publish_until_killed, args=(path, f"run{attempt}", str(log)))
        process.start()
        target = 50 * (attempt + 1)  # acknowledged publishes so far, over all runs

        def acked(target: int = target) -> bool:
            return log.exists() and sum(1 for line in log.read_text().splitlines() if line.count(" ") == 1) > target

        _wait_for(acked, timeout=60)
        os.kill(process.pid or 0, signal.SIGKILL)  # most likely mid-transaction: four threads keep one open
        process.join(10)
    replies = [line.split(" ") for line in log.read_text().splitlines() if line.count(" ") == 1]
    assert len(replies) > 150
    stored = _stored(Path(path))
    assert [d for d, _ in replies if d not in stored] == []  # every acknowledged publish survived
    assert all(str(stored[d][0]) == message_id for d, message_id in replies)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert SqliteBus(path).publish(b"after", _attrs("after"))  # the dead writer's lock went with it


def test_background_checkpoints_move_commits_into_the_database_file(tmp_path: Path) -> None:
    """With checkpoint_interval, no publish copies the WAL back; a background thread does."""
    path = tmp_path / "bus.db"
    bus = SqliteBus(path, subscription="data", filter={"department": "data"}, checkpoint_interval=0.02)
    for i in range(20):
        bus.publish(b"x" * 10_000, _attrs(f"d-{i}"))
    main_file_only = f"file:{path}?immutable=1"  # ignores the WAL: shows checkpointed data only

    def checkpointed() -> int:
        try:
            with sqlite3.connect(main_file_only, uri=True) as db:
                return int(db.execute("SELECT count(*) FROM messages").fetchone()[0])
        except sqlite3.DatabaseError:  # no schema in the file yet, or a page read while the checkpointer writes it
            return 0

    _wait_for(lambda: checkpointed() == 20)
    assert len(bus.pull(max_messages=50, timeout=0)) == 20
    bus.close()
