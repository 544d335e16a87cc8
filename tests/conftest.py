"""Shared fixtures: the stand-ins from the brief live in tests/harness/ as pytest plugins."""

pytest_plugins: list[str] = [
    "tests.harness.compute",
    "tests.harness.pubsub",
]
