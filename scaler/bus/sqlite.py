"""The embedded event bus: one SQLite file, no server, Pub/Sub's semantics.

``make demo`` and local development run the webhook (several gunicorn
workers) and one agent per department as separate processes; they share a
single SQLite file in WAL mode, so readers never block the writer and every
operation is a short ``BEGIN IMMEDIATE`` transaction.

The semantics mirror Google Pub/Sub so that the agent cannot tell the two
apart:

* a message is copied to every subscription whose attribute filter matches
  at publish time (a subscription sees only messages published after it was
  created, like Pub/Sub);
* ``pull`` leases messages for the subscription's ack deadline; unacknowledged
  messages come back after it, with ``delivery_attempt`` counted;
* an ack carries the lease's token, so a stale ack from an expired lease is
  ignored (the message was already handed to someone else);
* after ``max_delivery_attempts`` deliveries an expired message moves to the
  ``dead_letters`` table instead of being delivered again.

Group commit: concurrent ``publish`` calls of one process's threads (a
gunicorn worker's request threads) share one transaction. A publisher queues
its message and takes the process's write lock; whoever holds it commits
everything queued so far, so while one transaction commits the next batch
gathers, with no timer and no waiting when there is no concurrency. A publish
returns only once the transaction holding its message committed; if that
transaction fails, every message of it is retried alone, so one bad message
cannot fail its neighbours, and a crash before the commit loses only
publishes that had not returned yet.

Checkpoints off the publish path (``checkpoint_interval``, the webhook's
setting): SQLite normally copies the WAL back into the database inside the
COMMIT that crosses 1000 pages, fsyncs included, while that writer holds the
lock every other writer queues on. With an interval, this process's
connections never do that; a background thread runs a PASSIVE checkpoint
(which neither waits for nor blocks writers) every ``checkpoint_interval``
seconds after writes. A commit is as durable either way: checkpoints move
committed data, they do not make it committed.

One extra the webhook relies on: the ``delivery`` attribute (GitHub's
X-GitHub-Delivery GUID) is UNIQUE, so a redelivered webhook publishes nothing
new across all gunicorn workers. Rows are kept after ack for that reason and
purged after ``retention`` seconds.

The file holds raw webhook payloads: it (with its ``-wal``, ``-shm`` and
``.lock`` companions) is created readable by its owner only (0600), and a
directory we create for it 0700. ``synchronous=OFF`` is refused: with it a
crash can lose events the webhook already answered 202 for.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from scaler.bus.base import BusUnavailable, Message

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    data BLOB NOT NULL,
    attributes TEXT NOT NULL,
    ordering_key TEXT NOT NULL DEFAULT '',
    delivery TEXT UNIQUE,
    published_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS subscriptions (
    name TEXT PRIMARY KEY,
    filter TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    subscription TEXT NOT NULL,
    message INTEGER NOT NULL REFERENCES messages(id),
    state TEXT NOT NULL DEFAULT 'ready',
    attempts INTEGER NOT NULL DEFAULT 0,
    lease_until REAL NOT NULL DEFAULT 0,
    token TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (subscription, message)
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (subscription, state, lease_until);
CREATE TABLE IF NOT EXISTS dead_letters (
    subscription TEXT NOT NULL,
    message INTEGER NOT NULL,
    data BLOB NOT NULL,
    attributes TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    dead_at REAL NOT NULL,
    PRIMARY KEY (subscription, message)
);
"""

# A subscription gets a message when no key of its filter differs from the
# message's attributes: matched inside SQLite, in the publish transaction.
_FAN_OUT = """
INSERT INTO deliveries (subscription, message)
SELECT s.name, :message FROM subscriptions s
WHERE NOT EXISTS (
    SELECT 1 FROM json_each(s.filter) f
    WHERE json_extract(:attributes, '$."' || f.key || '"') IS NOT f.value
)
"""
# SQLite result codes of another connection holding the database: contention, not a broken bus.
_BUSY = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, 517, 261})  # + SQLITE_BUSY_SNAPSHOT, _RECOVERY
PURGE_EVERY = 3600.0  # seconds between purges of settled messages past their retention
_ATTRIBUTE_KEY_RE = re.compile(r"^[A-Za-z0-9_.-]{1,256}$")
SYNCHRONOUS = ("NORMAL", "FULL", "EXTRA")  # not OFF: see the module docstring
_INSERT = (
    "INSERT OR IGNORE INTO messages (data, attributes, ordering_key, delivery, published_at) VALUES (?, ?, ?, ?, ?)"
)


