"""The one config schema: what a reviewer of a stack-file PR relies on."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from scaler.cli import main
from scaler.config import ConfigError, check_across_departments, load_stack_file, parse_stack_config

VALID: dict[str, Any] = {
    "gcp:project": "acme-ci-payments",
    "garo:kind": "department",
    "garo:cloud": "gcp",
    "garo:region": "europe-west1",
    "garo:department": "payments",
    "garo:costCenter": "cc-1234",
    "garo:network": {"cidr": "10.20.0.0/20"},
    "garo:github": {
        "org": "acme",
        "runnerApp": {
            "appId": 123,
            "installationId": 456,
            "privateKey": {"secure": "v1:AAAA"},
            "scope": "repository",
            "repositories": ["acme/payments"],
        },
    },
    "garo:groups": [
        {
            "name": "default",
            "labels": ["self-hosted", "linux", "x64", "payments"],
            "max": 20,
            "warmPool": {"size": 2, "schedule": "Mon-Fri 07:00-19:00 Europe/Amsterdam"},
        },
        {"name": "large", "labels": ["self-hosted", "linux", "x64", "payments-large"], "machineType": "n2-standard-8"},
    ],
}


def own_app(app_id: int, repository: str, **extra: Any) -> dict[str, Any]:
    """A department's own runner App, repository-scoped."""
    app = {"appId": app_id, "privateKey": {"secure": "v1:AAAA"}, "scope": "repository", "repositories": [repository]}
    return {"org": "acme", "runnerApp": {**app, **extra}}


def with_changes(**changes: Any) -> dict[str, Any]:
    raw = copy.deepcopy(VALID)
    raw.update(changes)
    return raw


def problems(raw: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_stack_config(raw)
    return [str(issue) for issue in caught.value.issues]


def test_valid_department_parses_with_defaults() -> None:
    config = parse_stack_config(VALID)
    assert config.department == "payments"
    assert config.project == "acme-ci-payments"
    assert [g.name for g in config.groups] == ["default", "large"]
    default = config.group("default")
    assert default.max == 20 and default.min == 0
    assert default.warm_pool.size == 2
    assert default.custom_labels == {"payments"}
    assert config.resource_labels["garo-department"] == "payments"
    assert config.resource_labels["cost-center"] == "cc-1234"
    assert config.github.private_key is not None and config.github.private_key.kind == "pulumi"


@pytest.mark.parametrize(
    ("group_changes", "expected"),
    [
        ({"max": 1, "min": 3}, "garo:groups[1].max: max (1) is smaller than min (3)"),
        ({"machineType": "z9-standard-4"}, "garo:groups[1].machineType: unknown gcp machine family 'z9'"),
        ({"machineType": "n2-standrad-8"}, "garo:groups[1].machineType: 'n2-standrad-8' is not a GCE machine type"),
        ({"labels": ["linux", "x64", "big"]}, "garo:groups[1].labels: must include 'self-hosted'"),
        ({"labels": ["self-hosted", "payments"]}, "garo:groups[1].labels: labels of group 'large' ['payments']"),
        ({"diskGb": "lots"}, "garo:groups[1].diskGb: expected an integer, got 'lots'"),
        ({"warmPool": {"size": 50}}, "garo:groups[1].warmPool.size: warm pool (50) is larger than max (10)"),
        ({"warmPool": {"schedule": "weekdays"}}, "garo:groups[1].warmPool.schedule: expected e.g."),
        ({"timeToLive": 100, "timeToStart": 200}, "garo:groups[1].timeToLive: timeToLive (100s) must exceed"),
        ({"spotty": True}, "garo:groups[1].spotty: unknown key"),
        ({"name": "Large_Group"}, "garo:groups[1].name: 'Large_Group' must be lowercase"),
    ],
)
def test_group_mistakes_are_reported_with_their_key_path(group_changes: dict[str, Any], expected: str) -> None:
    raw = copy.deepcopy(VALID)
    raw["garo:groups"][1].update(group_changes)
    found = problems(raw)
    assert any(p.startswith(expected) for p in found), found


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"garo:network": {"cidr": "10.20.0.0/33"}}, "garo:network.cidr: '10.20.0.0/33' is not a valid CIDR"),
        ({"garo:network": {"cidr": "10.20.0.1/20"}}, "garo:network.cidr: '10.20.0.1/20' is not a valid CIDR"),
        ({"garo:network": {"cidr": "8.8.0.0/16"}}, "garo:network.cidr: 8.8.0.0/16 is not a private range"),
        ({"garo:kind": "spoke"}, "garo:kind: expected 'hub' or 'department'"),
        ({"garo:cloud": "azure"}, "garo:cloud: expected 'gcp', 'aws' or 'local'"),
        ({"garo:groups": []}, "garo:groups: a department needs a non-empty list"),
        ({"garo:regoin": "x"}, "config.garo:regoin: unknown key"),
    ],
)
def test_stack_mistakes_are_reported_with_their_key_path(changes: dict[str, Any], expected: str) -> None:
    found = problems(with_changes(**changes))
    assert any(p.startswith(expected) for p in found), found


