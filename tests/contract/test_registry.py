"""The registry is the one way the agent opens a backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from scaler.agent.settings import AgentSettings
from scaler.backends import registry
from scaler.backends.base import BackendError, Failure
from scaler.backends.local import LocalBackend
from scaler.bus.url import DEFAULT_BUS
from scaler.config import StackConfig, parse_stack_config


def _config(cloud: str) -> StackConfig:
    raw = {
        "garo:kind": "department",
        "garo:cloud": cloud,
        "garo:region": "europe-west4" if cloud == "gcp" else "local",
        "garo:department": "eng",
        "garo:github": {"org": "octo-org"},
        "garo:network": {"cidr": "10.20.0.0/20"},
        "garo:groups": [{"name": "linux", "labels": ["self-hosted", "linux"], "max": 2}],
    }
    return parse_stack_config(raw | ({"gcp:project": "garo-test"} if cloud == "gcp" else {}))


def test_the_local_cloud_opens_the_fleet_the_settings_name(tmp_path: Path) -> None:
    config = _config("local")
    backend = registry.open_backend(config, AgentSettings(config, DEFAULT_BUS, fleet_dir=str(tmp_path / "fleet")))
    assert isinstance(backend, LocalBackend)
    backend.create("linux", ["garo-eng-linux-1"], {})
    assert [i.name for i in LocalBackend(tmp_path / "fleet").list("linux")] == ["garo-eng-linux-1"]


def test_a_cloud_without_a_backend_is_refused_with_the_known_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "BACKENDS", {"local": registry.BACKENDS["local"]})
    config = _config("gcp")
    with pytest.raises(BackendError, match=r"cloud 'gcp' has no agent backend yet \(known: local\)") as caught:
        registry.open_backend(config, AgentSettings(config, DEFAULT_BUS))
    assert caught.value.reason is Failure.INVALID and not caught.value.retryable
