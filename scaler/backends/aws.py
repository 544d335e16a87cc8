"""The AWS backend: runner groups are Auto Scaling groups (ASGs); instances pull their JIT configs from the agent.

Choices worth knowing (docs/aws-backend.md has the reasoning and the figures):

* **Names without names, many per call.** EC2 has no instance names, so a
  Garo name lives in tags. ``create`` launches up to 40 names of one placement
  with one ``RunInstances`` (the group's launch template, ``MinCount=1``,
  ``MaxCount=k``); EC2 tags all instances of a call alike, so each finds its
  name and facts in the tag of its own launch index (``garo-launch-<i>``,
  :mod:`scaler.backends.aws_launch`), and a batch of one keeps ``Name`` and its
  facts as plain tags. A ``ClientToken`` derived from the batch's names, the
  placement tried and a salt makes a retried or repeated request return the
  same instances instead of a second set, and a listing by tag finds names
  launched earlier (another replica, a restart). If the token answers with
  instances already terminated (names used before), those names are asked
  again with the token salted by that reservation's id, which every replica
  derives alike. Names beyond what EC2 launched (capacity) go to the next
  placement.
* **Attach, then the ASG owns it.** A launched instance joins its group's ASG
  with ``AttachInstances`` (which raises the desired capacity by one) as soon
  as it is ``running`` (AWS refuses earlier); listing does this for any of our
  instances still outside, so a crash between the two calls heals itself.
* **Never by size.** Removal takes members out with ``DetachInstances`` (up
  to 20 ids, ``ShouldDecrementDesiredCapacity=True``: desired capacity drops
  by exactly those) and terminates them all with one ``TerminateInstances``;
  members AWS will not detach (``Pending``), and one or two members when that
  is no more calls, go through ``TerminateInstanceInAutoScalingGroup`` one by
  one, and instances not yet
  attached are plain ``TerminateInstances``. Desired capacity is raised by
  attaching and by resuming the warm pool, and never lowered on its own: the
  ASG would pick its own victims (:mod:`scaler.backends.aws_asg`).
* **Standby is the warm pool.** Warm instances (``Warmed:Stopped`` or
  ``Warmed:Hibernated``) list as ``STANDBY`` under their ``Name`` tag, or a
  name derived from their instance id. ``resume_standby`` raises the desired
  capacity (the ASG then starts warm instances) and waits, with a botocore
  waiter, until it sees which instances left the pool.
* **Fallback.** A placement is (market, instance type, subnet). Capacity and
  quota refusals move the name to the next one: the next subnet (AZ), the next
  instance type, then on-demand for spot groups. A placement refused once is
  skipped for the rest of the call, so a burst does not hammer a dry pool.
* **Throttling** is botocore's: ``Config(retries={"mode": "adaptive"})`` backs
  off and rate-limits the client itself; what still fails maps onto
  :class:`~scaler.backends.base.Failure` (``THROTTLED``, ``CAPACITY`` ...).
* **Metadata.** Facts (garo-job, garo-repo) are tags. With an agent URL
  (``agent_url``, the agent's JIT endpoint) a JIT config costs no AWS call: it
  waits in :attr:`AwsBackend.jit_vault` until its instance pulls it with its
  signed instance identity document (:mod:`scaler.backends.aws_identity`); the
  URL reaches the instance as its ``garo-agent-url`` tag, set at launch. Without
  one (a stack older than the image), the JIT config is an S3
  object ``jit/<runner role id>:<instance id>`` in the department's JIT
  bucket: the runner role may read and delete only the key equal to its own
  ``aws:userid`` (which is ``<role id>:<instance id>`` for an instance
  profile), the boot agent deletes it once read, the agent deletes it when it
  clears a used config or terminates the instance, and a bucket lifecycle
  rule expires anything left.
* **Listing** is ``DescribeInstances`` by the ``garo-asg`` tag, plus the ASG
  (membership, lifecycle) and its warm pool, paginated, cached for
  ``list_ttl`` seconds and single-flight; :mod:`scaler.backends.aws_listing`
  reads the answers into names and states.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from scaler.backends.aws_asg import DETACHABLE, AsgMembership, detach_calls
from scaler.backends.aws_errors import backend_error, failure_for
from scaler.backends.aws_errors import error_parts as _error
from scaler.backends.aws_launch import Placement, batch_name_tag, batch_tags, batch_token, batches, client_token
from scaler.backends.aws_listing import (
    AGENT_URL_TAG,
    ASG_TAG,
    BUCKET_TAG,
    DEPARTMENT_TAG,
    LIVE_STATES,
    WARM_READY,
    Row,
    instance_of,
    rows_of,
)
from scaler.backends.base import (
    FALLBACK,
    JIT_KEY,
    SECRET_METADATA,
    BackendError,
    CreateFailure,
    CreateResult,
    Failure,
    Instance,
)
from scaler.backends.jit_vault import JitVault
from scaler.config import StackConfig
from scaler.naming import INSTANCE_NAME_RE, group_prefix

log = logging.getLogger(__name__)

DEFAULT_TIME_TO_START = 900.0  # seconds an unread JIT config is held when the group names no time_to_start
JIT_PREFIX = "jit/"
TERMINATE_LIMIT = 1000  # TerminateInstances: up to 1,000 instance ids per request
DELETE_OBJECTS_LIMIT = 1000  # S3 DeleteObjects: up to 1,000 keys per request

# Every API action the backend calls, and on what: infra grants exactly these, conditioned on the
# department tag where the action supports it (docs/aws-backend.md). Not listed: sts:GetCallerIdentity (the
# account id, once, when the agent serves JIT configs), which needs no permission and cannot be denied.
PERMISSIONS: Mapping[str, str] = {
    "ec2:RunInstances": "launch template, subnets, AMI, security group, volumes, network interfaces, instances",
    "ec2:CreateTags": "instances: at launch (ec2:CreateAction=RunInstances) and garo-* metadata on own instances",
    "ec2:DeleteTags": "own instances (metadata removal)",
    "ec2:DescribeInstances": "* (describe calls take no resource ARNs)",
    "ec2:TerminateInstances": "own instances: detached from their ASG, or not yet attached",
    "iam:PassRole": "the runner role only (its instance profile is in the launch template)",
    "autoscaling:DescribeAutoScalingGroups": "* (describe calls take no resource ARNs)",
    "autoscaling:DescribeWarmPool": "* (describe calls take no resource ARNs)",
    "autoscaling:AttachInstances": "own ASGs",
    "autoscaling:DetachInstances": "own ASGs (with ShouldDecrementDesiredCapacity, right before TerminateInstances)",
    "autoscaling:SetDesiredCapacity": "own ASGs (raised only, to resume the warm pool)",
    "autoscaling:TerminateInstanceInAutoScalingGroup": "own ASGs (members AWS will not detach: Pending ...)",
    "s3:PutObject": "arn:aws:s3:::<jit bucket>/jit/*",
    "s3:DeleteObject": "arn:aws:s3:::<jit bucket>/jit/*",
}


@dataclass(frozen=True)
class AwsGroup:
    """Where a runner group lives.

    ``asg`` takes spot instances when ``spot`` is set, else on-demand ones;
    ``on_demand_asg`` (for example an on-demand group with a warm pool behind
    a spot group: AWS refuses a warm pool beside spot) takes the on-demand
    fallback. ``instance_types`` is the fallback order; subnets and the launch
    template are read from the ASG itself.
    """

    asg: str
    instance_types: tuple[str, ...]
    spot: bool = False
    on_demand_fallback: bool = True
    on_demand_asg: str | None = None

    @property
    def asgs(self) -> tuple[str, ...]:
        return (self.asg,) if self.on_demand_asg in (None, self.asg) else (self.asg, str(self.on_demand_asg))


_Rows = list[Row]  # aliases: inside AwsBackend, ``list`` is the Backend method
_Names = list[str]
_Placements = list[Placement]


@dataclass
class _Listing:
    expires: float
    rows: list[Row] = field(default_factory=list)


def asg_name(department: str, group: str) -> str:
    """The ASG of a runner group when the deployment names none (the Pulumi program uses the same rule)."""
    return f"garo-{department}-{group}"


def jit_key(instance_id: str, runner_role_id: str) -> str:
    """The S3 key of an instance's JIT config: the runner role's ``aws:userid`` for that instance."""
    return f"{JIT_PREFIX}{runner_role_id}:{instance_id}" if runner_role_id else f"{JIT_PREFIX}{instance_id}"


def default_config(mode: str = "adaptive", max_attempts: int = 8) -> Config:
    """botocore's own retries: ``adaptive`` adds client-side rate limiting to ``standard``'s backoff.

    ``max_attempts`` counts retries after the first attempt (botocore's meaning).
    """
    return Config(
        retries={"mode": mode, "max_attempts": max_attempts},
        connect_timeout=10,
        read_timeout=30,
        max_pool_connections=32,
    )


class AwsBackend:
    """:class:`scaler.backends.base.Backend` over EC2, Auto Scaling and S3 (boto3)."""

    def __init__(
        self,
        department: str,
        region: str,
        groups: Mapping[str, AwsGroup],
        *,
        jit_bucket: str,
        runner_role_id: str = "",
        session: Any = None,
        endpoint_url: str | None = None,
        config: Config | None = None,
        list_ttl: float = 5.0,
        resume_wait: float = 60.0,
        resume_poll: int = 2,
        clock: Callable[[], float] = time.monotonic,
        agent_url: str = "",
        jit_vault: JitVault | None = None,
        time_to_start: Mapping[str, float] | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        import boto3

        self.department = department
        self.region = region
        #: The agent's JIT endpoint as instances reach it; empty: configs travel through S3 (the fallback).
        self.agent_url = agent_url
        #: Unread JIT configs, served to their instances by the agent's JIT endpoint (when ``agent_url`` is set).
        self.jit_vault = jit_vault if jit_vault is not None else JitVault(wall_clock)
        self.time_to_start = dict(time_to_start or {})
        self.wall_clock = wall_clock
        self._requested: dict[str, float] = {}  # name -> when this process asked EC2 for it (wall clock)
        self._names: dict[str, str] = {}  # instance id -> Garo name, from RunInstances answers and listings
        self.groups = dict(groups)
        self.jit_bucket = jit_bucket
        self.runner_role_id = runner_role_id
        self.list_ttl = list_ttl
        self.resume_wait, self.resume_poll = resume_wait, resume_poll
        self.clock = clock
        session = session or boto3.Session()
        config = config or default_config()
        self.ec2 = session.client("ec2", region_name=region, endpoint_url=endpoint_url, config=config)
        self.autoscaling = session.client("autoscaling", region_name=region, endpoint_url=endpoint_url, config=config)
        self.s3 = session.client("s3", region_name=region, endpoint_url=endpoint_url, config=config)
        self.sts = session.client("sts", region_name=region, endpoint_url=endpoint_url, config=config)
        self._account_id = ""
        self._cache: dict[str, _Listing] = {}
        self._asg_info: dict[str, dict[str, Any]] = {}
        self._list_lock = threading.Lock()
        self._list_started: dict[str, int] = {}
        self._members = AsgMembership(self.autoscaling, resume_wait, resume_poll)

    @classmethod
    def from_config(
        cls,
        config: StackConfig,
        *,
        jit_bucket: str,
        runner_role_id: str,
        asgs: Mapping[str, tuple[str, str | None]] | None = None,
        **kwargs: Any,
    ) -> AwsBackend:
        """One ASG per group, types in fallback order.

        Named by ``asgs`` (as deployed), else as infra/aws names them: ``garo-<department>-<group>``, and for a
        spot group that falls back to on-demand, the on-demand ASG ``garo-<department>-<group>-od``.
        """
        groups: dict[str, AwsGroup] = {}
        for g in config.groups:
            default = asg_name(config.department, g.name)
            fallback = f"{default}-od" if g.spot and g.fallback_on_demand else None
            asg, on_demand = (asgs or {}).get(g.name, (default, fallback))
            types = g.instance_types or (g.machine_type,)
            groups[g.name] = AwsGroup(asg, types, g.spot, g.fallback_on_demand, on_demand)
        kwargs.setdefault("time_to_start", {g.name: float(g.time_to_start) for g in config.groups})
        return cls(
            config.department, config.region, groups, jit_bucket=jit_bucket, runner_role_id=runner_role_id, **kwargs
        )

    # ------------------------------------------------------------------ Backend

    def create(self, group: str, names: Sequence[str], metadata: Mapping[str, Mapping[str, str]]) -> CreateResult:
        where = self._group(group)
        wanted = list(dict.fromkeys(names))
        for name in wanted:
            if not INSTANCE_NAME_RE.match(name):
                raise BackendError(
                    f"invalid instance name {name!r} (RFC 1035, at most 63 characters)", reason=Failure.INVALID
                )
        existing = {r.name for r in self._rows(group, where) if r.ec2_state != "shutting-down"}
        created = [n for n in wanted if n in existing]
        failed: dict[str, CreateFailure] = {}
        dry: set[Placement] = set()  # refused for capacity or quota in this call: not asked again
        placements = self._placements(where)
        facts = {n: _facts(metadata.get(n, {})) for n in wanted}
        try:
            for batch in batches([n for n in wanted if n not in existing], facts):
                launched, refused = self._launch(group, batch, facts, placements, dry)
                created += launched
                failed.update(refused)
        finally:
            for asg in where.asgs:
                self._cache.pop(asg, None)
        made = tuple(n for n in wanted if n in created)
        return CreateResult(created=made, failed=failed, existed=tuple(n for n in made if n in existing))

    def delete(self, group: str, names: Sequence[str]) -> None:
        where = self._group(group)
        wanted = set(names)
        rows = [r for r in self._find(group, where, wanted) if r.name in wanted and r.ec2_state != "shutting-down"]
        # Not attached, warm, or detached already (by a delete that failed before terminating): plain terminate.
        loose = [r.id for r in rows if not r.lifecycle or r.warm or r.lifecycle.startswith("Detach")]
        members = [r for r in rows if r.lifecycle and not r.warm and not r.lifecycle.startswith(("Terminat", "Detach"))]
        detachable = [r for r in members if r.lifecycle in DETACHABLE]
        if detach_calls(detachable) + (0 if loose else 1) >= len(detachable):
            detachable = []  # as few or fewer calls one by one (one instance, two): no detached-but-live window
        try:
            loose += self._members.detach(detachable)
            detaching = {r.id for r in detachable}
            for row in members:
                if row.id not in detaching:
                    self._members.terminate_in_asg(row)  # Pending ...: AWS detaches only InService and Standby members
            for start in range(0, len(loose), TERMINATE_LIMIT):
                chunk = loose[start : start + TERMINATE_LIMIT]
                self._call(self.ec2.terminate_instances, "TerminateInstances", InstanceIds=chunk)
        finally:
            for asg in where.asgs:
                self._cache.pop(asg, None)
        self.jit_vault.drop(wanted)  # an unread config dies with its instance
        for name in wanted:
            self._requested.pop(name, None)
        for row in rows:
            self._names.pop(row.id, None)
        by_s3 = [r.id for r in rows if r.tags.get(AGENT_URL_TAG) != self.agent_url or not self.agent_url]
        if by_s3:
            self._delete_jit_objects(by_s3)  # never read: gone with the instance

    def list(self, group: str) -> Sequence[Instance]:
        where = self._group(group)
        return [instance_of(group, row) for row in self._rows(group, where)]

    def resume_standby(self, group: str, count: int) -> Sequence[str]:
        """Raise the desired capacity by the warm instances wanted; return those the ASG took out of the pool."""
        where = self._group(group)
        if count <= 0:
            return []
        picked: _Names = []
        for asg in where.asgs:
            rows = self._list_asg(group, asg, fresh=True)
            warm = [r for r in rows if r.warm and r.lifecycle in WARM_READY]
            take = min(count - len(picked), len(warm))
            if take <= 0:
                continue
            info = self._asg(asg, fresh=True)
            members = [i for i in info.get("Instances", []) if i.get("LifecycleState") != "Terminating"]
            desired = int(info.get("DesiredCapacity", 0))
            take = min(take, int(info.get("MaxSize", 0)) - desired)
            if take <= 0:
                continue
            self._cache.pop(asg, None)
            self._call(
                self.autoscaling.set_desired_capacity,
                "SetDesiredCapacity",
                AutoScalingGroupName=asg,
                DesiredCapacity=desired + take,
                HonorCooldown=False,
            )
            self._members.wait_for_warm_exit(asg, [r.id for r in warm], take)
            joined = self._asg(asg, fresh=True).get("Instances", [])
            was_member = {i["InstanceId"] for i in members}
            left_pool = {r.id: r.name for r in warm if r.id not in was_member}
            picked += [left_pool[i["InstanceId"]] for i in joined if i["InstanceId"] in left_pool]
            self._cache.pop(asg, None)
            if len(picked) >= count:
                break
        return picked[:count]

    def set_metadata(self, group: str, name: str, items: Mapping[str, str]) -> None:
        where = self._group(group)
        if self.agent_url and JIT_KEY in items and self._pulls(group, where, name):
            # Pulled by the instance from the agent: no AWS call (docs/aws-backend.md, "JIT delivery").
            if items[JIT_KEY]:
                ttl = self.time_to_start.get(group, DEFAULT_TIME_TO_START)
                self.jit_vault.hold(group, name, items[JIT_KEY], ttl, self._requested.get(name))
            else:
                self.jit_vault.drop([name])
            items = {k: v for k, v in items.items() if k != JIT_KEY}
            if not items:
                return
        row = next((r for r in self._find(group, where, {name}) if r.name == name), None)
        if row is None or row.ec2_state == "shutting-down":
            raise BackendError(f"instance {name!r} is not in group {group!r}", reason=Failure.NOT_FOUND)
        tags = {k: v for k, v in items.items() if k not in SECRET_METADATA}
        if JIT_KEY in items:
            key = jit_key(row.id, self.runner_role_id)
            if items[JIT_KEY]:
                self._call(
                    self.s3.put_object,
                    "PutObject",
                    Bucket=self.jit_bucket,
                    Key=key,
                    Body=items[JIT_KEY].encode(),
                    ContentType="text/plain",
                )
            else:
                self._call(self.s3.delete_object, "DeleteObject", Bucket=self.jit_bucket, Key=key)
        put = [{"Key": k, "Value": v} for k, v in tags.items() if v]
        drop = [{"Key": k} for k, v in tags.items() if not v]
        if row.batched:
            # A fact of a batched instance also lives in its garo-launch-<index> tag, which the other
            # instances of its batch share: an empty tag of its own hides it (listings skip empty values).
            put += [{"Key": d["Key"], "Value": ""} for d in drop]
            drop = []
        if put:
            self._call(self.ec2.create_tags, "CreateTags", Resources=[row.id], Tags=put)
        if drop:
            self._call(self.ec2.delete_tags, "DeleteTags", Resources=[row.id], Tags=drop)
        if put or drop:
            self._cache.pop(row.asg, None)

    # ------------------------------------------------------------------ JIT pull

    def instance_name(self, instance_id: str) -> str | None:
        """The Garo name of one of our instances (launched or listed by this process); None for any other id."""
        return self._names.get(instance_id)

    def _pulls(self, group: str, where: AwsGroup, name: str) -> bool:
        """Whether this instance pulls its config from this agent (it carries our ``garo-agent-url`` tag).

        Instances this process launched do, without a look. Others (a warm instance the ASG launched,
        which has only the ASG's tags; one launched under an older stack) are looked up in the
        cached listing: without the tag their boot agent reads S3, so the config goes there.
        """
        if name in self._requested:
            return True
        row = next((r for r in self._find(group, where, {name}) if r.name == name), None)
        return row is None or row.tags.get(AGENT_URL_TAG) == self.agent_url

    def account_id(self) -> str:
        """The AWS account the agent works in (one STS call, then cached): identity documents must name it."""
        if not self._account_id:
            self._account_id = str(self._call(self.sts.get_caller_identity, "GetCallerIdentity")["Account"])
        return self._account_id

    # ------------------------------------------------------------------ creation

    def _placements(self, where: AwsGroup) -> _Placements:
        markets = [True, False] if where.spot and where.on_demand_fallback else [where.spot]
        out: _Placements = []
        for spot in markets:
            asg = where.asg if spot or where.on_demand_asg is None else where.on_demand_asg
            subnets = self._subnets(asg)
            out += [Placement(spot, t, s, asg) for t in where.instance_types for s in subnets]
        return out

    def _launch(
        self,
        group: str,
        names: Sequence[str],
        facts: Mapping[str, Mapping[str, str]],
        placements: Sequence[Placement],
        dry: set[Placement],
    ) -> tuple[_Names, dict[str, CreateFailure]]:
        """One batch, placement after placement: the names launched, and why the others were not.

        A placement that launched fewer instances than asked (EC2 fills the lowest
        launch indexes first) is short of capacity: the rest try the next one, as
        a new batch. Names whose instance the token answers with is terminated (a
        name used before) are asked again at the same placement, with the token
        salted by that reservation's id, which every replica derives alike.
        """
        launched: _Names = []
        left = list(names)
        last = CreateFailure(Failure.CAPACITY, "no placement left to try")
        for placement in placements:
            if not left:
                break
            if placement in dry:
                continue
            asking, salt = list(left), ""
            for _ in range(3):
                now = self.wall_clock()
                for name in asking:
                    self._requested.setdefault(name, now)  # before the ask: pendingTime comes after it
                try:
                    reply = self.ec2.run_instances(**self._run_request(group, asking, facts, placement, salt))
                except ClientError as exc:
                    code, message, status = _error(exc)
                    last = CreateFailure(failure_for(code, status), f"{code}: {message[:200]}")
                    break
                except BotoCoreError as exc:
                    last = CreateFailure(Failure.UNAVAILABLE, type(exc).__name__)
                    return launched, {n: last for n in left}
                by_index = {int(i.get("AmiLaunchIndex") or 0): i for i in reply.get("Instances", [])}
                dead: _Names = []
                for index, name in enumerate(asking):
                    instance = by_index.get(index)
                    if instance is None:
                        continue  # not launched here: capacity ran short
                    if instance.get("State", {}).get("Name") in ("shutting-down", "terminated"):
                        dead.append(name)
                        continue
                    self._names[str(instance["InstanceId"])] = name
                    launched.append(name)
                    left.remove(name)
                if len(by_index) < len(asking):
                    last = CreateFailure(Failure.CAPACITY, f"{placement.instance_type} in {placement.subnet}: short")
                if not dead:
                    break
                asking, salt = dead, str(reply.get("ReservationId") or by_index[0].get("InstanceId"))
            else:
                last = CreateFailure(Failure.CONFLICT, "client token keeps answering with terminated instances")
            if not left:
                break  # all launched here: the placement stays open for the next batch
            if last.reason not in FALLBACK:
                break
            dry.add(placement)
        return launched, {n: last for n in left}

    def _run_request(
        self,
        group: str,
        names: Sequence[str],
        facts: Mapping[str, Mapping[str, str]],
        placement: Placement,
        salt: str,
    ) -> dict[str, Any]:
        asg = self._asg(placement.asg)
        # A group with a mixed-instances policy (spot, several types) keeps its template inside the policy.
        mixed = (asg.get("MixedInstancesPolicy") or {}).get("LaunchTemplate") or {}
        template = asg.get("LaunchTemplate") or mixed.get("LaunchTemplateSpecification") or {}
        spec = {k: template[k] for k in ("LaunchTemplateId", "LaunchTemplateName") if template.get(k)}
        if not spec:
            raise BackendError(f"ASG {placement.asg} has no launch template", reason=Failure.INVALID)
        spec["Version"] = str(template.get("Version") or "$Default")
        # One name: its Name and facts as plain tags (as before batching). Several: each instance finds
        # its own in the tag of its launch index (scaler/backends/aws_launch.py).
        identity = dict(facts.get(names[0], {})) if len(names) == 1 else batch_tags(names, facts)
        tags = {
            "Name": batch_name_tag(names),
            ASG_TAG: placement.asg,
            DEPARTMENT_TAG: self.department,
            BUCKET_TAG: self.jit_bucket,
            **({AGENT_URL_TAG: self.agent_url} if self.agent_url else {}),
            **identity,
        }
        request: dict[str, Any] = {
            "LaunchTemplate": spec,
            "InstanceType": placement.instance_type,
            "SubnetId": placement.subnet,
            "MinCount": 1,
            "MaxCount": len(names),
            "ClientToken": batch_token(names, placement, salt),
            "TagSpecifications": [
                {"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]},
                {
                    "ResourceType": "volume",
                    "Tags": [
                        {"Key": "Name", "Value": batch_name_tag(names)},
                        {"Key": DEPARTMENT_TAG, "Value": self.department},
                    ],
                },
            ],
        }
        if placement.spot:
            request["InstanceMarketOptions"] = {
                "MarketType": "spot",
                "SpotOptions": {"SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"},
            }
        return request

    def _delete_jit_objects(self, instance_ids: Sequence[str]) -> None:
        keys = [{"Key": jit_key(i, self.runner_role_id)} for i in instance_ids]
        for start in range(0, len(keys), DELETE_OBJECTS_LIMIT):
            try:
                self.s3.delete_objects(
                    Bucket=self.jit_bucket,
                    Delete={"Objects": keys[start : start + DELETE_OBJECTS_LIMIT], "Quiet": True},
                )
            except (ClientError, BotoCoreError):
                log.warning("cannot delete JIT objects of terminated instances; the bucket lifecycle rule expires them")

    # ------------------------------------------------------------------ listing

    def _group(self, group: str) -> AwsGroup:
        try:
            return self.groups[group]
        except KeyError:
            raise BackendError(f"unknown runner group {group!r}", reason=Failure.NOT_FOUND) from None

    def _asg(self, asg: str, fresh: bool = False) -> dict[str, Any]:
        if fresh or asg not in self._asg_info:
            found = self._call(
                self.autoscaling.describe_auto_scaling_groups, "DescribeAutoScalingGroups", AutoScalingGroupNames=[asg]
            )["AutoScalingGroups"]
            if not found:
                raise BackendError(f"Auto Scaling group {asg!r} does not exist", reason=Failure.NOT_FOUND)
            self._asg_info[asg] = found[0]
        return self._asg_info[asg]

    def _subnets(self, asg: str) -> _Names:
        subnets = [s for s in str(self._asg(asg).get("VPCZoneIdentifier") or "").split(",") if s]
        if not subnets:
            raise BackendError(f"ASG {asg} has no subnets (VPCZoneIdentifier)", reason=Failure.INVALID)
        return subnets

    def _rows(self, group: str, where: AwsGroup) -> _Rows:
        return [row for asg in where.asgs for row in self._list_asg(group, asg)]

    def _find(self, group: str, where: AwsGroup, names: set[str]) -> _Rows:
        rows = self._rows(group, where)
        if names - {r.name for r in rows}:
            rows = [row for asg in where.asgs for row in self._list_asg(group, asg, fresh=True)]
        return rows

    def _list_asg(self, group: str, asg: str, fresh: bool = False) -> _Rows:
        """The ASG's instances from a cache of ``list_ttl`` seconds; concurrent callers share one listing."""
        asked_after = self._list_started.get(asg, 0)
        with self._list_lock:
            cached = self._cache.get(asg)
            newer = self._list_started.get(asg, 0) > asked_after
            if cached and self.clock() < cached.expires and (not fresh or newer):
                return cached.rows
            self._list_started[asg] = self._list_started.get(asg, 0) + 1
            rows = self._list_uncached(group, asg)
            self._members.attach_ready(asg, rows)
            self._cache[asg] = _Listing(self.clock() + self.list_ttl, rows)
            return rows

    def _list_uncached(self, group: str, asg: str) -> _Rows:
        info = self._asg(asg, fresh=True)
        lifecycle = {i["InstanceId"]: str(i.get("LifecycleState", "")) for i in info.get("Instances", [])}
        warm: dict[str, str] = {}
        if info.get("WarmPoolConfiguration"):
            pages = self.autoscaling.get_paginator("describe_warm_pool").paginate(AutoScalingGroupName=asg)
            for page in self._pages(pages, "DescribeWarmPool"):
                warm.update({i["InstanceId"]: str(i.get("LifecycleState", "")) for i in page.get("Instances", [])})
        pages = self.ec2.get_paginator("describe_instances").paginate(
            Filters=[
                {"Name": f"tag:{ASG_TAG}", "Values": [asg]},
                {"Name": "instance-state-name", "Values": LIVE_STATES},
            ]
        )
        rows = rows_of(
            self._pages(pages, "DescribeInstances"), asg, group_prefix(self.department, group), lifecycle, warm
        )
        self._names.update((row.id, row.name) for row in rows)
        return rows

    def _pages(self, pages: Iterable[dict[str, Any]], action: str) -> Iterable[dict[str, Any]]:
        try:
            yield from pages
        except (ClientError, BotoCoreError) as exc:
            raise backend_error(exc, action) from None

    def _call(self, method: Callable[..., dict[str, Any]], action: str, **kwargs: Any) -> dict[str, Any]:
        try:
            return method(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise backend_error(exc, action) from None


def _facts(metadata: Mapping[str, str]) -> dict[str, str]:
    """The facts an instance carries as tags: set ones, never a secret."""
    return {k: v for k, v in metadata.items() if v and k not in SECRET_METADATA}


__all__ = [
    "AGENT_URL_TAG",
    "ASG_TAG",
    "BUCKET_TAG",
    "DEPARTMENT_TAG",
    "PERMISSIONS",
    "AwsBackend",
    "AwsGroup",
    "Placement",
    "asg_name",
    "backend_error",
    "client_token",
    "failure_for",
    "jit_key",
]
