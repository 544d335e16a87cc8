"""Structured JSON logs for the agent.

One JSON object per line with the fields on-call greps for (delivery, job_id,
group, instance). Values that look like secrets are never passed in: the JIT
config lives only in a local variable between GitHub and ``set_metadata``; as a
second line of defence any field whose name mentions a secret is dropped.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_FIELDS = ("delivery", "job_id", "group", "instance", "action", "reason", "count", "error", "names", "pass_no")
_SECRET_HINTS = ("jit", "token", "secret", "encoded", "password", "key")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name in _FIELDS:
            if hasattr(record, name):
                entry[name] = getattr(record, name)
        for name, value in getattr(record, "fields", {}).items():
            if not any(hint in name.lower() for hint in _SECRET_HINTS):
                entry[name] = value
        if record.exc_info and record.exc_info[1] is not None:
            entry["exception"] = f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
        return json.dumps(entry, default=str)


def configure(level: str = "INFO") -> None:
    """Route the root logger to stderr as JSON (called by ``garo agent``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.Formatter.converter = time.gmtime
