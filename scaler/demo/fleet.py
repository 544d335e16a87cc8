"""Where the demo's VMs live: the local simulated fleet, or (``--cloud aws``) moto behind ``AwsBackend``.

A fleet gives the agent its backend and plays every VM's boot agent: it hands
a VM's JIT config to GitHub once the VM "booted", and says when a runner's job
ended. The story in :mod:`scaler.demo.scenario` is the same for every fleet.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from scaler.backends.base import JIT_KEY, Backend
from scaler.backends.local import LocalBackend
from scaler.backends.local_vm import SimulatedVms
from scaler.config import StackConfig
from scaler.demo.parts import CountingBackend, demo_config

# Called when a VM's runner starts with its JIT config: (instance name, config). The config is a secret.
OnBoot = Callable[[str, str], None]


class Fleet(Protocol):
    config: StackConfig
    backend: Backend  # what the agent drives
    boot_delay: float

    def intro(self) -> list[str]:
        """Lines printed before the story: where the fleet is and how to look at it."""

    def step(self, on_boot: OnBoot) -> list[str]:
        """Advance every VM's boot agent; return what is worth narrating."""

    def finish(self, group: str, name: str) -> None:
        """The runner on ``name`` finished its job: its boot agent reports ``done``."""

    def states(self) -> dict[str, str]:
        """Every live VM by name, with how the narration shows its state."""

    def calls(self) -> Mapping[str, int]:
        """The agent's cloud API calls by method."""

    def outro(self) -> list[str]:
        """Summary lines about the fleet once the story ended."""

    def close(self) -> None: ...


class LocalFleet:
    """``LocalBackend`` + ``SimulatedVms``: VMs "boot" after ``boot_delay`` seconds."""

    boot_delay = 1.5

    def __init__(self) -> None:
        self.config = demo_config()
        self.fleet = LocalBackend(None, boot_delay=self.boot_delay)
        self.counting = CountingBackend(self.fleet)
        self.backend: Backend = self.counting
        self._booted: list[tuple[str, str]] = []
        self.vms = SimulatedVms(self.fleet, on_boot=lambda group, name, md: self._booted.append((name, md[JIT_KEY])))

    def intro(self) -> list[str]:
        return []

    def step(self, on_boot: OnBoot) -> list[str]:
        self._booted.clear()
        self.vms.step()
        for name, jit in self._booted:
            on_boot(name, jit)
        return []

    def finish(self, group: str, name: str) -> None:
        self.vms.finish(group, name)

    def states(self) -> dict[str, str]:
        return {i.name: i.state.value for g in self.config.groups for i in self.fleet.list(g.name)}

    def calls(self) -> Mapping[str, int]:
        return self.counting.calls

    def outro(self) -> list[str]:
        return []

    def close(self) -> None:
        pass
