"""The GCP pull path: a VM trades its identity token for its JIT config, exactly once.

The endpoint is the real Flask app and the real verifier (google.auth.jwt);
tokens come from tests/harness/gce_identity.py, signed with a test key that a
loopback certs URL serves the way Google serves its own.
"""

from __future__ import annotations

import json
import logging
import time

import pytest
import requests
from flask.testing import FlaskClient

from scaler.agent.jit_endpoint import PATH, CallerRate, jit_app
from scaler.backends.gcp import GcpBackend, GcpGroup
from scaler.backends.jit_vault import Identity, IdentityVerifier, JitVault, Refused
from tests.harness.compute import ComputeFake
from tests.harness.gce_identity import PROJECT, IdentityIssuer

AUDIENCE = "http://10.10.0.5:8780"
REGION = "europe-west4"
VM = "garo-eng-linux-9001"
CONFIG = "eyJqaXQiOiAic2VjcmV0In0-" + "c" * 1500
GCP_STACK = {
    "gcp:project": "acme-eng",
    "garo:region": REGION,
    "garo:department": "eng",
    "garo:github": {"org": "acme"},
    "garo:network": {"cidr": "10.10.0.0/20"},
    "garo:groups": [{"name": "linux", "labels": ["self-hosted", "linux"]}],
}


@pytest.fixture
def vault() -> JitVault:
    return JitVault()


def client_for(vault: JitVault, certs_url: str, rate: CallerRate | None = None) -> FlaskClient:
    verifier = IdentityVerifier(AUDIENCE, PROJECT, REGION, certs_url=certs_url)
    return jit_app(vault, verifier, rate).test_client()


@pytest.fixture
def client(vault: JitVault, certs_url: str) -> FlaskClient:
    return client_for(vault, certs_url)


def pull(client: FlaskClient, token: str) -> tuple[int, str]:
    response = client.post(PATH, headers={"Authorization": f"Bearer {token}"})
    return response.status_code, response.get_data(as_text=True)


def test_a_good_token_gets_the_config_once_and_then_it_is_gone(
    client: FlaskClient, vault: JitVault, issuer: IdentityIssuer
) -> None:
    vault.hold("linux", VM, CONFIG, ttl=600, requested_at=time.time() - 60)
    response = client.post(PATH, headers={"Authorization": f"Bearer {issuer.token(AUDIENCE, VM)}"})
    assert response.status_code == 200 and response.get_data(as_text=True) == CONFIG
    assert response.headers["Cache-Control"] == "no-store"
    assert vault.peek(VM) is None and len(vault) == 0
    # A second ask, with a fresh valid token: the config is gone.
    assert pull(client, issuer.token(AUDIENCE, VM, issued_at=time.time() + 1)) == (410, "already taken")


def test_a_replayed_token_gets_nothing(client: FlaskClient, vault: JitVault, issuer: IdentityIssuer) -> None:
    vault.hold("linux", VM, CONFIG, ttl=600)
    token = issuer.token(AUDIENCE, VM)
    assert pull(client, token)[0] == 200
    vault.hold("linux", VM, "a-second-config", ttl=600)  # even if a config were held again for that name
    assert pull(client, token) == (410, "already taken")
    assert vault.peek(VM) == "a-second-config"


@pytest.mark.parametrize(
    ("claims", "status"),
    [
        ({"audience": "http://10.10.0.99:8780"}, 401),
        ({"project": "acme-other"}, 403),
        ({"zone": "us-central1-a"}, 403),
        ({"issued_at": time.time() - 7200}, 401),  # expired an hour ago
        ({"created_at": time.time() + 600, "issued_at": time.time()}, 401),  # issued before the VM existed
    ],
    ids=["wrong-audience", "wrong-project", "wrong-zone", "expired", "issued-before-created"],
)
def test_a_token_that_does_not_fit_gets_nothing_and_changes_nothing(
    client: FlaskClient, vault: JitVault, issuer: IdentityIssuer, claims: dict[str, object], status: int
) -> None:
    vault.hold("linux", VM, CONFIG, ttl=600)
    args = {"audience": AUDIENCE, **claims}
    audience = str(args.pop("audience"))
    token = issuer.token(audience, VM, **args)  # type: ignore[arg-type]
    code, body = pull(client, token)
    assert code == status and CONFIG not in body
    assert vault.peek(VM) == CONFIG  # still there for the real VM


