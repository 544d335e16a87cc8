"""Dated entries in docs/benchmarks.md, newest first, one section per benchmark.

Each entry is written whole by the benchmark that measured it: a heading with
the date and the exact command, then only figures from that run. Older entries
stay below it as history. A section's intro (written once, when the section
is new) explains the setup and carries no figures.
"""

from __future__ import annotations

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
HEADER = (
    "# Benchmarks\n\nMeasured, not asserted in tests. Each section lists dated entries, newest first. Every figure "
    "in an entry comes from the command in its heading, in that run; a section's introduction carries none.\n"
)


def heading(date: str, command: str) -> str:
    return f"### {date} · `{command}`"


def add_entry(section: str, intro: str, entry: str, path: Path = DOCS) -> None:
    """Put ``entry`` (starting with its ``### date`` heading) first under ``## section``."""
    text = path.read_text(encoding="utf-8") if path.exists() else HEADER
    match = re.search(rf"^## {re.escape(section)}\n", text, re.M)
    if match is None:
        text = text.rstrip("\n") + f"\n\n## {section}\n\n{intro.strip()}\n\n{entry.strip()}\n"
    else:
        rest = text[match.end() :]
        following = re.search(r"^(### |## )", rest, re.M)  # the newest entry, or the next section
        at = match.end() + (following.start() if following else len(rest))
        before, after = text[:at].rstrip("\n"), text[at:].lstrip("\n")
        text = f"{before}\n\n{entry.strip()}\n\n{after}".rstrip("\n") + "\n"
    path.write_text(text, encoding="utf-8")
