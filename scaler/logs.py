"""One log format for every Garo service: one JSON object per line on stderr.

The webhook and the agent write the same keys, so one query finds a delivery
from the webhook's line to the agent's:

* ``time`` (UTC, milliseconds), ``severity`` (``INFO``, ``WARNING``...),
  ``logger`` and ``message``. ``severity`` and ``message`` are the names
  Google Cloud Logging reads from a JSON line, so levels survive ingestion.
* Extra fields are keyword names passed as ``extra={"job_id": ..., "group": ...}``
  and written at the top level. A field whose name hints at a secret
  (``token``, ``jit``, ``key``...) is dropped: a second line of defence, the
  first being that secrets are never passed in.
* An exception is written as its type (``exception``) and where it was raised
  (``stack``: file, line and function per frame), never its message: messages
  quote input (a payload, a URL with a token, a JIT config), and the webhook's
  rule is that nothing it receives reaches a log.

:func:`configure` routes one logger (the root for the agent, the Flask app's
for the webhook) through :class:`JsonFormatter`.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
import time
import traceback
from typing import Any

_ENCODER = json.JSONEncoder(default=str)  # built once: json.dumps(default=...) builds one per call
_SECRET_HINTS = ("jit", "token", "secret", "encoded", "password", "key", "authorization")
# Attributes every LogRecord has; anything else on a record came in through ``extra``.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
_MAX_FRAMES = 20


@functools.lru_cache(maxsize=1024)
def is_secret_name(name: str) -> bool:
    """True for a field name that hints at a secret; such fields are never written.

    Cached: field names come from the code's ``extra=`` keys, a few dozen, and the
    webhook formats a line per delivery, so the check showed in its profile.
    """
    lowered = name.lower()
    return any(hint in lowered for hint in _SECRET_HINTS)


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object; see the module docstring for its keys."""

    _second = -1
    _stamp = ""

    def _time(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:  # one strftime per second, not per line
            self._second, self._stamp = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self._time(record),
            "severity": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in record.__dict__.keys() - _STANDARD:
            if not name.startswith("_") and not is_secret_name(name):
                entry[name] = record.__dict__[name]
        if record.exc_info and record.exc_info[0] is not None:
            entry["exception"] = record.exc_info[0].__name__
            entry["stack"] = [
                f"{frame.filename}:{frame.lineno} {frame.name}"
                for frame in traceback.extract_tb(record.exc_info[2], limit=-_MAX_FRAMES)
            ]
        return _ENCODER.encode(entry)


def configure(level: str | int = "INFO", name: str | None = None) -> logging.Logger:
    """Send logger ``name`` (the root if None) to stderr as JSON, replacing its handlers.

    A named logger stops propagating, so a host's root handlers (gunicorn's,
    pytest's) do not write its lines a second time in another format.
    """
    logger = logging.getLogger(name)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    if name:
        logger.propagate = False
    return logger
