"""The Garo Pulumi program: read the validated stack config, build the hub or a department.

Everything about *what* a stack contains lives in the components; this file
only chooses between them and exports their outputs (see docs/deploy-gcp.md).
"""

from __future__ import annotations

import pulumi

from infra.department import Department
from infra.hub import Hub
from infra.stack import load

loaded = load()
if loaded.config.cloud != "gcp":
    raise pulumi.RunError(f"garo:cloud {loaded.config.cloud!r}: this program deploys GCP stacks only (AWS: not yet)")
stack: Hub | Department = (
    Hub("hub", loaded) if loaded.config.kind == "hub" else Department(loaded.config.department, loaded)
)
for key, value in sorted(stack.outputs.items()):
    pulumi.export(key, value)
