"""The webhook service: ``gunicorn 'scaler.webhook:create_app()'`` or ``garo webhook``.

Importing this package must not import prometheus_client: gunicorn.conf.py
(which imports from here) first sets PROMETHEUS_MULTIPROC_DIR, and the client
library reads it only once, when it is imported. Hence the thin wrapper.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scaler.webhook.settings import WebhookSettings, settings_from_env

if TYPE_CHECKING:
    from flask import Flask

__all__ = ["WebhookSettings", "create_app", "settings_from_env"]


def create_app(config: WebhookSettings | None = None) -> Flask:
    """The WSGI app; without ``config`` every setting comes from the environment (docs/webhook.md)."""
    from scaler.webhook.app import create_app as _create_app

    return _create_app(config)
