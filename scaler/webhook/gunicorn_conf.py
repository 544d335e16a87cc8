"""gunicorn settings for the webhook (the repository's gunicorn.conf.py re-exports these).

gthread workers keep connections alive (load balancers reuse them) and let
a slow publish wait without blocking the worker's other requests. Our
subclass (scaler/webhook/worker.py) reads each request in the worker's event
loop and hands a thread only complete requests, so clients that send half a
request and stall (slowloris) cannot occupy the threads. The
workers share one Prometheus directory so /metrics adds up all of them; it
is emptied when the master starts, because samples of dead workers from an
earlier run would otherwise be summed in forever.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

# Before anything imports prometheus_client: it picks per-process or shared
# storage for samples once, at import time.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="garo-webhook-metrics-")

from scaler.webhook.settings import server_settings_from_env

_server = server_settings_from_env()

bind = _server.bind
workers = _server.workers
worker_class = "scaler.webhook.worker.RequestBufferingWorker"  # gthread + requests read without a thread
threads = _server.threads
keepalive = 75  # longer than typical load balancer idle timeouts (60 s); idle connections hold no thread
worker_connections = 1000  # per worker: what bounds idle and slow connections (they cost a socket, not a thread)
timeout = 30
graceful_timeout = 20
accesslog = None  # the app logs one JSON line per request, with delivery and job ids
errorlog = "-"
control_socket_disable = True  # gunicorn >= 24 would otherwise write a socket under $HOME
wsgi_app = "scaler.webhook:create_app()"
# prometheus_client's multiprocess files are named <kind>_<pid>.db.
PROMETHEUS_FILE_KINDS = frozenset({"counter", "gauge", "histogram", "summary"})


def on_starting(server: Any) -> None:
    """Forget samples of an earlier run's workers; touch nothing but prometheus_client's own files."""
    directory = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        if stale.name.split("_", 1)[0] in PROMETHEUS_FILE_KINDS:
            stale.unlink(missing_ok=True)


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call,unused-ignore]
