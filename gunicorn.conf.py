"""gunicorn reads this file when started from the repository root.

The settings live in the package (scaler/webhook/gunicorn_conf.py) so that an
installed ``garo webhook`` uses the same ones; see docs/webhook.md.
"""

from scaler.webhook.gunicorn_conf import *  # noqa: F403
