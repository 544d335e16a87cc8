"""Pretend to be the boot agent of every VM in the local fleet.

On a real VM the boot agent waits for ``garo-jit-config`` in its metadata,
starts the runner with it and reports progress as ``garo-state``. Here one
process does that for the whole local fleet, so ``garo demo`` can show the loop
end to end: run ``python -m scaler.backends.local_vm --dir .garo/fleet``.

The JIT config is treated as a secret: it is handed to ``on_boot`` and never
logged.
"""

from __future__ import annotations

import argparse
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from scaler.backends.base import JIT_KEY, STATE_LABEL, InstanceState
from scaler.backends.local import DEFAULT_STATE_DIR, LocalBackend

log = logging.getLogger(__name__)

# Called once per VM when its runner "starts": (group, instance name, metadata).
OnBoot = Callable[[str, str, dict[str, str]], None]


class SimulatedVms:
    """One simulated boot agent per running instance, advanced by :meth:`step`."""

    def __init__(self, backend: LocalBackend, groups: Sequence[str] = (), on_boot: OnBoot | None = None) -> None:
        self.backend = backend
        self.only_groups = tuple(groups)
        self.on_boot = on_boot

    def step(self) -> list[tuple[str, str]]:
        """Boot every running instance that has a JIT config; return the (group, name) pairs booted now.

        Running instances without one report ``waiting`` (a warm runner), as the
        real boot agent does while it polls its metadata.
        """
        booted: list[tuple[str, str]] = []
        for group in self.only_groups or self.backend.groups():
            for instance in self.backend.list(group):
                if instance.state is not InstanceState.RUNNING:
                    continue
                state = instance.labels.get(STATE_LABEL)
                if state in ("running", "done", "failed"):
                    continue
                metadata = self.backend.get_metadata(group, instance.name)
                if metadata.get(JIT_KEY):
                    self.backend.set_labels(group, instance.name, {STATE_LABEL: "running"})
                    log.info("simulated VM %s/%s started its runner", group, instance.name)
                    booted.append((group, instance.name))
                    if self.on_boot is not None:
                        self.on_boot(group, instance.name, metadata)
                elif state is None:
                    self.backend.set_labels(group, instance.name, {STATE_LABEL: "waiting"})
        return booted

    def finish(self, group: str, name: str, ok: bool = True) -> None:
        """The runner's job ended; the VM says so and waits for the scaler to delete it."""
        self.backend.set_labels(group, name, {STATE_LABEL: "done" if ok else "failed"})

    def run(self, interval: float, stop: threading.Event) -> None:
        while not stop.is_set():
            self.step()
            stop.wait(interval)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Simulated boot agents for the local fleet")
    parser.add_argument("--dir", type=Path, default=DEFAULT_STATE_DIR, help="fleet state directory")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between polls")
    parser.add_argument("--boot-delay", type=float, default=2.0, help="seconds a VM takes to boot")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    vms = SimulatedVms(LocalBackend(args.dir, boot_delay=args.boot_delay))
    try:
        vms.run(args.interval, threading.Event())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
