"""``garo agent`` with its Compute endpoint pointed at the Compute fake: one agent replica of the chaos run.

The agent reaches Compute only through :mod:`scaler.backends.registry`, which
builds the GCP backend for ``https://compute.googleapis.com`` with Application
Default Credentials; there is no setting for another endpoint (Google ships no
Compute emulator, so no ``*_EMULATOR_HOST`` convention either). This entry
point swaps that one registry entry for the same :class:`GcpBackend`, built
from the same stack config, on ``CHAOS_COMPUTE_URL`` with an unauthenticated
session, then runs the real ``garo`` command line with the arguments given:

    CHAOS_COMPUTE_URL=http://127.0.0.1:PORT/compute/v1 python -m tests.chaos.agent_proc agent --stack ...

Everything else (settings, bus, GitHub client, agent loop) is ``garo agent``'s own.
"""

from __future__ import annotations

import os
import sys

import requests

from scaler.agent.settings import AgentSettings
from scaler.backends import registry
from scaler.backends.base import Backend
from scaler.config import StackConfig


def _fake_compute(config: StackConfig, settings: AgentSettings) -> Backend:
    from scaler.backends.gcp import GcpBackend

    return GcpBackend.from_config(config, session=requests.Session(), base_url=os.environ["CHAOS_COMPUTE_URL"])


def main() -> None:
    if not os.environ.get("CHAOS_COMPUTE_URL"):
        sys.exit("CHAOS_COMPUTE_URL (the Compute fake's base URL) is not set")
    registry.BACKENDS = {**registry.BACKENDS, "gcp": _fake_compute}
    from scaler.cli import main as garo

    garo(prog_name="garo")


if __name__ == "__main__":
    main()
