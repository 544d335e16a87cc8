"""Whether a ``completed`` event may delete the VM (and deregister the runner) it names.

Bus messages may be forged: anyone who can publish to the department's topic
could send ``completed`` for an unrelated job naming a busy VM as its runner.
So a ``completed`` event is believed for a VM only when something the agent
trusts more than the message says that VM ran that job:

1. the book: this agent saw the job start on that runner (the common case: no
   extra call);
2. the VM itself: its ``garo-job`` metadata names the job (set at creation for
   the job it was made for, or when another job's ``in_progress`` took it), so
   a replica that did not see the start still acts without asking GitHub;
3. GitHub, read-only: the job is completed and its runner was that VM. A warm
   slot's name is reused by later VMs, so for such a name GitHub's "yes" holds
   only while the runner listed under it is not busy (else: judged again on a
   fresh listing when the message comes back).

Anything else is rejected: the message is acknowledged (it can never become
true), counted (``garo_events_total{action="completed",outcome="rejected"}``)
and logged, and nothing is deleted. Reconcile still removes VMs whose job is
over from the cloud's and GitHub's own facts, so a genuine event that could not
be confirmed costs at most a leftover VM until the next pass.

Pure: the caller gathers the listing and GitHub's answer.
"""

from __future__ import annotations

from enum import StrEnum

from scaler import naming
from scaler.agent.actions import Answer
from scaler.agent.state import Book
from scaler.backends.base import JOB_KEY, Instance
from scaler.github.models import Runner


class Verdict(StrEnum):
    ACCEPT = "accept"  # delete the VM, deregister its runner
    ASK = "ask"  # nothing the agent holds says so: ask GitHub
    LATER = "later"  # GitHub says yes, but a runner of that (reused) name looks busy: judge again shortly
    REJECT = "reject"  # not believed: acknowledge, count, delete nothing


def known(book: Book, job_id: int, runner: str) -> bool:
    """The book says this job runs (ran) on this runner: no listing and no GitHub call needed."""
    record = book.jobs.get(job_id)
    return record is not None and record.runner_name == runner and record.status == "in_progress"


def judge(
    department: str,
    group: str,
    book: Book,
    job_id: int,
    runner: str,
    inst: Instance | None,
    listed: Runner | None,
    answer: Answer | None,
) -> Verdict:
    """May a ``completed`` for ``job_id`` naming ``runner`` delete that VM? (See the module docstring.)

    ``inst`` is the VM as the cloud lists it (None: not there), ``listed`` its
    runner in a fresh GitHub listing (None: not registered), ``answer``
    GitHub's answer about the job if it was asked.
    """
    if known(book, job_id, runner):
        return Verdict.ACCEPT
    runs_other = book.running_on().get(runner, job_id) != job_id  # the book knows another job runs there
    if inst is not None and inst.metadata.get(JOB_KEY) == str(job_id) and not runs_other:
        return Verdict.ACCEPT  # (on GCP the listing shows the job the VM was made for, not later relabels)
    if inst is None and listed is None:
        return Verdict.ACCEPT  # nothing to delete, nothing to deregister: acknowledging is harmless
    if answer is None:
        return Verdict.ASK
    if answer.job.status != "completed" or answer.job.runner_name != runner:
        return Verdict.REJECT
    warm = naming.job_of(department, group, runner) is None
    if warm and listed is not None and listed.busy:
        # Either the listing predates the job's end (it is seconds old) or a later VM of this reused
        # name is busy with another job: the message comes back soon, judged on a fresh listing.
        return Verdict.LATER
    return Verdict.ACCEPT
