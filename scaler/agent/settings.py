"""Every agent setting the environment can give, read in this one place.

Two ways to run the agent, one reader:

* on a laptop: ``--stack Pulumi.<dept>.yaml`` (or ``GARO_STACK_FILE``), a bus URL
  (``--bus``/``GARO_BUS``, default the embedded SQLite bus the webhook also
  defaults to, :data:`scaler.bus.url.DEFAULT_BUS`) and a GitHub token
  (``GARO_GITHUB_TOKEN``) or App key file (``GARO_GITHUB_APP_KEY_FILE``);
* as infra/ deploys it (infra/department.py builds this env for the container):
  ``GARO_STACK_CONFIG`` (the stack's config as JSON, secrets replaced by
  markers), ``GARO_BUS=pubsub://<project>/<subscription>``, ``GARO_POOLS``
  (JSON list: group name -> ``mig``/``fallbackMig``), ``GARO_DEPARTMENT``,
  ``GARO_PROJECT``, ``GARO_REGION`` (must agree with the stack config) and
  ``GARO_GITHUB_SECRET``, a Secret Manager resource name holding the App's
  private key (or the token, if the stack uses one), read over REST with the
  VM's default credentials. No credential ever sits in the env or metadata.
A GCP agent also serves its JIT endpoint: ``GARO_JIT_URL`` (the URL runner VMs
use, which is also their identity tokens' audience), ``GARO_JIT_PORT``
(default 8780) and, for tests only, ``GARO_JIT_CERTS_URL``. An AWS agent serves
it when ``GARO_JIT_URL`` is set, and then needs ``GARO_JIT_AWS_CERT_FILE``: AWS's
published RSA certificate for the region, which signs instance identity
documents (without ``GARO_JIT_URL``, configs travel through S3).

On AWS (``garo:cloud: aws``, docs/aws-backend.md) the agent also reads
``GARO_JIT_BUCKET`` (the department's JIT bucket), ``GARO_RUNNER_ROLE_ID`` (the
runner role's unique id, ``AROA...``: JIT objects are keyed by it) and,
optionally, ``GARO_AWS_ASGS`` (JSON: group name -> ``asg``/``onDemandAsg``;
else ``GARO_POOLS``, where infra/aws writes each group's ASG as ``mig`` and
its on-demand ASG as ``fallbackMig``; else ``garo-<department>-<group>`` and,
for a spot group with on-demand fallback, ``garo-<department>-<group>-od``). ``GARO_GITHUB_SECRET`` may then be a
Secrets Manager ARN. boto3 finds its own credentials (the task or instance
role) and honours ``AWS_ENDPOINT_URL``; the Pub/Sub subscription is read with
``GOOGLE_APPLICATION_CREDENTIALS`` pointing at the ``external_account``
(workload identity federation) file the stack produces.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from scaler.bus.url import DEFAULT_BUS, parse_bus_url
from scaler.config import ConfigError, StackConfig, load_stack_file, parse_stack_config

SECRET_MANAGER = "https://secretmanager.googleapis.com/v1"
#: Where a GCP agent serves JIT configs to its runner VMs (scaler/agent/jit_endpoint.py, infra/jit_endpoint.py).
DEFAULT_JIT_PORT = 8780


class SettingsError(ValueError):
    """The environment does not describe a runnable agent; the message says which variable."""


@dataclass(frozen=True)
class Pool:
    mig: str
    fallback: str | None = None


@dataclass(frozen=True)
class AgentSettings:
    config: StackConfig
    bus: str
    pools: Mapping[str, Pool] = field(default_factory=dict)  # empty: MIG names by convention
    github_secret: str | None = None  # Secret Manager resource name
    github_token: str | None = field(default=None, repr=False)
    github_key_file: str | None = None
    fleet_dir: str | None = None
    aws: AwsSettings | None = None
    jit: JitSettings | None = None  # GCP: where runner VMs pull their JIT configs (GARO_JIT_URL)


@dataclass(frozen=True)
class JitSettings:
    """The agent's JIT endpoint on GCP (scaler/agent/jit_endpoint.py): runner VMs pull their configs there."""

    url: str  # as runner VMs reach it, e.g. http://10.10.0.2:8780; also the identity token's audience
    port: int
    certs_url: str  # Google's signing keys (GARO_JIT_CERTS_URL overrides it for tests)
    aws_certificate: str = ""  # AWS: the region's RSA certificate for identity documents (GARO_JIT_AWS_CERT_FILE)