def test_every_problem_is_reported_at_once() -> None:
    raw = copy.deepcopy(VALID)
    raw["garo:network"] = {"cidr": "nonsense"}
    raw["garo:groups"][0]["max"] = 0
    found = problems(raw)
    assert any(p.startswith("garo:network.cidr") for p in found)
    assert any(p.startswith("garo:groups[0].max") for p in found)


def test_plaintext_secret_is_rejected_without_echoing_it() -> None:
    secret = "-----BEGIN RSA PRIVATE KEY-----supersecret"
    app = {"appId": 1, "privateKey": secret, "scope": "organization"}
    raw = with_changes(**{"garo:github": {"org": "acme", "runnerApp": app}})
    with pytest.raises(ConfigError) as caught:
        parse_stack_config(raw)
    message = str(caught.value)
    assert "garo:github.runnerApp.privateKey: is a plaintext secret" in message
    assert "supersecret" not in message


def test_secret_manager_reference_is_accepted_and_repr_hides_it() -> None:
    raw = with_changes(**{"garo:github": {"org": "acme", "token": {"secretManager": "gh-token"}}})
    config = parse_stack_config(raw)
    assert config.github.token is not None and config.github.token.ref == "gh-token"
    assert "gh-token" not in repr(config.github.token)


def test_overlapping_department_networks_are_caught_across_files() -> None:
    payments = parse_stack_config(VALID)
    research_raw = with_changes(**{"garo:department": "research", "garo:network": {"cidr": "10.20.8.0/21"}})
    research_raw["garo:groups"] = [{"name": "gpu", "labels": ["self-hosted", "linux", "research-gpu"]}]
    issues = [str(i) for i in check_across_departments([payments, parse_stack_config(research_raw)])]
    assert any("research (10.20.8.0/21) overlaps payments (10.20.0.0/20)" in i for i in issues), issues


def test_cli_validate_exit_codes(tmp_path: Path) -> None:
    good = tmp_path / "Pulumi.payments.yaml"
    good.write_text(yaml.safe_dump({"config": VALID}))
    bad_raw = copy.deepcopy(VALID)
    bad_raw["garo:groups"][0]["min"] = 30
    bad = tmp_path / "Pulumi.broken.yaml"
    bad.write_text(yaml.safe_dump({"config": bad_raw}))
    runner = CliRunner()
    ok = runner.invoke(main, ["validate", str(good)])
    assert ok.exit_code == 0, ok.output
    failed = runner.invoke(main, ["validate", str(bad)])
    assert failed.exit_code == 1
    assert "garo:groups[0].max: max (20) is smaller than min (30)" in failed.output


