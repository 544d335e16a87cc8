"""One JSON object per log line, so on-call can filter by delivery, job or department.

Only fields passed explicitly (``extra={"fields": {...}}``) are emitted: the
request body and headers are never logged, so neither the payload nor the
signature (nor, by construction, the secret) can leak into the logs.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

LOGGER_NAME = "garo.webhook"
_ENCODER = json.JSONEncoder(default=str)  # built once: json.dumps(default=...) builds one per call


class JsonFormatter(logging.Formatter):
    _second = -1
    _stamp = ""

    def _time(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:  # one strftime per second, not per request
            self._second, self._stamp = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self._time(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info and record.exc_info[0] is not None:
            # The type only: exception messages may quote input.
            entry["error"] = record.exc_info[0].__name__
        return _ENCODER.encode(entry)


def get_logger(level: str = "INFO") -> logging.Logger:
    """The webhook logger, writing JSON to stderr unless the host configured handlers."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(level)
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
        logger.propagate = False
    return logger
