"""The bus URL (``GARO_BUS`` / ``--bus``): parsed here only, with one default for every process.

The webhook publishes and each agent subscribes through the same URL, so with
no setting at all ``garo webhook`` and ``garo agent`` started in one directory
share :data:`DEFAULT_BUS`, the embedded bus in ``.garo/`` beside the local
fleet (``.garo/fleet``).

``sqlite://<path>`` is the embedded bus: everything after ``sqlite://`` is the
file, so ``sqlite:///var/lib/garo/bus.db`` is absolute and
``sqlite://.garo/bus.db`` relative; its directory is created when missing.
Query parameters: ``synchronous`` (SQLite's durability knob, NORMAL),
``timeout`` (seconds to wait for a locked file before giving up: the webhook
then answers 503; 5) and ``checkpoint`` (seconds between background WAL
checkpoints, 0.5; 0 lets SQLite checkpoint inside a commit).

``pubsub://<project>/<name>`` is Google Pub/Sub: ``name`` is the topic the
webhook publishes to, or the subscription an agent pulls from (each process
is given its own URL by infra/). ``?timeout=S`` bounds how long a publish
waits for Pub/Sub before the webhook answers 503 (5 s, well inside GitHub's
10 s). The client honours ``PUBSUB_EMULATOR_HOST``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs, urlsplit

from scaler.bus.base import Publisher, Subscriber

DEFAULT_BUS = "sqlite://.garo/bus.db"
SYNCHRONOUS = ("NORMAL", "FULL", "EXTRA")  # OFF is refused: it can lose events answered 202


@dataclass(frozen=True)
class BusUrl:
    """A checked bus URL: which bus, where, and its tuning."""

    scheme: Literal["sqlite", "pubsub"]
    path: str = ""  # sqlite: the file
    project: str = ""  # pubsub
    name: str = ""  # pubsub: the topic (publisher) or the subscription (subscriber)
    synchronous: str = "NORMAL"  # sqlite
    timeout: float = 5.0  # seconds: sqlite's lock wait, or Pub/Sub's publish deadline
    checkpoint: float = 0.5  # sqlite: seconds between background checkpoints


def _seconds(params: dict[str, str], key: str, default: float, url: str) -> float:
    try:
        value = float(params.get(key, default))
    except ValueError:
        raise ValueError(f"{key}= must be a number of seconds in {url!r}") from None
    if value < 0:
        raise ValueError(f"{key}= must not be negative in {url!r}")
    return value


def parse_bus_url(url: str) -> BusUrl:
    """Check a bus URL completely, so a bad one fails at start (before gunicorn forks its workers)."""
    if url.startswith("sqlite://"):
        path, _, query = url.removeprefix("sqlite://").partition("?")
        params = {k: v[-1] for k, v in parse_qs(query).items()}
        unknown = set(params) - {"synchronous", "timeout", "checkpoint"}
        if not path or unknown:
            raise ValueError(f"expected sqlite://<path>[?synchronous=&timeout=&checkpoint=], got {url!r}")
        synchronous = params.get("synchronous", "NORMAL").upper()
        if synchronous == "OFF":
            raise ValueError("synchronous=OFF is refused: a crash could lose events already answered 202; use NORMAL")
        if synchronous not in SYNCHRONOUS:
            raise ValueError(f"synchronous= must be one of {', '.join(SYNCHRONOUS)} in {url!r}")
        return BusUrl(
            "sqlite",
            path=path,
            synchronous=synchronous,
            timeout=_seconds(params, "timeout", 5.0, url),
            checkpoint=_seconds(params, "checkpoint", 0.5, url),
        )
    if url.startswith("pubsub://"):
        parts = urlsplit(url)
        project, name = parts.netloc, parts.path.strip("/")
        params = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if not project or not name or "/" in name or set(params) - {"timeout"}:
            raise ValueError(f"expected pubsub://<project>/<topic or subscription>[?timeout=S], got {url!r}")
        return BusUrl("pubsub", project=project, name=name, timeout=_seconds(params, "timeout", 5.0, url))
    scheme = url.split("://", 1)[0] if "://" in url else url
    raise ValueError(f"unknown bus URL scheme {scheme!r} (expected sqlite://<path> or pubsub://<project>/<name>)")


def _sqlite_file(bus: BusUrl) -> str:
    Path(bus.path).parent.mkdir(parents=True, exist_ok=True)
    return bus.path


def open_publisher(url: str) -> Publisher:
    """The webhook's side: publish to the topic (or the embedded bus) the URL names."""
    bus = parse_bus_url(url)
    if bus.scheme == "sqlite":
        from scaler.bus.sqlite import SqliteBus

        return SqliteBus(
            _sqlite_file(bus),
            synchronous=bus.synchronous,
            busy_timeout=bus.timeout,
            checkpoint_interval=bus.checkpoint,
        )
    from scaler.bus.pubsub import PubSubPublisher

    return PubSubPublisher(bus.project, bus.name, timeout=bus.timeout)


def open_subscriber(url: str, department: str) -> Subscriber:
    """An agent's side: its department's subscription.

    On the embedded bus the subscription is created here (``agent-<department>``,
    filtered on the department attribute, as infra/ creates it on Pub/Sub); like
    Pub/Sub's, it receives messages published after it exists.
    """
    bus = parse_bus_url(url)
    if bus.scheme == "sqlite":
        from scaler.bus.sqlite import SqliteBus

        return SqliteBus(
            _sqlite_file(bus),
            subscription=f"agent-{department}",
            filter={"department": department},
            synchronous=bus.synchronous,
            busy_timeout=bus.timeout,
            checkpoint_interval=bus.checkpoint,
        )
    from scaler.bus.pubsub import PubSubSubscriber

    return PubSubSubscriber(bus.project, bus.name)