def test_unreadable_stack_files_get_a_clear_error(tmp_path: Path) -> None:
    broken = tmp_path / "Pulumi.x.yaml"
    broken.write_text("config: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_stack_file(broken)
    with pytest.raises(ConfigError, match="file not found"):
        load_stack_file(tmp_path / "missing.yaml")
    broken.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_stack_file(broken)
    broken.write_text("config:\n  garo:github:\n    token: ghp_SECRETSECRET: oops\n")
    with pytest.raises(ConfigError, match="not valid YAML at line 3") as caught:
        load_stack_file(broken)
    assert "ghp_SECRETSECRET" not in str(caught.value), "a syntax error must not quote the line"
    with pytest.raises(ConfigError, match="cannot read"):
        load_stack_file(tmp_path)  # a directory
    broken.write_text("name: no-config-block\n")
    with pytest.raises(ConfigError, match="top-level `config:` mapping"):
        load_stack_file(broken)


def test_departments_sharing_a_gcp_project_are_rejected() -> None:
    payments = parse_stack_config(VALID)
    research_raw = with_changes(**{"garo:department": "research", "garo:network": {"cidr": "10.30.0.0/20"}})
    research_raw["garo:groups"] = [{"name": "gpu", "labels": ["self-hosted", "linux", "research-gpu"]}]
    research_raw["garo:github"] = own_app(789, "acme/research")
    issues = [str(i) for i in check_across_departments([payments, parse_stack_config(research_raw)])]
    assert any("'payments' and 'research' share project 'acme-ci-payments'" in i for i in issues), issues
    research_raw["gcp:project"] = "acme-ci-research"
    assert check_across_departments([payments, parse_stack_config(research_raw)]) == []


AWS: dict[str, Any] = {
    "aws:region": "eu-central-1",
    "gcp:project": "acme-ci-hub",
    "garo:cloud": "aws",
    "garo:department": "mobile",
    "garo:network": {"cidr": "10.40.0.0/20", "zones": ["a", "b"]},
    "garo:github": {
        "org": "acme",
        "runnerApp": {
            "appId": 123,
            "installationId": 456,
            "privateKey": {"secure": "v1:AAAA"},
            "scope": "organization",
            "repositories": ["acme/mobile-ios"],
        },
    },
    "garo:groups": [
        {
            "name": "spot",
            "labels": ["self-hosted", "mobile"],
            "instanceTypes": ["m7i.xlarge", "m6i.xlarge"],
            "spot": True,
        },
        {
            "name": "fast",
            "labels": ["self-hosted", "mobile-fast"],
            "machineType": "m7i.2xlarge",
            "ami": {"ssmParameter": "/garo/ami/runner-x64"},
            "standbyPool": {"size": 2, "mode": "stopped"},
        },
    ],
}


def aws_with(group: dict[str, Any] | None = None, **changes: Any) -> dict[str, Any]:
    raw = copy.deepcopy(AWS)
    raw.update(changes)
    if group is not None:
        raw["garo:groups"] = [{"name": "g", "labels": ["self-hosted", "mobile"], **group}]
    return raw


def test_aws_department_parses_instance_types_ami_and_zones() -> None:
    config = parse_stack_config(AWS)
    spot, fast = config.groups
    assert spot.instance_types == ("m7i.xlarge", "m6i.xlarge") and spot.machine_type == "m7i.xlarge"
    assert spot.mixed_instances and spot.ami is not None and spot.ami.name == "garo-runner-x64"
    assert fast.instance_types == ("m7i.2xlarge",) and not fast.mixed_instances
    assert fast.ami is not None and fast.ami.ssm_parameter == "/garo/ami/runner-x64" and fast.ami.name is None
    assert config.network is not None and config.network.zones == ("a", "b")
    assert config.region == "eu-central-1" and config.project == "acme-ci-hub"


@pytest.mark.parametrize(
    "group",
    [
        {"spot": True, "standbyPool": {"size": 1}},
        {"instanceTypes": ["m7i.large", "m6i.large"], "standbyPool": {"size": 1, "mode": "stopped"}},
    ],
)
def test_aws_warm_pool_on_a_spot_or_mixed_group_is_explained(group: dict[str, Any]) -> None:
    [issue] = problems(aws_with(group))
    assert issue.startswith("garo:groups[0].standbyPool: ")
    assert "AWS refuses a warm pool on an Auto Scaling group with a mixed-instances policy or spot" in issue
    # Both shapes that work are offered.
    assert "on-demand with one instance type" in issue and "add an on-demand group" in issue


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            aws_with({"instanceTypes": ["m7i.large", "m7i.large"]}),
            "garo:groups[0].instanceTypes: lists an instance type twice",
        ),
        (
            aws_with({"instanceTypes": ["m7i-large"]}),
            "garo:groups[0].instanceTypes[0]: 'm7i-large' is not an EC2 instance type",
        ),
        (
            aws_with({"instanceTypes": ["zz9.large"]}),
            "garo:groups[0].instanceTypes[0]: unknown aws machine family 'zz9'",
        ),
        (
            aws_with({"instanceTypes": ["m7i.large"], "machineType": "m6i.large"}),
            "garo:groups[0].instanceTypes: set instanceTypes or machineType, not both",
        ),
        (aws_with({"ami": {"name": "x", "ssmParameter": "/y"}}), "garo:groups[0].ami: give exactly one of name"),
        (
            aws_with({"ami": {"ssmParameter": "garo/ami"}}),
            "garo:groups[0].ami.ssmParameter: expected an SSM parameter path",
        ),
        (aws_with({"zones": ["c"]}), "garo:groups[0].zones[0]: 'c' is not one of garo:network.zones ['a', 'b']"),
        (aws_with(**{"garo:network": {"cidr": "10.40.0.0/20", "zones": ["a"]}}), "garo:network.zones: expected 2 or 3"),
        (
            aws_with(**{"garo:network": {"cidr": "10.40.0.0/24"}}),
            "garo:network.cidr: 10.40.0.0/24 is too small for an AWS",
        ),
        (aws_with(**{"garo:network": {"cidr": "10.40.0.0/20", "iapSsh": True}}), "garo:network.iapSsh: IAP is GCP's"),
        (aws_with(**{"gcp:project": None}), "gcp:project: is required for an AWS department"),
    ],
)
def test_bad_aws_settings_are_named_by_key_path(raw: dict[str, Any], expected: str) -> None:
    if raw.get("gcp:project", "") is None:
        del raw["gcp:project"]
    assert any(p.startswith(expected) for p in problems(raw)), problems(raw)