def test_a_token_signed_by_another_key_gets_nothing(client: FlaskClient, vault: JitVault) -> None:
    vault.hold("linux", VM, CONFIG, ttl=600)
    forger = IdentityIssuer(key_id="test-key-1")  # same key id, different key
    assert pull(client, forger.token(AUDIENCE, VM))[0] == 401
    assert pull(client, "not.a.jwt")[0] == 401
    assert client.post(PATH).status_code == 401
    assert vault.peek(VM) == CONFIG


def test_an_unknown_instance_is_not_found(client: FlaskClient, vault: JitVault, issuer: IdentityIssuer) -> None:
    vault.hold("linux", VM, CONFIG, ttl=600)
    response = client.post(PATH, headers={"Authorization": f"Bearer {issuer.token(AUDIENCE, 'garo-eng-linux-7')}"})
    assert response.status_code == 404 and response.headers["Retry-After"]
    assert vault.peek(VM) == CONFIG


def test_a_vm_older_than_the_agents_request_is_refused(
    client: FlaskClient, vault: JitVault, issuer: IdentityIssuer
) -> None:
    """A VM of that name that existed before the agent asked Compute for it is not the one the config is for."""
    vault.hold("linux", VM, CONFIG, ttl=600, requested_at=time.time())
    token = issuer.token(AUDIENCE, VM, created_at=time.time() - 3600)
    assert pull(client, token)[0] == 403
    assert vault.peek(VM) == CONFIG


def test_callers_are_rate_limited_and_oversized_requests_refused(
    vault: JitVault, certs_url: str, issuer: IdentityIssuer
) -> None:
    client = client_for(vault, certs_url, CallerRate(limit=3, window=3600))
    codes = [pull(client, issuer.token(AUDIENCE, "garo-eng-linux-7"))[0] for _ in range(4)]
    assert codes == [404, 404, 404, 429]
    other = client.post(
        PATH,
        headers={"Authorization": f"Bearer {issuer.token(AUDIENCE, VM)}"},
        environ_base={"REMOTE_ADDR": "10.10.0.8"},
    )
    assert other.status_code == 404  # another caller has its own budget
    fresh = client_for(vault, certs_url)
    assert fresh.post(PATH, headers={"Authorization": "Bearer " + "x" * 5000}).status_code == 431
    assert fresh.post(PATH, data=b"x" * 4096).status_code == 413


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_neither_the_token_nor_the_config_is_logged(
    client: FlaskClient, vault: JitVault, issuer: IdentityIssuer
) -> None:
    # Straight on the agent's logger: other tests may have configured logging (garo.logs) so nothing propagates.
    logger, seen = logging.getLogger("garo.agent"), Records()
    level = logger.level
    logger.addHandler(seen)
    logger.setLevel(logging.DEBUG)
    try:
        vault.hold("linux", VM, CONFIG, ttl=600)
        token = issuer.token(AUDIENCE, VM)
        pull(client, token)
        pull(client, token)
        pull(client, issuer.token("http://elsewhere", VM))
    finally:
        logger.removeHandler(seen)
        logger.setLevel(level)
    text = " ".join(f"{r.getMessage()} {r.__dict__}" for r in seen.records)
    assert VM in text and "token-replayed" in text and "wrong-audience" in text
    assert token[:60] not in text and token.split(".")[2][:20] not in text and CONFIG[:30] not in text


