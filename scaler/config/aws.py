"""The AWS parts of the schema: instance types, AMIs, zones, and the warm-pool rule.

An AWS runner group is an Auto Scaling group. AWS refuses a warm pool on a
group with a mixed-instances policy or spot instances, so a group's
``standbyPool`` (which becomes the ASG's warm pool: ``stopped`` -> Stopped,
``suspended`` -> Hibernated) needs an on-demand group with one instance type.
``garo validate`` says so, with the two shapes that work, before ``pulumi up``
would fail halfway.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding

from scaler.config.model import (
    AMI_NAME_RE,
    AWS_INSTANCE_FAMILIES,
    AWS_INSTANCE_TYPE_RE,
    AWS_ZONE_RE,
    SSM_PARAMETER_RE,
    Ami,
    RunnerGroup,
)
from scaler.config.reader import Reader

AWS_ONLY_GROUP_KEYS = ("instanceTypes", "ami")
DEFAULT_ZONES = ("a", "b")
# The VPC is cut in quarters: one private subnet per zone (at most three), the last
# quarter holds the small public subnets of the NAT gateways (prefix + 6, at most /28).
MAX_ZONES = 3
MAX_PREFIX = 22
WARM_POOL_RULE = (
    "AWS refuses a warm pool on an Auto Scaling group with a mixed-instances policy or spot instances. "
    "Either make this group on-demand with one instance type (spot: false, instanceTypes: [<one>]), "
    "or keep it spot/mixed without a standbyPool and add an on-demand group with one instance type, "
    "its own label and the standbyPool"
)


def read_instance_types(r: Reader, data: Mapping[str, Any], path: str) -> tuple[str, ...]:
    """``instanceTypes`` in fallback order, or ``machineType`` alone (not both: they could disagree)."""
    if "instanceTypes" in data and "machineType" in data:
        r.fail(f"{path}.instanceTypes", "set instanceTypes or machineType, not both (machineType is one type)")
    types = r.strings(data, "instanceTypes", path) or (r.string(data, "machineType", path, "m6i.large"),)
    for i, kind in enumerate(types):
        where = f"{path}.instanceTypes[{i}]" if "instanceTypes" in data else f"{path}.machineType"
        if kind and not AWS_INSTANCE_TYPE_RE.match(kind):
            r.fail(where, f"{kind!r} is not an EC2 instance type like 'm6i.large'")
        elif kind and kind.split(".")[0] not in AWS_INSTANCE_FAMILIES:
            r.fail(where, f"unknown aws machine family {kind.split('.')[0]!r} in {kind!r}")
    if len(set(types)) != len(types):
        r.fail(f"{path}.instanceTypes", "lists an instance type twice")
    return tuple(t for t in types if t)


def read_ami(r: Reader, data: Mapping[str, Any], path: str, image_family: str) -> Ami:
    """``ami: {name: <prefix>}`` or ``ami: {ssmParameter: </path>}``; default: the imageFamily as name prefix."""
    raw = data.get("ami")
    if raw is None:
        return Ami(name=image_family)
    ami = r.mapping(raw, f"{path}.ami")
    r.unknown(ami, {"name", "ssmParameter"}, f"{path}.ami")
    if ("name" in ami) == ("ssmParameter" in ami):
        r.fail(f"{path}.ami", "give exactly one of name (the Packer image name prefix) or ssmParameter")
        return Ami(name=image_family)
    if "name" in ami:
        name = r.string(ami, "name", f"{path}.ami")
        if name and not AMI_NAME_RE.match(name):
            r.fail(f"{path}.ami.name", f"{name!r} is not a valid AMI name prefix")
        return Ami(name=name)
    parameter = r.string(ami, "ssmParameter", f"{path}.ami")
    if parameter and not SSM_PARAMETER_RE.match(parameter):
        r.fail(
            f"{path}.ami.ssmParameter", f"expected an SSM parameter path like '/garo/ami/runner-x64', got {parameter!r}"
        )
    return Ami(ssm_parameter=parameter)


def check_group(r: Reader, group: RunnerGroup, path: str, zones: Sequence[str]) -> None:
    """Rules only AWS has: the warm pool's exclusions and zones within the network's."""
    if group.standby_pool.size and group.mixed_instances:
        why = "spot: true" if group.spot else f"{len(group.instance_types)} instanceTypes (a mixed-instances policy)"
        r.fail(f"{path}.standbyPool", f"{why} with a standbyPool (the ASG's warm pool): {WARM_POOL_RULE}")
    for i, zone in enumerate(group.zones):
        if zone not in zones:
            r.fail(f"{path}.zones[{i}]", f"{zone!r} is not one of garo:network.zones {list(zones)}")


def read_network_zones(r: Reader, net: Mapping[str, Any], cidr: str) -> tuple[str, ...]:
    """AWS: at least two availability zones, each a private subnet cut from the CIDR."""
    zones = r.strings(net, "zones", "garo:network") or DEFAULT_ZONES
    for i, zone in enumerate(zones):
        if not AWS_ZONE_RE.match(zone):
            r.fail(f"garo:network.zones[{i}]", f"expected an availability zone letter like 'a', got {zone!r}")
    if not MAX_ZONES >= len(set(zones)) >= 2 or len(set(zones)) != len(zones):
        r.fail("garo:network.zones", f"expected 2 or 3 distinct zones (subnets in at least two AZs), got {list(zones)}")
    try:
        prefix = ipaddress.ip_network(cidr, strict=True).prefixlen if cidr else 0
    except ValueError:
        prefix = 0  # reported by the CIDR check
    if prefix > MAX_PREFIX:
        r.fail(
            "garo:network.cidr",
            f"{cidr} is too small for an AWS department (at most /{MAX_PREFIX}: private and NAT subnets in each zone)",
        )
    return tuple(zones)


IDENTITY_CERT_KEY = "garo:awsIdentityCert"
IDENTITY_CERT_HELP = (
    "the PEM text of AWS's RSA certificate for instance identity documents of this stack's region "
    '(AWS\'s page "AWS public certificates for instance identity document signatures", RSA), e.g. '
    'pulumi config set garo:awsIdentityCert -- "$(cat <region>.pem)"'
)


def read_identity_certificate(r: Reader, own: Mapping[str, Any], kind: str, cloud: str, required: bool) -> str:
    """``garo:awsIdentityCert``: the certificate the agent checks runner VMs' identity documents with.

    Public (AWS publishes it), not a secret. An AWS department serves JIT configs from its
    agent, which cannot verify a VM without it, so a stack file must carry it (``required``);
    the agent re-reads the same config and only needs it well formed. Returned normalised
    (one PEM block, as the cryptography library writes it) so it can go into a file verbatim.
    """
    value = own.get("awsIdentityCert")
    if value is None:
        if required and kind == "department" and cloud == "aws":
            r.fail(IDENTITY_CERT_KEY, f"is required for an AWS department: {IDENTITY_CERT_HELP}")
        return ""
    if kind != "department" or cloud != "aws":
        r.fail(IDENTITY_CERT_KEY, f"is an AWS department setting; this stack is a {cloud} {kind}")
        return ""
    if not isinstance(value, str) or "-----BEGIN CERTIFICATE-----" not in value:
        r.fail(IDENTITY_CERT_KEY, f"expected {IDENTITY_CERT_HELP}")
        return ""
    try:
        certificate = x509.load_pem_x509_certificate(value.strip().encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        r.fail(IDENTITY_CERT_KEY, "is not a readable PEM certificate (copy the whole block, BEGIN to END lines)")
        return ""
    if not isinstance(certificate.public_key(), rsa.RSAPublicKey):
        r.fail(IDENTITY_CERT_KEY, "is not an RSA certificate: identity document signatures are RSA (not DSA/PKCS7)")
        return ""
    return certificate.public_bytes(Encoding.PEM).decode("ascii")


def reject_aws_keys(r: Reader, data: Mapping[str, Any], path: str, cloud: str) -> None:
    for key in AWS_ONLY_GROUP_KEYS:
        if key in data:
            r.fail(f"{path}.{key}", f"is an AWS setting; this stack's garo:cloud is {cloud!r}")
