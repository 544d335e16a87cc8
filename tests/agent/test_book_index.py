"""The book answers from indexes (for speed); its answers must be what its jobs say, copy or not.

The planner asks the book on every batch which jobs wait, which runner runs
which job and which names a job carries. A stale index would give a job a
second VM or none: these tests replay random event sequences (with planning
copies changed on the side) and compare every answer with a scan of the jobs.
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from scaler.agent.state import Book, JobRecord

GROUPS = ("linux", "gpu")
STATUSES = ("queued", "waiting", "covered", "in_progress", "completed")
RUNNERS = (None, "garo-eng-linux-1", "garo-eng-linux-2", "garo-eng-gpu-3", "garo-eng-linux-w-0")


def scanned_running_on(book: Book) -> dict[str, int]:
    return {j.runner_name: j.id for j in book.jobs.values() if j.status == "in_progress" and j.runner_name}


def assert_answers_match_jobs(book: Book) -> None:
    for group in GROUPS:
        expected = sorted(
            (j for j in book.jobs.values() if j.group == group and j.status == "queued"),
            key=lambda j: (j.seen_at, j.id),
        )
        assert book.queued(group) == expected
    assert book.running_on() == scanned_running_on(book)
    assert sorted(j.id for j in book.open_jobs()) == sorted(
        j.id for j in book.jobs.values() if j.status in ("queued", "covered")
    )
    names = {j.runner_name for j in book.jobs.values() if j.runner_name}
    assert book.runner_names() == names and set(book.job_runner_names) == names
    assert all(book.names_a_job(n) == (n in names) for n in RUNNERS if n)


def apply(book: Book, rng: random.Random, now: float) -> None:
    """One random change, as events, GitHub's answers, executed actions and pruning make them."""
    job_id = rng.randint(1, 12)
    op = rng.randrange(6)
    if op == 0:
        book.observe_job(job_id, rng.choice(GROUPS), "octo/app", rng.choice(STATUSES), now, rng.choice(RUNNERS))
    elif op == 1:
        book.learn(job_id, rng.choice(GROUPS), "octo/app", rng.choice([*STATUSES, "pending"]), now, rng.choice(RUNNERS))
    elif op == 2:
        book.cover(job_id)
    elif op == 3:
        book.requeue(job_id, now)
    elif op == 4:
        book.forget_instance(rng.choice([r for r in RUNNERS if r]))
    else:  # forgets exactly the jobs finished over an hour ago, however they came to be finished
        kept = {j.id for j in book.jobs.values() if j.status != "completed" or now - j.seen_at <= 3600.0}
        book.prune(now)
        assert set(book.jobs) == kept


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_the_books_answers_are_what_its_jobs_say_and_a_copy_never_changes_the_original(seed: int) -> None:
    rng = random.Random(seed)
    book, now = Book(), 1_000_000.0
    for _ in range(60):
        now += rng.choice((1.0, 30.0, 2000.0))  # past the hour finished jobs are kept, sometimes
        apply(book, rng, now)
        assert_answers_match_jobs(book)
        if rng.random() < 0.3:  # a planning pass: its scratch copy changes, the book must not
            before = {job_id: vars(record).copy() for job_id, record in book.jobs.items()}
            scratch = book.copy()
            for _ in range(rng.randint(1, 5)):
                apply(scratch, rng, now)
                assert_answers_match_jobs(scratch)
            assert {job_id: vars(record) for job_id, record in book.jobs.items()} == before
            assert_answers_match_jobs(book)
            # The copy shares the book's jobs until one of them writes: the book's own changes
            # after the copy (the executor's, on the next batch) must not show in the copy either.
            planned = {job_id: vars(record).copy() for job_id, record in scratch.jobs.items()}
            untouched = book.copy()
            for _ in range(rng.randint(1, 5)):
                apply(book, rng, now)
            assert {job_id: vars(record) for job_id, record in scratch.jobs.items()} == planned
            assert_answers_match_jobs(scratch)
            assert_answers_match_jobs(untouched)


def test_a_book_built_from_records_answers_from_them() -> None:
    jobs = {
        1: JobRecord(1, "linux", "octo/app", "queued", 10.0),
        2: JobRecord(2, "linux", "octo/app", "in_progress", 5.0, runner_name="garo-eng-linux-1"),
        3: JobRecord(3, "gpu", "octo/app", "covered", 7.0),
    }
    book = Book(jobs=jobs)
    assert [j.id for j in book.queued("linux")] == [1]
    assert book.running_on() == {"garo-eng-linux-1": 2}
    assert sorted(j.id for j in book.open_jobs()) == [1, 3]
    book.forget_instance("garo-eng-linux-1")
    assert book.running_on() == {} and book.jobs[2].status == "completed"
