"""The Garo Pulumi program: read the validated stack config, build the hub or a department.

Everything about *what* a stack contains lives in the components; this file
only chooses between them and exports their outputs (see docs/deploy-gcp.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pulumi

from infra.department import Department
from infra.hub import Hub
from infra.stack import load

if TYPE_CHECKING:
    from infra.aws.department import AwsDepartment

loaded = load()
if loaded.config.cloud == "local" or (loaded.config.cloud == "aws" and loaded.config.kind == "hub"):
    raise pulumi.RunError(
        f"garo:cloud {loaded.config.cloud!r}: this program deploys GCP stacks and AWS departments (the hub is on GCP)"
    )
stack: Hub | Department | AwsDepartment
if loaded.config.kind == "hub":
    stack = Hub("hub", loaded)
elif loaded.config.cloud == "aws":
    from infra.aws.department import AwsDepartment  # late: only AWS stacks import pulumi_aws

    stack = AwsDepartment(loaded.config.department, loaded)
else:
    stack = Department(loaded.config.department, loaded)
for key, value in sorted(stack.outputs.items()):
    pulumi.export(key, value)