@dataclass(frozen=True)
class AwsSettings:
    jit_bucket: str
    runner_role_id: str
    asgs: Mapping[str, tuple[str, str | None]] = field(default_factory=dict)  # empty: names by convention


def load(env: Mapping[str, str], stack: str | None = None, bus: str | None = None) -> AgentSettings:
    """Settings from command-line values (win) and the environment."""
    config = _config(env, stack)
    for var, expected in (
        ("GARO_DEPARTMENT", config.department),
        ("GARO_PROJECT", config.project),
        ("GARO_REGION", config.region),
    ):
        if env.get(var) and expected and env[var] != expected:
            raise SettingsError(f"{var}={env[var]!r} disagrees with the stack config ({expected!r})")
    url = bus or env.get("GARO_BUS") or DEFAULT_BUS
    try:
        parsed = parse_bus_url(url)
    except ValueError as exc:
        raise SettingsError(f"GARO_BUS (or --bus): {exc}") from None
    subscription = env.get("GARO_SUBSCRIPTION", "")
    if subscription and parsed.scheme == "pubsub" and parsed.name != subscription.rsplit("/", 1)[-1]:
        raise SettingsError("GARO_SUBSCRIPTION and GARO_BUS name different subscriptions")
    return AgentSettings(
        config=config,
        bus=url,
        pools=_pools(env.get("GARO_POOLS"), config),
        github_secret=env.get("GARO_GITHUB_SECRET") or None,
        github_token=env.get("GARO_GITHUB_TOKEN") or None,
        github_key_file=env.get("GARO_GITHUB_APP_KEY_FILE") or None,
        fleet_dir=env.get("GARO_FLEET_DIR") or None,
        aws=_aws(env, config) if config.cloud == "aws" else None,
        jit=_jit(env) if env.get("GARO_JIT_URL") else None,
    )


def _jit(env: Mapping[str, str]) -> JitSettings:
    from scaler.backends.jit_vault import GOOGLE_CERTS_URL

    url = env["GARO_JIT_URL"].rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise SettingsError("GARO_JIT_URL must be the agent's URL as runner VMs reach it (http://<ip>:<port>)")
    try:
        port = int(env.get("GARO_JIT_PORT") or DEFAULT_JIT_PORT)
    except ValueError:
        raise SettingsError("GARO_JIT_PORT is not a port number") from None
    if not 0 < port < 65536:
        raise SettingsError("GARO_JIT_PORT is not a port number")
    certificate = ""
    if env.get("GARO_JIT_AWS_CERT_FILE"):
        try:
            with open(env["GARO_JIT_AWS_CERT_FILE"], encoding="ascii") as pem:
                certificate = pem.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise SettingsError(f"GARO_JIT_AWS_CERT_FILE cannot be read: {type(exc).__name__}") from None
        if "BEGIN CERTIFICATE" not in certificate:
            raise SettingsError("GARO_JIT_AWS_CERT_FILE holds no PEM certificate (AWS's RSA one for the region)")
    return JitSettings(url, port, env.get("GARO_JIT_CERTS_URL") or GOOGLE_CERTS_URL, certificate)


