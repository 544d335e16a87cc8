"""One parser, one default: what the webhook and the agent make of a bus URL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scaler.agent.settings import SettingsError, load
from scaler.bus.sqlite import SqliteBus
from scaler.bus.url import DEFAULT_BUS, open_publisher, open_subscriber, parse_bus_url
from scaler.webhook.settings import settings_from_env
from tests.harness.webhooks import ROUTES

STACK = """
config:
  garo:kind: department
  garo:cloud: local
  garo:region: local
  garo:department: eng
  garo:github: {org: octo-org}
  garo:network: {cidr: 10.20.0.0/20}
  garo:groups: [{name: linux, labels: [self-hosted, linux], max: 2}]
"""


def test_the_webhook_and_the_agent_default_to_the_same_bus(tmp_path: Path) -> None:
    stack = tmp_path / "Pulumi.eng.yaml"
    stack.write_text(STACK)
    assert load({}, str(stack)).bus == DEFAULT_BUS
    routes = tmp_path / "routes.json"
    routes.write_text(json.dumps(ROUTES))
    assert settings_from_env({"GARO_WEBHOOK_SECRET": "s" * 32, "GARO_ROUTES": str(routes)}).bus_url == DEFAULT_BUS
    assert parse_bus_url(DEFAULT_BUS).path == ".garo/bus.db"


def test_a_bad_bus_url_stops_the_agent_naming_the_variable(tmp_path: Path) -> None:
    stack = tmp_path / "Pulumi.eng.yaml"
    stack.write_text(STACK)
    with pytest.raises(SettingsError, match=r"GARO_BUS \(or --bus\): unknown bus URL scheme 'redis'"):
        load({"GARO_BUS": "redis://localhost"}, str(stack))
    with pytest.raises(SettingsError, match="GARO_BUS.*expected sqlite://<path>"):
        load({}, str(stack), bus="sqlite://bus.db?fsync=1")


def test_a_publish_reaches_the_departments_subscription_in_a_directory_made_for_it(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/new/dir/bus.db?timeout=2"
    subscriber = open_subscriber(url, "eng")
    publisher = open_publisher(url)
    assert isinstance(publisher, SqliteBus) and publisher.ready()
    publisher.publish(b"{}", {"department": "eng", "delivery": "d-1"})
    publisher.publish(b"{}", {"department": "data", "delivery": "d-2"})
    assert [m.attributes["delivery"] for m in subscriber.pull(max_messages=10, timeout=0)] == ["d-1"]
