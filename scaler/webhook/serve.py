"""``garo webhook``: run the intake under gunicorn with the documented settings."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from scaler.config import ConfigError
from scaler.webhook.settings import settings_from_env


def run(extra_args: Sequence[str] = ()) -> None:
    """Check the environment first (a clear error beats a crash-looping worker), then exec gunicorn."""
    try:
        settings_from_env()
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        raise SystemExit(2) from None
    argv = [sys.executable, "-m", "gunicorn", "-c", "python:scaler.webhook.gunicorn_conf", *extra_args]
    os.execv(sys.executable, argv)
