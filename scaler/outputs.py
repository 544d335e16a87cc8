"""``garo outputs``: the portal's view of a stack, checked against its published schema.

The portal trusts ``docs/portal-outputs.schema.json``; this command is how a
platform engineer (or CI after ``pulumi up``) proves a stack still honours it.
Outputs come from the Pulumi CLI when it is installed, or from a file saved
from ``pulumi stack output --json``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "docs" / "portal-outputs.schema.json"


class OutputsError(Exception):
    """A clear, user-facing reason the outputs could not be read or are invalid."""


def load_schema() -> dict[str, Any]:
    try:
        schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise OutputsError(f"portal schema not found at {SCHEMA_PATH}") from None
    return schema


def read_outputs(stack: str | None, from_file: Path | None) -> Any:
    if from_file is not None:
        try:
            return json.loads(from_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise OutputsError(f"{from_file}: file not found") from None
        except json.JSONDecodeError as exc:
            raise OutputsError(f"{from_file}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    pulumi = shutil.which("pulumi")
    if pulumi is None:
        raise OutputsError("the Pulumi CLI is not installed; save `pulumi stack output --json` and use --from-file")
    if not stack:
        raise OutputsError("give a stack name (or --from-file)")
    done = subprocess.run(
        [pulumi, "stack", "output", "--json", "--stack", stack], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise OutputsError(f"pulumi stack output failed: {done.stderr.strip()}")
    return json.loads(done.stdout)


def portal_outputs(document: Any) -> dict[str, Any]:
    """Validate the ``portal`` output (or a bare portal document); raise OutputsError listing every problem."""
    portal = document.get("portal", document) if isinstance(document, dict) else document
    validator = jsonschema.Draft202012Validator(load_schema())
    errors = sorted(validator.iter_errors(portal), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"  - portal.{'.'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}" for e in errors]
        raise OutputsError("portal outputs do not match docs/portal-outputs.schema.json:\n" + "\n".join(lines))
    assert isinstance(portal, dict)
    return portal