def test_aws_only_keys_are_refused_on_gcp() -> None:
    raw = with_changes()
    raw["garo:groups"][0]["instanceTypes"] = ["m7i.large"]
    assert "garo:groups[0].instanceTypes: is an AWS setting; this stack's garo:cloud is 'gcp'" in problems(raw)


def test_across_clouds_overlapping_cidrs_and_label_collisions_are_caught() -> None:
    gcp = parse_stack_config(VALID)
    aws = parse_stack_config(
        aws_with(
            None,
            **{
                "garo:network": {"cidr": "10.20.8.0/22"},
                "garo:groups": [{"name": "x", "labels": ["self-hosted", "payments"], "machineType": "m7i.large"}],
            },
        )
    )
    issues = [str(i) for i in check_across_departments([gcp, aws])]
    assert any(i.startswith("garo:network.cidr: mobile (10.20.8.0/22) overlaps payments") for i in issues), issues
    assert any(i.startswith("garo:groups.labels: payments/default ['payments'] and mobile/x") for i in issues), issues


# --------------------------------------------------------------------------- credentials

HUB: dict[str, Any] = {
    "gcp:project": "acme-ci-hub",
    "garo:kind": "hub",
    "garo:region": "europe-west1",
    "garo:github": {
        "org": "acme",
        "webhookSecret": {"secure": "v1:BBBB"},
        "webhookApp": {"appId": 900, "privateKey": {"secure": "v1:CCCC"}},
    },
}


def department(name: str, cidr: str, github: dict[str, Any]) -> dict[str, Any]:
    raw = with_changes(
        **{
            "garo:department": name,
            "gcp:project": f"acme-ci-{name}",
            "garo:network": {"cidr": cidr},
            "garo:github": github,
        }
    )
    raw["garo:groups"] = [{"name": "default", "labels": ["self-hosted", "linux", f"{name}-ci"]}]
    return raw


def across(*raws: dict[str, Any]) -> list[str]:
    return [str(issue) for issue in check_across_departments([parse_stack_config(raw) for raw in raws])]


def test_the_hub_webhook_app_and_a_department_runner_app_are_told_apart() -> None:
    hub = parse_stack_config(HUB)
    assert hub.github.webhook_app is not None and hub.github.webhook_app.app_id == 900
    assert hub.github.runner_app is None and hub.github.private_key is None  # the hub holds no runner credential
    payments = parse_stack_config(VALID)
    assert payments.github.runner_app is not None and payments.github.webhook_app is None
    assert payments.github.runner_repository == "acme/payments"
    # A repository-scoped department routes its own repository's jobs only.
    assert {g.repositories for g in payments.groups} == {("acme/payments",)}


