"""A deployed AWS department pulls JIT configs: the path from a runner to its agent, as the program declares it.

Checked on the real program's declarations (the example stacks under Pulumi's
mocks): which security groups may open which port to the agent (through the
internal load balancer or not), that the agent is told its URL and handed the
region's certificate (and would start serving with them), that every runner
instance, warm-pool ones included, carries the same URL as ``garo-agent-url``,
and that the load balancer's health check asks a path the agent answers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from scaler.agent.jit_endpoint import DEFAULT_JIT_PORT, jit_app
from scaler.agent.settings import load
from scaler.backends.aws import AGENT_URL_TAG, AwsBackend
from scaler.backends.aws_identity import AwsIdentityVerifier
from scaler.backends.jit_vault import JitVault
from scaler.backends.registry import open_backend
from scaler.config import load_stack_file
from tests.infra.conftest import AWS_STACKS, EXAMPLES, SENTINEL_TOKENS, of_type
from tests.infra.test_asg_names import BOOT_AGENT, deployed_env, host_files, runner_asgs, scaler_script

REGION = "eu-central-1"  # examples/Pulumi.mobile.yaml


def one(capture: dict[str, Any], kind: str) -> dict[str, Any]:
    [resource] = of_type(capture, kind)
    return dict(resource["inputs"])


def rules(capture: dict[str, Any], direction: str) -> list[dict[str, Any]]:
    """The separate rule resources of one direction (no group declares inline rules: test_policy_aws)."""
    kind = "SecurityGroupIngressRule" if direction == "in" else "SecurityGroupEgressRule"
    return [dict(r["inputs"]) for r in of_type(capture, f":{kind}")]


def admits(capture: dict[str, Any], group: str, source: str, port: int, direction: str = "in") -> bool:
    """Whether security group ``group`` lets TCP ``port`` in from (or out to) the group ``source``."""
    for rule in rules(capture, direction):
        if rule["securityGroupId"] != group:
            continue
        ports = rule["ipProtocol"] == "-1" or rule["fromPort"] <= port <= rule["toPort"]
        peer = rule.get("referencedSecurityGroupId") == source or rule.get("cidrIpv4") == "0.0.0.0/0"
        if ports and peer and rule["ipProtocol"] in ("tcp", "-1"):
            return True
    return False


class Endpoint:
    """The declared path to the agent: listener -> target group <- scaler ASG, and the groups on the way."""

    def __init__(self, capture: dict[str, Any], stack: str) -> None:
        self.capture = capture
        balancer = one(capture, "lb/loadBalancer:LoadBalancer")
        [self.balancer_group] = balancer["securityGroups"]
        [template] = [
            t for t in of_type(capture, "ec2/launchTemplate:LaunchTemplate") if t["name"] == f"{stack}-scaler-template"
        ]
        [nic] = template["inputs"]["networkInterfaces"]
        [self.scaler_group] = nic["securityGroups"]
        self.runner_group = capture["raw_outputs"]["portal"]["network"]["securityGroup"]
        self.listener = one(capture, "lb/listener:Listener")
        self.targets = one(capture, "lb/targetGroup:TargetGroup")
        [self.scaler_asg] = [
            a["inputs"] for a in of_type(capture, "autoscaling/group:Group") if a["name"] == f"{stack}-scaler-asg"
        ]

    def reachable_from(self, source: str, port: int) -> bool:
        """Can an instance in ``source`` open ``port`` on the agent, directly or through the load balancer?"""
        direct = admits(self.capture, self.scaler_group, source, port)
        via_balancer = (
            self.listener["port"] == port
            and admits(self.capture, self.balancer_group, source, port)
            and admits(self.capture, self.balancer_group, self.scaler_group, self.targets["port"], "out")
            and admits(self.capture, self.scaler_group, self.balancer_group, self.targets["port"])
        )
        return direct or via_balancer


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_only_runners_reach_the_agent_and_only_on_the_jit_port(captures: dict[str, Any], stack: str) -> None:
    path = Endpoint(captures[stack], stack)
    assert len({path.runner_group, path.scaler_group, path.balancer_group}) == 3
    assert path.reachable_from(path.runner_group, DEFAULT_JIT_PORT)
    for port in (22, 443, 8080, DEFAULT_JIT_PORT + 1):
        assert not path.reachable_from(path.runner_group, port), port
    # Not around the load balancer, and nobody else through it (the scaler's group is no runner).
    assert not admits(captures[stack], path.scaler_group, path.runner_group, DEFAULT_JIT_PORT)
    for other in (path.scaler_group, "sg-0someoneelse"):
        assert not path.reachable_from(other, DEFAULT_JIT_PORT), other
    # The load balancer hands connections only to the agent's group, on the agent's port.
    assert not admits(captures[stack], path.balancer_group, path.runner_group, DEFAULT_JIT_PORT, "out")
    # Runners launch into their own group (which admits nothing), never the scaler's.
    for template in of_type(captures[stack], "ec2/launchTemplate:LaunchTemplate"):
        if template["name"] != f"{stack}-scaler-template":
            assert template["inputs"]["vpcSecurityGroupIds"] == [path.runner_group], template["name"]


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_the_load_balancer_forwards_to_the_agent_in_every_zone(captures: dict[str, Any], stack: str) -> None:
    capture = captures[stack]
    path = Endpoint(capture, stack)
    balancer = one(capture, "lb/loadBalancer:LoadBalancer")
    assert balancer["internal"] is True and balancer["loadBalancerType"] == "network"
    # In each of the department's private subnets, like the scaler's ASG, and cross-zone: one agent serves all.
    assert sorted(balancer["subnets"]) == sorted(path.scaler_asg["vpcZoneIdentifiers"])
    assert sorted(balancer["subnets"]) == sorted(capture["raw_outputs"]["portal"]["network"]["subnets"])
    assert balancer["enableCrossZoneLoadBalancing"] is True
    [action] = path.listener["defaultActions"]
    assert path.listener["protocol"] == "TCP" and path.listener["port"] == DEFAULT_JIT_PORT
    assert action["type"] == "forward" and f":targetgroup/garo-{stack}-jit/" in action["targetGroupArn"]
    assert path.targets["port"] == DEFAULT_JIT_PORT and path.targets["targetType"] == "instance"
    # The scaler's ASG registers its instance, and a failed health check replaces it.
    assert path.scaler_asg["targetGroupArns"] == [action["targetGroupArn"]]
    assert path.scaler_asg["healthCheckType"] == "ELB"


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_the_agent_is_told_its_url_and_given_the_regions_certificate(
    captures: dict[str, Any], stack: str, tmp_path: Path
) -> None:
    capture = captures[stack]
    config = load_stack_file(EXAMPLES / f"Pulumi.{stack}.yaml")
    url = capture["raw_outputs"]["jitUrl"]
    assert url.startswith(f"http://garo-{stack}-jit-") and url.endswith(
        f".elb.{config.region}.amazonaws.com:{DEFAULT_JIT_PORT}"
    )
    on_host = deployed_env(capture, stack)
    assert on_host["GARO_JIT_URL"] == url
    # The certificate is a file on the host, mounted read-only into the container at the same path.
    path = on_host["GARO_JIT_AWS_CERT_FILE"]
    written = host_files(capture, stack)[path]
    stack_cert = x509.load_pem_x509_certificate(config.aws_identity_cert.encode())
    assert x509.load_pem_x509_certificate(written.encode()) == stack_cert
    script = scaler_script(capture, stack)
    assert f"-v {path}:{path}:ro" in script
    assert script.count("BEGIN CERTIFICATE") == 1  # not again in GARO_STACK_CONFIG: user data holds 16 KB
    # The agent, started with that environment and those files, serves pulls at that URL with that certificate.
    settings = load(deployed_env(capture, stack, tmp_path))
    assert settings.jit is not None and settings.jit.url == url and settings.jit.port == DEFAULT_JIT_PORT
    assert x509.load_pem_x509_certificate(settings.jit.aws_certificate.encode()) == stack_cert
    backend = open_backend(config, settings)
    assert isinstance(backend, AwsBackend) and backend.agent_url == url
    AwsIdentityVerifier("111122223333", config.region, settings.jit.aws_certificate, backend.instance_name)
    # Nothing secret on the host's environment.
    assert not [t for t in SENTINEL_TOKENS if t in "".join(on_host.values())]


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_every_runner_instance_carries_the_agents_url(captures: dict[str, Any], stack: str) -> None:
    """Warm-pool instances are launched by the ASG, not the agent: its tags are all they get."""
    capture = captures[stack]
    url = deployed_env(capture, stack)["GARO_JIT_URL"]
    asgs = runner_asgs(capture, stack)
    assert asgs
    for name, inputs in asgs.items():
        tags = {t["key"]: t for t in inputs["tags"]}
        assert tags[AGENT_URL_TAG]["value"] == url and tags[AGENT_URL_TAG]["propagateAtLaunch"] is True, name
    for template in of_type(capture, "ec2/launchTemplate:LaunchTemplate"):
        if template["name"] != f"{stack}-scaler-template":
            assert template["inputs"]["metadataOptions"]["instanceMetadataTags"] == "enabled", template["name"]
    # ...which the boot agent reads from IMDS, and the agent compares with its own URL to decide who pulls.
    assert f"meta-data/tags/instance/{AGENT_URL_TAG})" in BOOT_AGENT.read_text()


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_the_health_check_asks_what_the_agent_answers(captures: dict[str, Any], stack: str, tmp_path: Path) -> None:
    check = one(captures[stack], "lb/targetGroup:TargetGroup")["healthCheck"]
    assert check["protocol"] == "HTTP" and check["port"] == "traffic-port" and check["matcher"] == "200"
    settings = load(deployed_env(captures[stack], stack, tmp_path))
    assert settings.jit is not None
    verifier = AwsIdentityVerifier("111122223333", REGION, settings.jit.aws_certificate, lambda _: None)
    app = jit_app(JitVault(), verifier)
    assert app.test_client().get(check["path"]).status_code == 200
