"""The webhook service: ``gunicorn 'scaler.webhook:create_app()'`` or ``garo webhook``."""

from scaler.webhook.app import create_app
from scaler.webhook.settings import WebhookSettings, settings_from_env

__all__ = ["WebhookSettings", "create_app", "settings_from_env"]
