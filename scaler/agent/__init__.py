"""The in-cluster agent (scaler) of one department: events in, VMs out.

Public API::

    agent = Agent(config, backend, github, subscriber, clock=time.time, registry=CollectorRegistry())
    agent.run_once()                 # pull one batch, act, ack what is durable
    plan = agent.reconcile(dry_run=True)
    agent.run_forever(stop_event)

Inside, each step is a module: :mod:`~scaler.agent.observe` reads (GitHub: GETs
only), :mod:`~scaler.agent.planner` decides (pure), :mod:`~scaler.agent.executor`
acts, :mod:`~scaler.agent.loop` wires them to the bus.
"""

from scaler.agent.actions import Action, Kind, Plan
from scaler.agent.loop import Agent

__all__ = ["Action", "Agent", "Kind", "Plan"]
