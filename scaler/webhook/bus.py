"""Turn ``GARO_BUS`` into a Publisher.

``sqlite://<path>`` is the embedded bus (everything after ``sqlite://`` is the
path, so ``sqlite:///var/lib/garo/bus.db`` is absolute and
``sqlite://garo-bus.db`` relative); query parameters ``synchronous``,
``timeout`` (seconds to wait for a locked file before answering 503) and
``checkpoint`` (seconds between background WAL checkpoints, 0.5; 0 lets
SQLite checkpoint inside a request's commit) tune it.
``pubsub://<project>/<topic>`` is Google Pub/Sub; the client honours
``PUBSUB_EMULATOR_HOST``; ``?timeout=S`` bounds how long a request waits for
Pub/Sub before answering 503 (5 s, well inside GitHub's 10 s).
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from scaler.bus.base import Publisher


def publisher_from_url(url: str) -> Publisher:
    if url.startswith("sqlite://"):
        from scaler.bus.sqlite import SqliteBus

        path, _, query = url[len("sqlite://") :].partition("?")
        params = {k: v[-1] for k, v in parse_qs(query).items()}
        return SqliteBus(
            path,
            synchronous=params.get("synchronous", "NORMAL"),
            busy_timeout=float(params.get("timeout", "5")),
            checkpoint_interval=float(params.get("checkpoint", "0.5")),
        )
    if url.startswith("pubsub://"):
        from scaler.bus.pubsub import PubSubPublisher

        parts = urlsplit(url)
        project, topic = parts.netloc, parts.path.strip("/")
        if not project or not topic or "/" in topic:
            raise ValueError(f"expected pubsub://<project>/<topic>, got {url!r}")
        timeout = float({k: v[-1] for k, v in parse_qs(parts.query).items()}.get("timeout", "5"))
        return PubSubPublisher(project, topic, timeout=timeout)
    raise ValueError(f"unknown bus URL {url!r} (expected sqlite:// or pubsub://)")
