"""Problems only visible across stacks: overlapping networks, ambiguous labels, name prefixes, shared credentials."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from scaler.config.credentials import check_shared_credentials
from scaler.config.model import Issue, StackConfig, labels_collide


def check_across_departments(configs: Sequence[StackConfig]) -> list[Issue]:
    """Problems only visible across stacks: overlapping CIDRs, shared labels and credentials."""
    issues: list[Issue] = check_shared_credentials(configs)
    departments = [c for c in configs if c.kind == "department" and c.network]
    for i, a in enumerate(departments):
        for b in departments[i + 1 :]:
            assert a.network and b.network
            if a.cloud == b.cloud == "gcp" and a.project and a.project == b.project:
                # A scaler may list instances project-wide (metadata included): in one project,
                # one department could read another's JIT configs before their VMs boot.
                issues.append(
                    Issue(
                        "gcp:project",
                        f"{a.department!r} and {b.department!r} share project {a.project!r}: "
                        "each department needs its own project (its scaler can read VM metadata project-wide)",
                    )
                )
            if a.department == b.department:
                issues.append(Issue("garo:department", f"{a.department!r} is declared by more than one stack"))
            for x, y in ((a, b), (b, a)):
                # The scaler's IAM condition is a name prefix `garo-<dept>-`:
                # department "data" would be allowed to touch "data-eng"'s VMs.
                if y.department.startswith(f"{x.department}-"):
                    issues.append(
                        Issue(
                            "garo:department",
                            f"{y.department!r} starts with '{x.department}-': the scaler of {x.department!r} "
                            f"could manage {y.department!r}'s VMs (garo-{y.department}-* matches garo-{x.department}-*)",
                        )
                    )
            net_a, net_b = ipaddress.ip_network(a.network.cidr), ipaddress.ip_network(b.network.cidr)
            if net_a.overlaps(net_b):
                issues.append(
                    Issue(
                        "garo:network.cidr",
                        f"{b.department} ({net_b}) overlaps {a.department} ({net_a}); department networks must not overlap",
                    )
                )
            for ga in a.groups:
                for gb in b.groups:
                    if labels_collide(ga.labels, gb.labels):
                        issues.append(
                            Issue(
                                "garo:groups.labels",
                                f"{a.department}/{ga.name} {sorted(ga.custom_labels)} and {b.department}/{gb.name} "
                                f"{sorted(gb.custom_labels)} cannot be told apart by labels",
                            )
                        )
    return issues