@dataclass
class _Pending:
    """A message waiting for a transaction; ``done`` once that transaction ended."""

    data: bytes
    attributes: str
    ordering_key: str
    delivery: str | None
    message_id: str = ""
    error: BaseException | None = None
    done: bool = False


def department_subscription(department: str) -> tuple[str, dict[str, str]]:
    """The name and filter of a department's subscription (the agent pulls it, the webhook creates it early)."""
    return f"agent-{department}", {"department": department}


def check_synchronous(value: str) -> str:
    """The upper-cased SQLite ``synchronous`` level, or ValueError saying why OFF is not one."""
    level = value.upper()
    if level == "OFF":
        raise ValueError(
            "synchronous=OFF is refused: a crash could lose events the webhook already acknowledged; "
            "use NORMAL (survives a process crash) or FULL (also power loss)"
        )
    if level not in SYNCHRONOUS:
        raise ValueError(f"synchronous must be one of {', '.join(SYNCHRONOUS)}, got {value!r}")
    return level


def _new_private_file(path: str) -> bool:
    """Before SQLite opens ``path``: True if it does not exist yet (then :func:`_make_private` it at once).

    A missing directory is created 0700 (one level, the agent's default
    ``.garo/bus.db``; a mistyped deeper path still fails).
    """
    if path == ":memory:" or path.startswith("file:") or os.path.exists(path):
        return False
    directory = os.path.dirname(path)
    if directory and not os.path.isdir(directory):
        with suppress(FileExistsError):
            os.mkdir(directory, 0o700)
    return True


def _make_private(path: str) -> None:
    """chmod 0600 a database SQLite just created (0644 under the usual umask), before it holds anything.

    SQLite gives the -wal and -shm files the database's mode, so this covers
    them too. chmod, not open-and-close: closing any descriptor of the file
    would drop the POSIX locks this process's SQLite connections hold on it.
    """
    os.chmod(path, 0o600)


class _LockTimeout(Exception):
    """Another process held the bus's lock file for longer than ``busy_timeout``."""


def _is_busy(exc: BaseException) -> bool:
    """Did we give up waiting for another writer's lock (the lock file, SQLITE_BUSY / SQLITE_LOCKED)?"""
    cause = exc.__cause__
    if isinstance(cause, _LockTimeout):
        return True
    return isinstance(cause, sqlite3.Error) and getattr(cause, "sqlite_errorcode", 0) & 0xFF in (5, 6)