@pytest.mark.parametrize(
    ("github", "expected"),
    [
        (
            {"org": "acme", "appId": 1, "privateKey": {"secure": "v1:AAAA"}},
            "garo:github.appId: moved: a department's own GitHub App goes under garo:github.runnerApp",
        ),
        (
            {**own_app(1, "acme/payments"), "webhookSecret": {"secure": "v1:AAAA"}},
            "garo:github.webhookSecret: belongs to the hub stack only",
        ),
        (
            {**own_app(1, "acme/payments"), "webhookApp": {"appId": 2, "privateKey": {"secure": "v1:AAAA"}}},
            "garo:github.webhookApp: belongs to the hub stack only",
        ),
        (own_app(1, "acme/payments", scope=None), "garo:github.runnerApp.scope: expected 'repository'"),
        (
            own_app(1, "acme/payments", repositories=["acme/a", "acme/b"]),
            "garo:github.runnerApp.repositories: a repository-scoped department registers its runners in one",
        ),
        (
            own_app(1, "other-org/payments"),
            "garo:github.runnerApp.repositories[0]: 'other-org/payments' is not in the organisation 'acme'",
        ),
        (
            own_app(
                1, "acme/payments", privateKey={"secretManager": "projects/acme-ci-hub/secrets/garo-webhook-app-key"}
            ),
            "garo:github.runnerApp.privateKey: names a secret in project 'acme-ci-hub', not this stack's",
        ),
        (
            {"org": "acme", "runnerApp": {"appId": 1, "scope": "organization"}},
            "garo:github.runnerApp.privateKey: is required",
        ),
    ],
)
def test_a_department_credential_that_could_reach_beyond_it_is_refused(github: dict[str, Any], expected: str) -> None:
    found = problems(with_changes(**{"garo:github": github}))
    assert any(p.startswith(expected) for p in found), found


def test_the_hub_holds_no_runner_credential() -> None:
    raw = copy.deepcopy(HUB)
    raw["garo:github"]["runnerApp"] = own_app(1, "acme/hub")["runnerApp"]
    raw["garo:github"]["token"] = {"secretManager": "gh-token"}
    found = problems(raw)
    assert (
        "garo:github.runnerApp: the hub holds no runner credential: each department stack has its own runnerApp"
        in found
    )
    assert any(p.startswith("garo:github.token: the hub holds no runner credential") for p in found)


def test_repository_runners_have_no_runner_groups() -> None:
    raw = with_changes()
    raw["garo:groups"][0]["runnerGroupId"] = 3
    raw["garo:groups"][1]["repositories"] = ["acme/ledger"]
    found = problems(raw)
    assert any(p.startswith("garo:groups[0].runnerGroupId: repository-scoped runners join") for p in found), found
    assert (
        "garo:groups[1].repositories: runners registered in 'acme/payments' take that repository's jobs only" in found
    )


def test_departments_sharing_a_runner_app_are_rejected_unless_both_declare_it() -> None:
    a = department("payments", "10.20.0.0/20", own_app(500, "acme/payments", scope="organization"))
    b = department("research", "10.30.0.0/20", own_app(500, "acme/research", scope="organization", installationId=77))
    assert any(
        "'payments' and 'research' share runner App 500: a thief of either acts for both" in i for i in across(a, b)
    )
    a["garo:github"]["runnerApp"]["sharedWith"] = ["research"]
    (issue,) = across(a, b)  # one side is not enough
    assert "missing in 'research'" in issue
    b["garo:github"]["runnerApp"]["sharedWith"] = ["payments"]
    assert across(a, b) == []
    b["garo:github"] = own_app(501, "acme/research")
    a["garo:github"]["runnerApp"]["sharedWith"] = []
    assert across(a, b) == []  # an App each: nothing shared


def test_a_department_never_uses_the_webhook_app() -> None:
    a = department("payments", "10.20.0.0/20", own_app(900, "acme/payments", sharedWith=["hub"]))
    (issue,) = across(HUB, a)
    assert issue.startswith("garo:github.runnerApp.appId: 'payments' uses App 900, the webhook App of stack 'hub'")


def test_credential_errors_never_echo_a_secret() -> None:
    pem = "-----BEGIN RSA PRIVATE KEY----- LEAK-7731"
    for github in (
        {"org": "acme", "privateKey": pem},
        own_app(1, "acme/payments", privateKey=pem),
        {**own_app(1, "acme/payments"), "webhookApp": {"appId": 2, "privateKey": pem}},
    ):
        with pytest.raises(ConfigError) as caught:
            parse_stack_config(with_changes(**{"garo:github": github}))
        assert "LEAK-7731" not in str(caught.value)


