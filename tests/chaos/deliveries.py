"""GitHub's side of the webhook in a chaos run: signed deliveries, with the network's and GitHub's mischief.

Every event the world emits becomes a real ``workflow_job`` payload (an
@octokit example carrying this job's fields, checked against @octokit's schema,
:func:`tests.agent.gcpkit.event`), signed with the webhook secret as GitHub
signs it. Then, decided by the run's seeded random generator:

* **dropped**: never delivered (GitHub's request was lost); only reconcile
  (or a warm runner GitHub hands the job to) can heal it;
* **duplicated**: delivered twice with the same ``X-GitHub-Delivery``
  (at-least-once delivery);
* **reordered**: each delivery leaves after a random delay, so a job's
  ``completed`` can arrive before its ``in_progress``.

A delivery that gets a 5xx, or no answer (a worker killed mid-request), is
redelivered after a pause, as GitHub shows it failed and ``garo redeliver``
sends it again. Every answer is recorded with the time it was sent.
"""

from __future__ import annotations

import heapq
import itertools
import random
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import requests

from tests.agent.gcpkit import event
from tests.harness.webhooks import sign


@dataclass(frozen=True)
class Chaos:
    drop: float = 0.05
    duplicate: float = 0.1
    reorder_seconds: float = 2.0
    redeliver_after: tuple[float, float] = (1.0, 3.0)


@dataclass
class Answer:
    sent: float
    answered: float
    status: int  # 0: no answer (connection reset, timeout)
    action: str
    job: int
    outcome: str = ""  # the webhook's "status": published, duplicate, unmatched ...


@dataclass(order=True)
class _Due:
    at: float
    seq: int
    guid: str = field(compare=False)
    action: str = field(compare=False)
    job: int = field(compare=False)
    body: bytes = field(compare=False)
    attempt: int = field(default=1, compare=False)


class Deliveries:
    def __init__(self, url: str, secret: str, rng: random.Random, chaos: Chaos, senders: int = 6) -> None:
        self.url, self.secret, self.rng, self.chaos = url, secret, rng, chaos
        self.emitted: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self.duplicated = 0
        self.redelivered = 0
        self.answers: list[Answer] = []
        self._due: list[_Due] = []
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self._inflight = 0
        self._pool = ThreadPoolExecutor(senders, thread_name_prefix="github-delivery")
        self._local = threading.local()
        self._pauses = random.Random(rng.random())  # used by sender threads: keeps ``rng`` single-threaded

    # ------------------------------------------------------------------ GitHub emits

    def emit(self, action: str, payload: dict[str, Any]) -> None:
        """Called by the world (under its lock): turn the event into deliveries, or drop it."""
        job = payload["workflow_job"]
        body = event(action, int(job["id"]), runner=job.get("runner_name"), runner_id=job.get("runner_id"))
        self.emitted[action] += 1
        if self.rng.random() < self.chaos.drop:
            self.dropped[action] += 1
            return
        guid = str(uuid.UUID(int=self.rng.getrandbits(128)))
        copies = 2 if self.rng.random() < self.chaos.duplicate else 1
        self.duplicated += copies - 1
        now = time.monotonic()
        with self._lock:
            for _ in range(copies):
                delay = self.rng.uniform(0, self.chaos.reorder_seconds)
                heapq.heappush(self._due, _Due(now + delay, next(self._seq), guid, action, int(job["id"]), body))

    # ------------------------------------------------------------------ sending

    def pump(self) -> None:
        """Send every delivery that is due (called from the driver's loop)."""
        now = time.monotonic()
        while True:
            with self._lock:
                if not self._due or self._due[0].at > now:
                    return
                due = heapq.heappop(self._due)
                self._inflight += 1
            self._pool.submit(self._send, due)

    def pending(self) -> int:
        with self._lock:
            return len(self._due) + self._inflight

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def _send(self, due: _Due) -> None:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "GitHub-Hookshot/chaos",
            "X-GitHub-Event": "workflow_job",
            "X-GitHub-Delivery": due.guid,
            "X-Hub-Signature-256": sign(due.body, self.secret),
        }
        sent = time.monotonic()
        outcome = ""
        try:
            response = self._session().post(self.url, data=due.body, headers=headers, timeout=10)
            status = response.status_code
            outcome = str(response.json().get("status", ""))
        except requests.RequestException:
            status = 0
            self._local.session = None  # a broken keep-alive connection: start afresh
        except ValueError:  # an answer that is not JSON
            outcome = "unreadable"
        answered = time.monotonic()
        with self._lock:
            self.answers.append(Answer(sent, answered, status, due.action, due.job, outcome))
            if status == 0 or status >= 500:  # GitHub marks the delivery failed; it is sent again
                self.redelivered += 1
                again = _Due(
                    answered + self._pauses.uniform(*self.chaos.redeliver_after),
                    next(self._seq),
                    due.guid,
                    due.action,
                    due.job,
                    due.body,
                    due.attempt + 1,
                )
                heapq.heappush(self._due, again)
            self._inflight -= 1

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