def _aws(env: Mapping[str, str], config: StackConfig) -> AwsSettings:
    missing = [var for var in ("GARO_JIT_BUCKET", "GARO_RUNNER_ROLE_ID") if not env.get(var)]
    if missing:
        raise SettingsError(f"an AWS department needs {' and '.join(missing)} (see docs/aws-backend.md)")
    asgs: dict[str, tuple[str, str | None]] = {}
    if env.get("GARO_AWS_ASGS"):
        try:
            items = json.loads(env["GARO_AWS_ASGS"])
        except ValueError:
            raise SettingsError("GARO_AWS_ASGS is not JSON") from None
        if not isinstance(items, dict):
            raise SettingsError('GARO_AWS_ASGS must map group names to {"asg": ..., "onDemandAsg": ...}')
        for name, row in items.items():
            if not isinstance(row, dict) or not isinstance(row.get("asg"), str):
                raise SettingsError(f"GARO_AWS_ASGS[{name!r}] needs an asg")
            asgs[str(name)] = (row["asg"], row.get("onDemandAsg") or None)
        missing = sorted({g.name for g in config.groups} - set(asgs))
        if missing:
            raise SettingsError(f"GARO_AWS_ASGS has no ASG for group(s) {', '.join(missing)}")
    return AwsSettings(env["GARO_JIT_BUCKET"], env["GARO_RUNNER_ROLE_ID"], asgs)


def _config(env: Mapping[str, str], stack: str | None) -> StackConfig:
    path = stack or env.get("GARO_STACK_FILE")
    if path:
        config = load_stack_file(path)
    elif env.get("GARO_STACK_CONFIG"):
        try:
            document = json.loads(env["GARO_STACK_CONFIG"])
        except ValueError:
            raise SettingsError("GARO_STACK_CONFIG is not JSON") from None
        raw = document.get("config") if isinstance(document, dict) else None
        if not isinstance(raw, dict):
            raise SettingsError('GARO_STACK_CONFIG must be {"config": {...}}')
        config = parse_stack_config(raw, "GARO_STACK_CONFIG")
    else:
        raise SettingsError("give --stack, GARO_STACK_FILE or GARO_STACK_CONFIG")
    if config.kind != "department":
        raise SettingsError("that is a hub stack; the agent runs per department")
    return config


def _pools(text: str | None, config: StackConfig) -> dict[str, Pool]:
    if not text:
        return {}
    try:
        items = json.loads(text)
    except ValueError:
        raise SettingsError("GARO_POOLS is not JSON") from None
    rows = items if isinstance(items, list) else [{"name": k, **v} for k, v in dict(items).items()]
    pools: dict[str, Pool] = {}
    for row in rows:
        if not isinstance(row, dict) or not isinstance(row.get("name"), str) or not isinstance(row.get("mig"), str):
            raise SettingsError("GARO_POOLS entries need a name and a mig")
        pools[row["name"]] = Pool(row["mig"], row.get("fallbackMig") or None)
    missing = sorted(set(g.name for g in config.groups) - set(pools))
    if missing:
        raise SettingsError(f"GARO_POOLS has no MIG for group(s) {', '.join(missing)}")
    return pools


def read_secret(name: str, session: Any = None, base_url: str = SECRET_MANAGER) -> str:
    """The latest version of a Secret Manager secret (or an AWS Secrets Manager ARN), with default credentials."""
    if name.startswith("arn:aws:secretsmanager:"):
        return _read_aws_secret(name)
    if not name.startswith("projects/") or "/secrets/" not in name:
        raise SettingsError("GARO_GITHUB_SECRET must look like projects/<p>/secrets/<id>[/versions/<v>]")
    version = name if "/versions/" in name else f"{name}/versions/latest"
    if session is None:
        import google.auth
        from google.auth.transport.requests import AuthorizedSession

        credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
        session = AuthorizedSession(credentials)
    response = session.get(f"{base_url}/{version}:access", timeout=30)
    if response.status_code != 200:
        # Never the body: on some errors it could quote the request.
        raise SettingsError(f"cannot read {version} from Secret Manager: HTTP {response.status_code}")
    return base64.b64decode(response.json()["payload"]["data"]).decode()


def _read_aws_secret(arn: str) -> str:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        reply = boto3.client("secretsmanager", region_name=arn.split(":")[3]).get_secret_value(SecretId=arn)
    except (ClientError, BotoCoreError) as exc:
        code = exc.response.get("Error", {}).get("Code", "") if isinstance(exc, ClientError) else type(exc).__name__
        raise SettingsError(f"cannot read the GitHub secret from AWS Secrets Manager: {code}") from None
    return str(reply["SecretString"])


__all__ = ["AgentSettings", "AwsSettings", "JitSettings", "ConfigError", "Pool", "SettingsError", "load", "read_secret"]
