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

from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from scaler.bus.base import Publisher

SYNCHRONOUS = ("NORMAL", "FULL", "EXTRA")  # OFF is refused: it can lose events answered 202


@dataclass(frozen=True)
class BusUrl:
    """A checked ``GARO_BUS``: which bus, where, and its tuning."""

    scheme: str  # "sqlite" or "pubsub"
    path: str = ""  # sqlite: the file
    project: str = ""  # pubsub
    topic: str = ""
    options: dict[str, float | str] = field(default_factory=dict)


def _number(params: dict[str, str], key: str, default: float, url: str) -> float:
    try:
        value = float(params.get(key, default))
    except ValueError:
        raise ValueError(f"{key}= must be a number of seconds in {url!r}") from None
    if value < 0:
        raise ValueError(f"{key}= must not be negative in {url!r}")
    return value


def parse_bus_url(url: str) -> BusUrl:
    """Check a bus URL completely (before gunicorn forks workers that would each fail on it)."""
    if url.startswith("sqlite://"):
        path, _, query = url[len("sqlite://") :].partition("?")
        params = {k: v[-1] for k, v in parse_qs(query).items()}
        unknown = set(params) - {"synchronous", "timeout", "checkpoint"}
        if not path or unknown:
            raise ValueError(f"expected sqlite://<path>[?synchronous=&timeout=&checkpoint=], got {url!r}")
        synchronous = params.get("synchronous", "NORMAL").upper()
        if synchronous == "OFF":
            raise ValueError("synchronous=OFF is refused: a crash could lose events already answered 202; use NORMAL")
        if synchronous not in SYNCHRONOUS:
            raise ValueError(f"synchronous= must be one of {', '.join(SYNCHRONOUS)} in {url!r}")
        timeout = _number(params, "timeout", 5.0, url)
        checkpoint = _number(params, "checkpoint", 0.5, url)
        return BusUrl(
            "sqlite", path=path, options={"synchronous": synchronous, "timeout": timeout, "checkpoint": checkpoint}
        )
    if url.startswith("pubsub://"):
        parts = urlsplit(url)
        project, topic = parts.netloc, parts.path.strip("/")
        params = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if not project or not topic or "/" in topic or set(params) - {"timeout"}:
            raise ValueError(f"expected pubsub://<project>/<topic>[?timeout=S], got {url!r}")
        return BusUrl("pubsub", project=project, topic=topic, options={"timeout": _number(params, "timeout", 5.0, url)})
    raise ValueError(f"unknown bus URL {url!r} (expected sqlite://<path> or pubsub://<project>/<topic>)")


def publisher_from_url(url: str) -> Publisher:
    bus = parse_bus_url(url)
    if bus.scheme == "sqlite":
        from scaler.bus.sqlite import SqliteBus

        return SqliteBus(
            bus.path,
            synchronous=str(bus.options["synchronous"]),
            busy_timeout=float(bus.options["timeout"]),
            checkpoint_interval=float(bus.options["checkpoint"]),
        )
    from scaler.bus.pubsub import PubSubPublisher

    return PubSubPublisher(bus.project, bus.topic, timeout=float(bus.options["timeout"]))