def test_additional_runner_apps_are_read_and_checked() -> None:
    extra = [
        {"appId": 601, "installationId": 61, "privateKey": {"secretManager": "projects/acme-ci-payments/secrets/k2"}},
        {"appId": 602, "privateKey": {"env": "GARO_APP_602_KEY"}},
    ]
    raw = department("payments", "10.20.0.0/20", own_app(600, "acme/payments", additional=extra))
    app = parse_stack_config(raw).github.runner_app
    assert app is not None and app.app_ids == (600, 601, 602) and app.jit_per_minute == 180
    assert repr(app.additional[0].private_key) == "Secret(kind='secret-manager')"  # never the reference's value
    bad = [{"appId": 600, "privateKey": {"env": "K"}}, {"appId": 603}, {"appId": 604, "privateKey": "-----BEGIN"}]
    found = problems(department("payments", "10.20.0.0/20", own_app(600, "acme/payments", additional=bad)))
    assert any("additional[0].appId: App 600 is listed twice" in p for p in found)
    assert any("additional[1].privateKey: is required" in p for p in found)
    assert any("additional[2].privateKey: is a plaintext secret" in p for p in found)
    assert not any("-----BEGIN" in p for p in found)
    other = department("payments", "10.20.0.0/20", own_app(600, "acme/payments", jitPerMinute=500))
    assert any("jitPerMinute: expected an integer from 1 to 180, got 500" in p for p in problems(other))


def test_departments_sharing_an_app_must_stay_under_its_jit_limit_together() -> None:
    a = department("payments", "10.20.0.0/20", own_app(500, "acme/payments", sharedWith=["research"]))
    b = department("research", "10.30.0.0/20", own_app(700, "acme/research", sharedWith=["payments"]))
    b["garo:github"]["runnerApp"]["additional"] = [{"appId": 500, "privateKey": {"env": "K"}}]
    assert across(a, b) == []  # shared through research's additional App; by default each takes half (90)
    b["garo:github"]["runnerApp"]["jitPerMinute"] = 120
    (issue,) = across(a, b)
    assert "'payments', 'research' share runner App 500 and may create 210 JIT configs a minute" in issue
    a["garo:github"]["runnerApp"]["jitPerMinute"] = 60
    assert across(a, b) == []


def self_signed(key: Any) -> str:
    """A PEM certificate for ``key`` (AWS's real ones are RSA; a DSA or EC one cannot check RSA signatures)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ec2.amazonaws.com")])
    now = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def rsa_certificate() -> str:
    from cryptography.hazmat.primitives.asymmetric import rsa

    return self_signed(rsa.generate_private_key(public_exponent=65537, key_size=2048))


def with_certificate(value: Any) -> dict[str, Any]:
    return {**copy.deepcopy(AWS), "garo:awsIdentityCert": value}


def test_aws_identity_certificate_is_required_to_deploy_and_kept_normalised() -> None:
    # The agent re-reads its stack config without it; a stack file (garo validate, the program) needs it.
    assert parse_stack_config(AWS).aws_identity_cert == ""
    with pytest.raises(ConfigError, match=r"garo:awsIdentityCert: is required for an AWS department"):
        parse_stack_config(AWS, deploying=True)
    pem = rsa_certificate()
    # Pasted with indentation and a trailing blank line: read alike, written back as one clean PEM block.
    pasted = "\n".join(f"  {line}" for line in pem.splitlines()) + "\n\n"
    config = parse_stack_config(with_certificate(pasted.strip()), deploying=True)
    assert config.aws_identity_cert == pem


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("MIIDIjCCAougAwIBAgIJAKnL4UEDMN", "expected the PEM text of AWS's RSA certificate"),
        ("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----", "is not a readable PEM"),
        ({"path": "eu-central-1.pem"}, "expected the PEM text of AWS's RSA certificate"),
        ("ec", "is not an RSA certificate"),
    ],
)
def test_a_malformed_aws_identity_certificate_is_refused(value: Any, message: str) -> None:
    if value == "ec":
        from cryptography.hazmat.primitives.asymmetric import ec

        value = self_signed(ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(ConfigError) as refused:
        parse_stack_config(with_certificate(value))
    [issue] = refused.value.issues
    assert str(issue).startswith("garo:awsIdentityCert: ") and message in str(issue)


def test_aws_identity_certificate_belongs_to_aws_departments_only() -> None:
    pem = rsa_certificate()
    for raw in (copy.deepcopy(VALID), copy.deepcopy(HUB)):
        raw["garo:awsIdentityCert"] = pem
        with pytest.raises(ConfigError, match=r"garo:awsIdentityCert: is an AWS department setting"):
            parse_stack_config(raw)