class SqliteBus:
    """Publisher and (with ``subscription``) Subscriber over one SQLite file.

    ``filter`` is an attribute mapping every message must carry to reach this
    subscription, e.g. ``{"department": "data"}``. ``synchronous`` is
    SQLite's durability knob: ``NORMAL`` (default) survives a crash of any
    process; ``FULL`` also survives power loss at the price of an fsync per
    publish. ``busy_timeout`` is how long a writer waits for a lock before
    raising BusUnavailable (the webhook then answers 503).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        subscription: str | None = None,
        filter: Mapping[str, str] | None = None,
        ack_deadline: float = 60.0,
        max_delivery_attempts: int = 5,
        retention: float = 7 * 24 * 3600,
        synchronous: str = "NORMAL",
        busy_timeout: float = 10.0,
        checkpoint_interval: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        synchronous = check_synchronous(synchronous)
        if max_delivery_attempts < 1 or ack_deadline <= 0:
            raise ValueError("max_delivery_attempts must be >= 1 and ack_deadline > 0")
        self.path = str(path)
        self.subscription = subscription
        self.filter = dict(filter or {})
        self.ack_deadline = ack_deadline
        self.max_delivery_attempts = max_delivery_attempts
        self.retention = retention
        self._synchronous = synchronous.upper()
        self._busy_timeout = busy_timeout
        self._checkpoint_interval = checkpoint_interval  # 0: SQLite checkpoints inside commits
        self._checkpointer: tuple[int, threading.Event] | None = None  # (pid, stop)
        self._dirty = False  # committed since the last background checkpoint
        self._clock = clock
        self._local = threading.local()
        # Writers queue on a file lock instead of SQLite's busy handler, which
        # polls with sleeps of up to 100 ms and made gunicorn workers idle.
        self._write_lock = threading.Lock()
        self._lock_file: tuple[int, int] | None = None  # (pid, fd)
        self._queue: list[_Pending] = []  # publishes waiting for the next group commit
        self._queue_lock = threading.Lock()
        if subscription is not None:
            self.create_subscription(subscription, self.filter)

    def __repr__(self) -> str:
        return f"SqliteBus({self.path!r}, subscription={self.subscription!r}, filter={self.filter!r})"

    # ------------------------------------------------------------ connections

    def _connection(self) -> sqlite3.Connection:
        """One connection per thread and process (connections must not cross a fork)."""
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None or getattr(self._local, "pid", None) != os.getpid():
            try:
                new = _new_private_file(self.path)
                db = sqlite3.connect(
                    self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
                )
                if new:
                    _make_private(self.path)
                db.execute(f"PRAGMA busy_timeout={int(self._busy_timeout * 1000)}")
                db.execute("PRAGMA journal_mode=WAL")
                db.execute(f"PRAGMA synchronous={self._synchronous}")
                if self._checkpoint_interval > 0:
                    db.execute("PRAGMA wal_autocheckpoint=0")
                # Lazily, so that a webhook starts (and says "not ready") while the file is unavailable.
                db.executescript(_SCHEMA)
            except OSError as exc:
                raise BusUnavailable(f"cannot open sqlite bus {self.path}: {exc.strerror}") from exc
            except sqlite3.Error as exc:
                raise BusUnavailable(f"cannot open sqlite bus {self.path}: {exc}") from exc
            self._local.db, self._local.pid = db, os.getpid()
        return db

    def _lock_fd(self) -> int:
        if self._lock_file is None or self._lock_file[0] != os.getpid():
            try:
                fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:
                raise BusUnavailable(f"cannot open sqlite bus lock {self.path}.lock: {exc.strerror}") from exc
            self._lock_file = (os.getpid(), fd)
        return self._lock_file[1]

    @contextmanager
    def _transaction(self, locked: bool = False) -> Iterator[sqlite3.Connection]:
        """A write transaction; writers of all processes take turns on the lock file first.

        ``locked``: the caller already holds this process's write lock (group commit).
        """
        if not locked:
            with self._write_lock, self._transaction(locked=True) as db:
                yield db
            return
        db = self._connection()
        fd = self._lock_fd()
        self._lock_file_within_timeout(fd)
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            if self._checkpoint_interval > 0:
                self._wrote()
        except sqlite3.Error as exc:
            if db.in_transaction:  # a failed COMMIT leaves the transaction open
                with suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            busy = isinstance(exc, sqlite3.OperationalError) and getattr(exc, "sqlite_errorcode", None) in _BUSY
            raise BusUnavailable(f"sqlite bus {self.path}: {exc}", contended=busy) from exc
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def _lock_file_within_timeout(self, fd: int) -> None:
        """Take the lock file, waiting at most ``busy_timeout``: a stalled process must not hang publishers
        past GitHub's 10 s delivery timeout (they answer 503, and GitHub's delivery can be redelivered)."""
        give_up = time.monotonic() + self._busy_timeout
        pause = 0.001
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= give_up:
                    try:
                        raise _LockTimeout(f"{self.path}.lock held for over {self._busy_timeout:g} s")
                    except _LockTimeout as exc:
                        raise BusUnavailable(
                            f"sqlite bus {self.path}: locked by another process", contended=True
                        ) from exc
                time.sleep(pause)
                pause = min(pause * 2, 0.05)

    def _wrote(self) -> None:
        self._dirty = True
        if self._checkpointer is None or self._checkpointer[0] != os.getpid():  # none yet, or forked
            stop = threading.Event()
            self._checkpointer = (os.getpid(), stop)
            threading.Thread(target=self._checkpoints, args=(stop,), name="sqlite-bus-checkpoint", daemon=True).start()

    def _checkpoints(self, stop: threading.Event) -> None:
        """The background checkpointer: PASSIVE, so it never waits for a writer nor makes one wait."""
        purged_at = time.monotonic()
        while not stop.wait(self._checkpoint_interval):
            if time.monotonic() - purged_at >= PURGE_EVERY:
                purged_at = time.monotonic()
                with suppress(BusUnavailable):
                    self.purge()  # settled messages past their retention
            if not self._dirty:
                continue
            self._dirty = False
            try:
                self._connection().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except (sqlite3.Error, BusUnavailable):
                self._dirty = True  # the next round tries again; commits do not depend on it
        db = getattr(self._local, "db", None)  # this thread's own connection only
        if db is not None:
            db.close()

    def close(self) -> None:
        if self._checkpointer is not None and self._checkpointer[0] == os.getpid():
            self._checkpointer[1].set()
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None
        if self._lock_file is not None and self._lock_file[0] == os.getpid():
            os.close(self._lock_file[1])
        self._lock_file = None

    # ------------------------------------------------------------ publisher

    def create_subscription(self, name: str, filter: Mapping[str, str] | None = None) -> None:
        """Create a subscription (idempotent); its filter cannot change later, as in Pub/Sub."""
        bad = [key for key in filter or {} if not _ATTRIBUTE_KEY_RE.match(key)]
        if bad:
            raise ValueError(f"filter keys must be letters, digits, '_', '.' or '-': {bad}")
        wanted = json.dumps(dict(filter or {}), sort_keys=True)
        with self._transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO subscriptions (name, filter, created_at) VALUES (?, ?, ?)",
                (name, wanted, self._clock()),
            )
            (existing,) = db.execute("SELECT filter FROM subscriptions WHERE name = ?", (name,)).fetchone()
        if existing != wanted:
            raise ValueError(f"subscription {name!r} exists with filter {existing}, not {wanted}")

    def publish(self, data: bytes, attributes: Mapping[str, str]) -> str:
        """Store the message once per ``delivery`` attribute; fan it out to matching subscriptions.

        Returns after the transaction holding the message committed (see group commit above).
        """
        attrs = {str(k): str(v) for k, v in attributes.items()}
        pending = _Pending(bytes(data), json.dumps(attrs, sort_keys=True), "", attrs.get("delivery") or None)
        with self._queue_lock:
            self._queue.append(pending)
        with self._write_lock:
            if not pending.done:  # nobody took it while we waited: lead the next group commit
                with self._queue_lock:
                    batch, self._queue = self._queue, []
                self._commit_group(batch)
        if pending.error is not None:
            raise pending.error
        return pending.message_id

    def _commit_group(self, batch: list[_Pending]) -> None:
        """Commit ``batch`` (the caller holds the write lock); on failure retry each message alone."""
        try:
            try:
                self._insert(batch)
            except BusUnavailable as exc:
                if len(batch) == 1 or _is_busy(exc):  # alone it would only wait for the lock again
                    for pending in batch:
                        pending.error = exc
                else:
                    for pending in batch:
                        try:
                            self._insert([pending])
                        except BusUnavailable as alone:
                            pending.error = alone
        except BaseException as exc:  # interrupted: nothing of the batch is known to be committed
            for pending in batch:
                if not pending.message_id:
                    pending.error = BusUnavailable(f"sqlite bus {self.path}: publish interrupted")
            raise exc
        finally:
            for pending in batch:
                pending.done = True

    def _insert(self, batch: Sequence[_Pending]) -> None:
        ids: list[str] = []
        with self._transaction(locked=True) as db:
            now = self._clock()
            for pending in batch:
                cursor = db.execute(
                    _INSERT, (pending.data, pending.attributes, pending.ordering_key, pending.delivery, now)
                )
                if cursor.rowcount == 0:  # this delivery was published before
                    (message_id,) = db.execute(
                        "SELECT id FROM messages WHERE delivery = ?", (pending.delivery,)
                    ).fetchone()
                else:
                    message_id = cursor.lastrowid
                    db.execute(_FAN_OUT, {"message": message_id, "attributes": pending.attributes})
                ids.append(str(message_id))
        for pending, message_id in zip(batch, ids, strict=True):  # only once committed
            pending.message_id = message_id

    def ready(self) -> bool:
        try:
            self._connection().execute("SELECT 1 FROM messages LIMIT 1").fetchall()
            return True
        except (sqlite3.Error, BusUnavailable):
            return False

    # ------------------------------------------------------------ subscriber

    def _name(self) -> str:
        if self.subscription is None:
            raise RuntimeError("this SqliteBus has no subscription; pass subscription= to pull")
        return self.subscription

    def pull(self, max_messages: int = 100, timeout: float = 1.0) -> Sequence[Message]:
        """Lease due messages; poll until ``timeout`` if none are due."""
        give_up = time.monotonic() + timeout
        while True:
            messages = self._lease(max_messages)
            if messages or time.monotonic() >= give_up:
                return messages
            time.sleep(min(0.05, max(0.0, give_up - time.monotonic())))

    def _lease(self, max_messages: int) -> list[Message]:
        name, now = self._name(), self._clock()
        leased: list[Message] = []
        with self._transaction() as db:
            rows = db.execute(
                "SELECT d.message, d.attempts, m.data, m.attributes FROM deliveries d JOIN messages m ON m.id = d.message "
                "WHERE d.subscription = ? AND d.state = 'ready' AND d.lease_until <= ? ORDER BY d.message LIMIT ?",
                (name, now, max_messages * 2),
            ).fetchall()
            for message, attempts, data, attributes in rows:
                if attempts >= self.max_delivery_attempts:
                    db.execute(
                        "INSERT OR REPLACE INTO dead_letters VALUES (?, ?, ?, ?, ?, ?)",
                        (name, message, data, attributes, attempts, now),
                    )
                    db.execute(
                        "UPDATE deliveries SET state = 'dead' WHERE subscription = ? AND message = ?", (name, message)
                    )
                    continue
                if len(leased) == max_messages:
                    continue
                token = secrets.token_hex(8)
                db.execute(
                    "UPDATE deliveries SET attempts = attempts + 1, lease_until = ?, token = ? "
                    "WHERE subscription = ? AND message = ?",
                    (now + self.ack_deadline, token, name, message),
                )
                leased.append(
                    Message(
                        ack_id=f"{message}:{token}",
                        message_id=str(message),
                        data=bytes(data),
                        attributes=json.loads(attributes),
                        delivery_attempt=attempts + 1,
                    )
                )
        return leased

    def _leases(self, ack_ids: Sequence[str]) -> Iterator[tuple[int, str]]:
        for ack_id in ack_ids:
            message, _, token = ack_id.partition(":")
            if message.isdigit() and token:
                yield int(message), token

    def ack(self, ack_ids: Sequence[str]) -> None:
        name = self._name()
        with self._transaction() as db:
            for message, token in self._leases(ack_ids):
                db.execute(
                    "UPDATE deliveries SET state = 'acked' WHERE subscription = ? AND message = ? AND token = ? "
                    "AND state = 'ready'",
                    (name, message, token),
                )

    def modify_ack_deadline(self, ack_ids: Sequence[str], seconds: int) -> None:
        name, now = self._name(), self._clock()
        with self._transaction() as db:
            for message, token in self._leases(ack_ids):
                db.execute(
                    "UPDATE deliveries SET lease_until = ? WHERE subscription = ? AND message = ? AND token = ? "
                    "AND state = 'ready' AND lease_until > ?",
                    (now + max(0, seconds), name, message, token, now),
                )

    # ------------------------------------------------------------ inspection

    def dead_letters(self) -> list[Message]:
        """Messages of this subscription that exhausted their delivery attempts."""
        rows = (
            self._connection()
            .execute(
                "SELECT message, data, attributes, attempts FROM dead_letters WHERE subscription = ? ORDER BY message",
                (self._name(),),
            )
            .fetchall()
        )
        return [Message("", str(m), bytes(d), json.loads(a), n) for m, d, a, n in rows]

    def purge(self) -> int:
        """Forget messages older than ``retention`` that every subscription settled; return how many."""
        cutoff = self._clock() - self.retention
        with self._transaction() as db:
            cursor = db.execute(
                "DELETE FROM messages WHERE published_at < ? AND id NOT IN "
                "(SELECT message FROM deliveries WHERE state = 'ready')",
                (cutoff,),
            )
            db.execute("DELETE FROM deliveries WHERE message NOT IN (SELECT id FROM messages)")
            return cursor.rowcount
