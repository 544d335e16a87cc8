"""The GCP backend: runner groups are regional managed instance groups (MIGs).

Choices worth knowing:

* **Names, never sizes.** VMs are created with ``createInstances`` (we choose the
  name; the runner name equals it) and removed with ``deleteInstances``
  by URL. ``resize`` is never called: a MIG shrinking by size picks its own
  victims, possibly a VM in the middle of a job.
* **Metadata at birth.** ``create`` puts each VM's facts (its job, its repo)
  in the per-instance config's ``preservedState.metadata``, so the VM boots
  with them and no second call races the instance's creation. The MIG
  therefore holds per-instance configs (it is "stateful": regional MIGs then
  need ``updatePolicy.instanceRedistributionType = NONE``); ``deleteInstances``
  removes them with the VM. ``garo-job`` is not rewritten later (the agent
  relabels a VM another job took; the listing would not show it, so on GCP a
  replica that did not see that job start asks GitHub instead, as trust.py
  says). Later changes go through ``instances.setMetadata``
  with Compute's fingerprint (optimistic locking, retried on 412); an empty
  value removes the key. A write is two calls (``instances.get`` for the
  fingerprint, then ``setMetadata``, whose operation is not awaited).
* **JIT configs are pulled, never written.** A JIT config given to ``create``
  or ``set_metadata`` goes to :attr:`GcpBackend.jit_vault` (this process's
  memory) and never to Compute: the VM asks the agent for it with its
  Google-signed identity token (:mod:`scaler.backends.jit_vault`,
  :mod:`scaler.agent.jit_endpoint`). Holding, clearing (an empty value) and
  dropping it on ``delete`` cost no Compute call; an unread config expires
  after the group's time to start (docs/security.md, "JIT delivery").
* **Facts survive a restart.** ``list`` returns the per-instance config's
  metadata (``preservedStateFromConfig``: garo-job, garo-repo) as
  ``Instance.metadata``, so an agent that did not create a VM knows its job.
  An operator's ``garo-keep`` (``garo keep``) is written there too, with
  ``patchPerInstanceConfigs``: the MIG listing carries no instance labels, and
  reading each VM's labels would cost one call per VM per pass.
* **Quota.** ``listManagedInstances`` counts against the mutation quota, so
  results are cached for ``list_ttl`` seconds and invalidated by our own changes.
* **Failures.** 429/5xx/timeouts are retried (tenacity, in ``gcp_api``: backoff
  with jitter, an overall deadline; by default 3 quick retries, under 2 s, since
  the agent's next pass retries anyway) with the same ``requestId`` (Compute then
  de-duplicates retried mutations), then raise
  ``BackendError`` with ``Failure.UNAVAILABLE`` or ``THROTTLED``; other 4xx
  raise theirs (``NOT_FOUND``, ``INVALID`` ...) with Compute's message
  (metadata values scrubbed). Compute's codes map onto the backend vocabulary
  in ``gcp_api.failure_for``. Per-instance creation errors
  (capacity, quota) come back as ``CreateResult.failed``; the stuck pending
  instance is deleted so the MIG stops retrying it, and if the group has a
  fallback MIG (e.g. on-demand behind spot) the names are created there.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import requests

from scaler.backends.base import (
    FALLBACK,
    JIT_KEY,
    JOB_KEY,
    KEEP_KEY,
    SECRET_METADATA,
    BackendError,
    CreateFailure,
    CreateResult,
    Failure,
    Instance,
    InstanceState,
)
from scaler.backends.gcp_api import ComputeClient, ComputeHttpError, chunks, create_failure, zone_of
from scaler.backends.jit_vault import JitVault
from scaler.config import StackConfig
from scaler.naming import INSTANCE_NAME_RE, mig_name

Rows = list[dict[str, Any]]  # listManagedInstances entries
Names = list[str]
CREATED_AT_KEY = "garo-created-at"
# Keys written to the per-instance config rather than the instance, because the listing must show them.
LISTED_METADATA = frozenset({KEEP_KEY})
# deleteInstances/resumeInstances/startInstances document "a maximum of 1000 instances per request";
# createInstances states no limit, so it gets the same one.
BATCH_LIMIT = 1000
DEFAULT_TIME_TO_START = 1800.0  # seconds an unread JIT config is held when the group's timeToStart is not given
_STANDBY_STATUS = {"SUSPENDED": "resumeInstances", "TERMINATED": "startInstances", "STOPPED": "startInstances"}


@dataclass(frozen=True)
class GcpGroup:
    """Where a runner group lives: its regional MIG and an optional fallback MIG."""

    mig: str
    fallback: str | None = None

    @property
    def migs(self) -> tuple[str, ...]:
        return (self.mig,) if self.fallback is None else (self.mig, self.fallback)


class GcpBackend:
    """:class:`scaler.backends.base.Backend` over Compute's REST API."""

    def __init__(
        self,
        project: str,
        region: str,
        groups: Mapping[str, GcpGroup],
        *,
        session: requests.Session | None = None,
        base_url: str = "https://compute.googleapis.com/compute/v1",
        batch_limit: int = BATCH_LIMIT,
        list_ttl: float = 5.0,
        retries: int = 3,  # the agent retries from the truth on its next pass: a failing call must
        backoff: float = 0.25,  # not hold its other actions for seconds (docs/reliability.md, 1 (b))
        timeout: float = 30.0,
        deadline: float = 120.0,
        operation_timeout: float = 300.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        jitter: Callable[[], float] = random.random,
        jit_vault: JitVault | None = None,
        time_to_start: Mapping[str, float] | None = None,
    ) -> None:
        self.project = project
        self.region = region
        #: Unread JIT configs, served to their VMs by the agent's JIT endpoint.
        self.jit_vault = jit_vault if jit_vault is not None else JitVault(wall_clock)
        self.time_to_start = dict(time_to_start or {})
        self._requested: dict[str, float] = {}  # name -> when this process asked Compute to create it
        self.groups = dict(groups)
        self.batch_limit = batch_limit
        self.list_ttl = list_ttl
        self.clock, self.wall_clock = clock, wall_clock
        self.api = ComputeClient(
            project,
            session or _authorized_session(),
            base_url,
            retries=retries,
            backoff=backoff,
            timeout=timeout,
            operation_timeout=operation_timeout,
            sleep=sleep,
            clock=clock,
            deadline=deadline,
            jitter=jitter,
        )
        self._cache: dict[str, tuple[float, Rows]] = {}
        # Listing is single-flight: concurrent callers (the agent writes JIT configs from
        # several threads) share one listManagedInstances instead of each sending their own.
        self._list_lock = threading.Lock()
        self._list_started: dict[str, int] = {}  # mig -> listings started so far
        self._first_seen: dict[str, float] = {}
        # The last listing of each (group, MIG) as Instances, for as long as that listing is cached.
        self._converted: dict[tuple[str, str], tuple[Rows, list[Instance]]] = {}

    @classmethod
    def from_config(cls, config: StackConfig, **kwargs: Any) -> GcpBackend:
        """One MIG per group, plus an on-demand fallback MIG for spot groups that ask for it."""
        if not config.project:
            raise BackendError("gcp:project is not set in the stack config", reason=Failure.INVALID)
        groups = {
            g.name: GcpGroup(
                mig_name(config.department, g.name),
                mig_name(config.department, g.name, True) if g.spot and g.fallback_on_demand else None,
            )
            for g in config.groups
        }
        kwargs.setdefault("time_to_start", {g.name: float(g.time_to_start) for g in config.groups})
        return cls(config.project, config.region, groups, **kwargs)

    # ------------------------------------------------------------------ Backend

    def create(self, group: str, names: Sequence[str], metadata: Mapping[str, Mapping[str, str]]) -> CreateResult:
        where = self._group(group)
        wanted = list(dict.fromkeys(names))
        for name in wanted:
            if not INSTANCE_NAME_RE.match(name):
                raise BackendError(
                    f"invalid instance name {name!r} (RFC 1035, at most 63 characters)", reason=Failure.INVALID
                )
        existing = {
            row["name"] for row in self._rows(where) if row.get("currentAction") not in ("DELETING", "ABANDONING")
        }
        created = [n for n in wanted if n in existing]
        existed = set(created)
        todo = [n for n in wanted if n not in existing]
        jits = {n: items[JIT_KEY] for n, items in metadata.items() if items.get(JIT_KEY)}
        metadata = {n: {k: v for k, v in items.items() if k != JIT_KEY} for n, items in metadata.items()}
        failed: dict[str, CreateFailure] = {}
        for mig in where.migs:
            if not todo:
                break
            ok, refused, there = self._create_in(mig, todo, metadata)
            created += ok
            existed |= there
            for name in ok:
                failed.pop(name, None)
            failed.update(refused)  # the latest reason per name wins
            todo = [n for n, failure in refused.items() if failure.reason in FALLBACK]
        for name in created:
            if name in jits:
                self._hold(group, name, jits[name])
        made = tuple(n for n in wanted if n in created)
        return CreateResult(created=made, failed=failed, existed=tuple(n for n in made if n in existed))

    def delete(self, group: str, names: Sequence[str]) -> None:
        where = self._group(group)
        wanted = set(names)
        self.jit_vault.drop(wanted)  # an unread config dies with its VM
        for name in wanted:
            self._requested.pop(name, None)
        rows = self._find(where, wanted)
        for mig in where.migs:
            urls = [
                row["instance"]
                for row in rows.get(mig, [])
                if row["name"] in wanted and row.get("currentAction") != "DELETING"
            ]
            self._mutate(mig, "deleteInstances", urls, skipInstancesOnValidationError=True)

    def list(self, group: str) -> Sequence[Instance]:
        where = self._group(group)
        listed: list[Instance] = []
        for mig in where.migs:
            rows = self._list_mig(mig)
            seen = self._converted.get((group, mig))
            if seen is None or seen[0] is not rows:  # a new listing: convert it once, not per caller
                seen = (rows, [self._instance(group, row) for row in rows])
                self._converted[(group, mig)] = seen
            listed += seen[1]
        return listed

    def resume_standby(self, group: str, count: int) -> Sequence[str]:
        """Resume suspended members first (seconds), then start stopped ones (a boot)."""
        where = self._group(group)
        picked: Names = []
        for mig in where.migs:
            rows = [
                r
                for r in self._list_mig(mig)
                if r.get("currentAction") == "NONE" and r.get("instanceStatus") in _STANDBY_STATUS
            ]
            rows.sort(key=lambda r: (r["instanceStatus"] != "SUSPENDED", r["name"]))
            chosen = rows[: max(count - len(picked), 0)]
            for method in ("resumeInstances", "startInstances"):
                self._mutate(
                    mig, method, [r["instance"] for r in chosen if _STANDBY_STATUS[r["instanceStatus"]] == method]
                )
            picked += [r["name"] for r in chosen]
        return picked

    def set_metadata(self, group: str, name: str, items: Mapping[str, str]) -> None:
        jit = items.get(JIT_KEY)
        # garo-job is never rewritten on GCP: the listing shows only the per-instance config's copy
        # (set at birth), so a relabel in instance metadata would be read by no one and cost two calls
        # per job another job's runner took (most jobs of a burst). See "Metadata at birth" above.
        items = {k: v for k, v in items.items() if k not in (JIT_KEY, JOB_KEY)}
        if jit == "":
            self.jit_vault.drop([name])  # spent or unwanted: no Compute call, the config never reached Compute
            if not items:
                return
        found = next(
            (
                (mig, r)
                for mig, rows in self._find(self._group(group), {name}).items()
                for r in rows
                if r["name"] == name
            ),
            None,
        )
        if found is None:
            raise BackendError(f"instance {name!r} is not in group {group!r}", reason=Failure.NOT_FOUND)
        mig, row = found
        if jit:
            self._hold(group, name, jit)  # a VM still being created may hold one: it pulls once booted
        listed = {k: v for k, v in items.items() if k in LISTED_METADATA}
        if listed:
            self._patch_preserved(mig, row, listed)
        items = {k: v for k, v in items.items() if k not in LISTED_METADATA}
        if not items:
            return
        if "instanceStatus" not in row:
            raise BackendError(
                f"instance {name!r} does not exist yet (the MIG is still creating it)",
                reason=Failure.NOT_FOUND,
                retryable=True,
            )
        path = f"zones/{zone_of(row['instance'])}/instances/{name}"
        for _ in range(3):
            current = self.api.call("GET", path)["metadata"]
            merged = {item["key"]: item.get("value", "") for item in current.get("items", [])} | dict(items)
            merged = {k: v for k, v in merged.items() if k not in items or v != ""}  # "" removes the key
            body = {
                "fingerprint": current.get("fingerprint"),
                "items": [{"key": k, "value": v} for k, v in merged.items()],
            }
            try:
                # Not awaited: Compute checks the fingerprint when it accepts the call (a 412 comes
                # back here), and what could still go wrong later (the VM vanishing) the next listing
                # shows. Waiting would be one more call and ~2 s per write (docs/security.md, "Calls").
                self.api.call("POST", f"{path}/setMetadata", body=body, secrets=items.values())
                return
            except ComputeHttpError as exc:
                if exc.status != 412:  # someone else changed the metadata: read again and merge again
                    raise
        raise BackendError(f"metadata of {name!r} kept changing under us", reason=Failure.CONFLICT)

    def _hold(self, group: str, name: str, config: str) -> None:
        ttl = self.time_to_start.get(group, DEFAULT_TIME_TO_START)
        self.jit_vault.hold(group, name, config, ttl, self._requested.get(name))

    def _patch_preserved(self, mig: str, row: dict[str, Any], items: Mapping[str, str]) -> None:
        """Write facts the listing must show (garo-keep) into the VM's per-instance config.

        ``listManagedInstances`` returns neither instance labels nor instance
        metadata, only ``preservedStateFromConfig``; ``patchPerInstanceConfigs``
        is one MIG call and needs no restart (a metadata-only change). The whole
        map is sent, so patch-or-replace semantics give the same result; an empty
        value stays as "" (the agent reads it as absent).
        """
        current = {k: str(v) for k, v in ((row.get("preservedStateFromConfig") or {}).get("metadata") or {}).items()}
        config = {"name": row["name"], "preservedState": {"metadata": {**current, **items}}}
        self._cache.pop(mig, None)
        self.api.wait(
            self.api.call(
                "POST",
                f"{self._mig_path(mig)}/patchPerInstanceConfigs",
                body={"perInstanceConfigs": [config]},
                idempotent=True,
            )
        )
        self._cache.pop(mig, None)

    # ------------------------------------------------------------------ internals

    def _group(self, group: str) -> GcpGroup:
        try:
            return self.groups[group]
        except KeyError:
            raise BackendError(f"unknown runner group {group!r}", reason=Failure.NOT_FOUND) from None

    def _mig_path(self, mig: str) -> str:
        return f"regions/{self.region}/instanceGroupManagers/{mig}"

    def _list_mig(self, mig: str, fresh: bool = False) -> Rows:
        """The MIG's members, from a cache of ``list_ttl`` seconds (listing counts against quota).

        ``fresh`` wants a listing that started after the call: one another
        thread started meanwhile is as good as our own.
        """
        asked_after = self._list_started.get(mig, 0)
        with self._list_lock:
            cached = self._cache.get(mig)
            newer = self._list_started.get(mig, 0) > asked_after
            if cached and self.clock() < cached[0] and (not fresh or newer):
                return cached[1]
            self._list_started[mig] = self._list_started.get(mig, 0) + 1
            return self._list_uncached(mig)

    def _list_uncached(self, mig: str) -> Rows:
        rows: Rows = []
        token: str | None = None
        while True:
            page = self.api.call(
                "POST", f"{self._mig_path(mig)}/listManagedInstances", params={"pageToken": token} if token else None
            )
            rows += page.get("managedInstances", [])
            token = page.get("nextPageToken")
            if not token:
                break
        self._cache[mig] = (self.clock() + self.list_ttl, rows)
        return rows

    def _rows(self, where: GcpGroup) -> Iterator[dict[str, Any]]:
        for mig in where.migs:
            yield from self._list_mig(mig)

    def _find(self, where: GcpGroup, names: set[str]) -> dict[str, Rows]:
        """Rows per MIG; re-read once if a name is missing from the cached view."""
        rows = {mig: self._list_mig(mig) for mig in where.migs}
        if names - {r["name"] for found in rows.values() for r in found}:
            rows = {mig: self._list_mig(mig, fresh=True) for mig in where.migs}
        return rows

    def _mutate(self, mig: str, method: str, urls: Sequence[str], **extra: Any) -> None:
        """One MIG mutation per batch of instance URLs; our cached view of the MIG is dropped."""
        for batch in chunks(list(urls), self.batch_limit):
            self._cache.pop(mig, None)
            self.api.wait(
                self.api.call(
                    "POST", f"{self._mig_path(mig)}/{method}", body={"instances": batch, **extra}, idempotent=True
                )
            )
            self._cache.pop(mig, None)

    def _create_in(
        self, mig: str, names: Sequence[str], metadata: Mapping[str, Mapping[str, str]]
    ) -> tuple[Names, dict[str, CreateFailure], set[str]]:
        """Names created (or found there), refused, and found there already (RESOURCE_ALREADY_EXISTS)."""
        errors: dict[str, CreateFailure] = {}
        there: set[str] = set()
        secrets = [v for items in metadata.values() for v in items.values()]
        asked = self.wall_clock()
        born = str(int(asked))
        for name in names:
            self._requested.setdefault(name, asked)
        for batch in chunks(list(names), self.batch_limit):
            configs = [
                {"name": n, "preservedState": {"metadata": {**metadata.get(n, {}), CREATED_AT_KEY: born}}}
                for n in batch
            ]
            self._cache.pop(mig, None)
            op = self.api.wait(
                self.api.call(
                    "POST",
                    f"{self._mig_path(mig)}/createInstances",
                    body={"instances": configs},
                    idempotent=True,
                    secrets=secrets,
                ),
                raise_errors=False,
            )
            for error in op.get("error", {}).get("errors", []):
                if error.get("code") == "RESOURCE_ALREADY_EXISTS":
                    # Someone (a retry, another agent) created it: that is success, but not ours.
                    there |= {n for n in batch if n == error.get("location") or f"/{n}'" in error.get("message", "")}
                    continue
                blamed = [
                    n for n in batch if n == error.get("location") or f"'{n}'" in error.get("message", "")
                ] or batch
                for name in blamed:
                    errors.setdefault(name, create_failure(error))
        rows = {r["name"]: r for r in self._list_mig(mig, fresh=True)}
        created: Names = []
        failed: dict[str, CreateFailure] = {}
        for name in names:
            row = rows.get(name)
            attempt = ((row or {}).get("lastAttempt") or {}).get("errors", {}).get("errors", [])
            if row is not None and attempt and "instanceStatus" not in row:
                failed[name] = create_failure(attempt[0])
            elif row is not None and "instanceStatus" in row or row is not None and name not in errors:
                created.append(name)
            else:
                failed[name] = errors.get(
                    name, CreateFailure(Failure.UNKNOWN, "NOT_CREATED: not a member after createInstances")
                )
        stuck = [rows[n]["instance"] for n in failed if n in rows]
        self._mutate(mig, "deleteInstances", stuck, skipInstancesOnValidationError=True)
        return created, failed, there

    def _instance(self, group: str, row: dict[str, Any]) -> Instance:
        preserved = (row.get("preservedStateFromConfig") or {}).get("metadata") or {}
        try:
            created_at = float(preserved[CREATED_AT_KEY])
        except (KeyError, ValueError):
            created_at = self._first_seen.setdefault(row["name"], self.wall_clock())
        return Instance(
            name=row["name"],
            group=group,
            state=_state(row),
            created_at=created_at,
            labels={},
            zone=zone_of(row.get("instance", "")),
            metadata={k: str(v) for k, v in preserved.items() if k != CREATED_AT_KEY and k not in SECRET_METADATA},
        )


def _state(row: Mapping[str, Any]) -> InstanceState:
    action, status = row.get("currentAction", "NONE"), row.get("instanceStatus")
    if action in ("DELETING", "ABANDONING"):
        return InstanceState.DELETING
    if action in ("RESUMING", "STARTING"):
        return InstanceState.RESUMING
    if status is None:
        return InstanceState.FAILED if (row.get("lastAttempt") or {}).get("errors") else InstanceState.CREATING
    if status in ("SUSPENDED", "SUSPENDING", "TERMINATED", "STOPPED", "STOPPING"):
        return InstanceState.STANDBY
    return InstanceState.RUNNING if status == "RUNNING" else InstanceState.CREATING


def _authorized_session() -> requests.Session:
    """Application Default Credentials (the agent's service account on GCP)."""
    import google.auth
    from google.auth.transport.requests import AuthorizedSession

    credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/compute"])
    return AuthorizedSession(credentials)


__all__ = ["ComputeHttpError", "GcpBackend", "GcpGroup", "mig_name"]