def test_a_waiting_vm_asking_again_with_its_token_is_verified_once(
    vault: JitVault, certs_url: str, issuer: IdentityIssuer
) -> None:
    verifier = IdentityVerifier(AUDIENCE, PROJECT, REGION, certs_url=certs_url)
    checked: list[str] = []
    real = verifier.verify

    def counted(token: str) -> Identity:
        checked.append(token)
        return real(token)

    verifier.verify = counted  # type: ignore[method-assign]
    client = jit_app(vault, verifier).test_client()
    token = issuer.token(AUDIENCE, VM)
    assert [pull(client, token)[0] for _ in range(5)] == [404] * 5
    vault.hold("linux", VM, CONFIG, ttl=600)
    assert pull(client, token) == (200, CONFIG)
    assert pull(client, token)[0] == 410
    assert len(checked) == 1


def test_a_vm_asking_in_vain_is_known_to_the_vault_until_it_gets_a_config(
    client: FlaskClient, vault: JitVault, issuer: IdentityIssuer
) -> None:
    """The one sign that a VM this agent did not make needs a config (reconcile.unconfigured)."""
    assert vault.asking(3.0) == frozenset()
    assert pull(client, issuer.token(AUDIENCE, "garo-eng-linux-9"))[0] == 404
    assert vault.asking(3.0) == {"garo-eng-linux-9"}
    vault.hold("linux", "garo-eng-linux-9", "jit-config", ttl=60)
    assert vault.asking(3.0) == frozenset()  # held now: it gets this one on its next ask
    assert pull(client, issuer.token(AUDIENCE, "garo-eng-linux-9")) == (200, "jit-config")
    assert vault.asking(3.0) == frozenset()  # used: it never asks again


def test_an_old_ask_or_one_from_a_deleted_vm_is_forgotten() -> None:
    now = [1000.0]
    vault = JitVault(clock=lambda: now[0])
    who = Identity("garo-eng-linux-9", "1", "europe-west4-a", now[0], now[0] - 60, now[0] + 600)
    with pytest.raises(Refused):
        vault.take(who)
    assert vault.asking(3.0) == {"garo-eng-linux-9"}
    now[0] += 3.5
    assert vault.asking(3.0) == frozenset()  # it would have asked again if it still waited
    with pytest.raises(Refused):
        vault.take(who)
    vault.drop(["garo-eng-linux-9"])
    assert vault.asking(3.0) == frozenset()


def test_unread_configs_expire_after_time_to_start() -> None:
    now = [1000.0]
    vault = JitVault(lambda: now[0])
    vault.hold("linux", VM, CONFIG, ttl=600)
    now[0] += 599
    assert vault.holds(VM)
    now[0] += 2
    assert not vault.holds(VM) and len(vault) == 0


def test_the_signing_keys_are_fetched_once_not_per_pull(
    client: FlaskClient, vault: JitVault, issuer: IdentityIssuer
) -> None:
    before = issuer.fetches
    for i in range(5):
        vault.hold("linux", f"{VM}-{i}", CONFIG, ttl=600)
        assert pull(client, issuer.token(AUDIENCE, f"{VM}-{i}"))[0] == 200
    assert issuer.fetches - before == 1


# ---------------------------------------------------------------- GcpBackend: holding costs no Compute call


@pytest.fixture
def fake(compute_fake: ComputeFake) -> ComputeFake:
    compute_fake.add_group("garo-eng-linux")
    return compute_fake


def make_backend(fake: ComputeFake) -> GcpBackend:
    return GcpBackend(
        fake.project,
        fake.region,
        {"linux": GcpGroup("garo-eng-linux")},
        session=requests.Session(),
        base_url=fake.base_url,
        sleep=lambda _: None,
        time_to_start={"linux": 900},
    )


