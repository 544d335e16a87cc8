"""Shared fixtures: the stand-ins from the brief live in tests/harness/ as pytest plugins."""

pytest_plugins: list[str] = [
    "tests.harness.github",
    "tests.harness.aws",
    "tests.harness.compute",
    "tests.harness.pubsub",
    "tests.harness.webhooks",
]
