"""``garo demo``: webhook + embedded bus + agent + simulated fleet and GitHub, narrated."""

from scaler.demo.scenario import run_demo

__all__ = ["run_demo"]
