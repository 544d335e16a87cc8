"""AWS stand-in: moto in server mode, spoken to over real HTTP by real boto3 clients.

`moto_server` (session) starts one ThreadedMotoServer on a free loopback port.
`aws_clients` (per test) resets moto's state through its reset API first, so
tests never see each other's instances, and returns a factory:
``aws_clients("ec2")`` gives a boto3 client pointed at the server with fake
credentials. Instance-type validation is switched on so moto rejects an
instance type AWS would reject (it is off by default in moto).

Known gaps of moto 5.2 (so do not rely on them): it accepts unknown AMI ids and
a RunInstances without ImageId, and answers 500 (botocore: ResponseParserError)
to SetDesiredCapacity on an unknown group and to
TerminateInstanceInAutoScalingGroup on an unknown instance.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

REGION = "eu-west-1"
FAKE_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "aws_session_token": "testing"}


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """Endpoint URL (http://127.0.0.1:PORT) of a moto server for the whole session."""
    from moto import settings
    from moto.server import ThreadedMotoServer

    # moto reads this at import time; the model checks the attribute per call.
    settings.EC2_ENABLE_INSTANCE_TYPE_VALIDATION = True
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def reset_moto(endpoint: str) -> None:
    """Forget every resource moto holds (its documented reset API)."""
    requests.post(f"{endpoint}/moto-api/reset", timeout=30).raise_for_status()


@pytest.fixture
def aws_clients(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """Factory of boto3 clients on a freshly reset moto: ``aws_clients("autoscaling")``.

    The environment gets fake credentials too, so code under test that builds
    its own clients (with ``endpoint_url=moto_server``) never finds real ones.
    """
    import boto3

    reset_moto(moto_server)
    for key, value in (
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_SESSION_TOKEN", "testing"),
    ):
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.delenv("AWS_PROFILE", raising=False)

    def make(service: str, region: str = REGION) -> Any:
        return boto3.client(service, region_name=region, endpoint_url=moto_server, **FAKE_CREDENTIALS)

    return make