def test_delivering_and_clearing_a_config_costs_no_compute_call(fake: ComputeFake) -> None:
    backend = make_backend(fake)
    backend.create("linux", ["garo-a"], {"garo-a": {"garo-job": "42"}})
    fake.settle()
    backend.list("linux")
    before = dict(fake.calls)
    backend.set_metadata("linux", "garo-a", {"garo-jit-config": CONFIG})
    assert dict(fake.calls) == before
    assert backend.jit_vault.peek("garo-a") == CONFIG
    instance = fake.instance("garo-eng-linux", "garo-a")
    assert instance is not None and "garo-jit-config" not in instance.metadata
    assert CONFIG not in str(instance.preserved)
    backend.set_metadata("linux", "garo-a", {"garo-jit-config": ""})
    assert dict(fake.calls) == before and backend.jit_vault.peek("garo-a") is None


def test_a_config_given_at_creation_never_reaches_compute_and_dies_with_the_vm(fake: ComputeFake) -> None:
    backend = make_backend(fake)
    backend.create("linux", ["garo-a"], {"garo-a": {"garo-job": "42", "garo-jit-config": CONFIG}})
    instance = fake.instance("garo-eng-linux", "garo-a")
    assert instance is not None and "garo-jit-config" not in instance.preserved
    assert instance.preserved.get("garo-job") == "42"
    assert backend.jit_vault.peek("garo-a") == CONFIG
    backend.delete("linux", ["garo-a"])
    assert backend.jit_vault.peek("garo-a") is None


def test_a_config_for_a_vm_that_is_not_in_the_group_is_refused(fake: ComputeFake) -> None:
    from scaler.backends.base import BackendError, Failure

    backend = make_backend(fake)
    with pytest.raises(BackendError) as excinfo:
        backend.set_metadata("linux", "garo-nobody", {"garo-jit-config": CONFIG})
    assert excinfo.value.reason is Failure.NOT_FOUND and not excinfo.value.retryable
    assert backend.jit_vault.peek("garo-nobody") is None


# ---------------------------------------------------------------- the agent serves it (GARO_JIT_*)


def test_a_gcp_agent_serves_the_endpoint_over_http_and_refuses_to_run_without_its_url(
    fake: ComputeFake, certs_url: str, issuer: IdentityIssuer
) -> None:
    import dataclasses

    import click

    from scaler.agent.jit_endpoint import start_for
    from scaler.agent.settings import AgentSettings, JitSettings, SettingsError, load
    from tests.agent.gcpkit import gcp_config

    stack = {"GARO_STACK_CONFIG": json.dumps({"config": {"garo:kind": "department", **GCP_STACK}})}
    with pytest.raises(SettingsError, match="GARO_JIT_URL"):
        load({**stack, "GARO_JIT_URL": "10.0.0.2:8780"})
    assert load({**stack, "GARO_JIT_URL": "http://10.0.0.2:8780/"}).jit == JitSettings(
        "http://10.0.0.2:8780", 8780, "https://www.googleapis.com/oauth2/v1/certs"
    )
    backend = make_backend(fake)
    plain = AgentSettings(config=gcp_config(), bus="sqlite:///unused.db")
    with pytest.raises(click.ClickException, match="GARO_JIT_URL"):
        start_for(backend, plain)
    served = dataclasses.replace(plain, jit=JitSettings("http://127.0.0.1:0", 0, certs_url))
    server = start_for(backend, served)
    assert server is not None
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        assert requests.get(url + "/healthz", timeout=5).status_code == 200
        assert requests.post(url + PATH, timeout=5).status_code == 401
        backend.jit_vault.hold("linux", VM, CONFIG, ttl=600)
        token = issuer.token("http://127.0.0.1:0", VM, project=fake.project, zone=f"{fake.region}-b")
        answer = requests.post(url + PATH, headers={"Authorization": f"Bearer {token}"}, timeout=5)
        assert answer.status_code == 200 and answer.text == CONFIG
    finally:
        server.shutdown()
        server.server_close()
