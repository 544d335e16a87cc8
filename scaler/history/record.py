"""The job history format: one JSON object per line, one GitHub Actions job per object.

`garo history export|import|generate` write it and `garo simulate` reads it.
Every line carries ``"schema": "garo.job.v1"`` so a file says what it is and a
later format can be told apart line by line. Fields:

==============  ============================================================
id              the job's id (GitHub's, globally unique), integer > 0
repository      ``owner/name``
labels          the ``runs-on`` labels, a list of strings (may be empty
                only when ``group`` says where the job was routed)
created_at      when the job was queued (ISO 8601, UTC)
started_at      when a runner took it; null if no runner ever did
completed_at    when it ended; null if it had not ended when recorded
run_attempt     1 for a first run, n for the n-th re-run; null if unknown
runner_name     the runner that ran it (Garo: the VM's name), or null
conclusion      GitHub's conclusion (success, failure, cancelled...), null
                while not completed
source          ``github`` (export), ``bus`` or ``log`` (import),
                ``synthetic`` (the generator: never real history)
run_id          optional: the workflow run's id
department,     optional: where Garo's webhook routed the job (imports)
group
==============  ============================================================

The reader is strict: an unknown field, a missing one, a wrong type, times in
the wrong order or a repeated job id make the line bad, and every bad line is
reported with its number. Nothing is dropped without being counted.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO, TypeVar

SCHEMA = "garo.job.v1"
SOURCES = frozenset({"github", "bus", "log", "synthetic"})
CONCLUSIONS = frozenset(
    {
        "success",
        "failure",
        "cancelled",
        "skipped",
        "timed_out",
        "action_required",
        "neutral",
        "stale",
        "startup_failure",
    }
)
# GitHub's timestamps come from different services; a started_at a few seconds
# before created_at is real data, not a broken record. More than this is broken.
CLOCK_SKEW = timedelta(seconds=60)
_REPO = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
_REQUIRED = ("schema", "id", "repository", "labels", "created_at", "source")
_OPTIONAL = ("started_at", "completed_at", "run_attempt", "runner_name", "conclusion", "run_id", "department", "group")
_FIELDS = frozenset(_REQUIRED + _OPTIONAL)
MAX_SHOWN_ERRORS = 20
T = TypeVar("T")


class RecordError(ValueError):
    """One record is not a valid job; the message says which field and why."""


class HistoryError(ValueError):
    """A history file has bad records (and --skip-bad was not given), or cannot be read."""


@dataclass(frozen=True)
class JobRecord:
    id: int
    repository: str
    labels: tuple[str, ...]
    created_at: datetime
    source: str
    started_at: datetime | None = None
    completed_at: datetime | None = None
    run_attempt: int | None = None
    runner_name: str | None = None
    conclusion: str | None = None
    run_id: int | None = None
    department: str | None = None
    group: str | None = None

    def __post_init__(self) -> None:
        _check(self)

    @property
    def wait(self) -> timedelta | None:
        """Queued to started: what a runner pool exists to shorten."""
        return None if self.started_at is None else max(self.started_at - self.created_at, timedelta(0))

    @property
    def duration(self) -> timedelta | None:
        """Started to completed: how long the job held its runner."""
        if self.started_at is None or self.completed_at is None:
            return None
        return max(self.completed_at - self.started_at, timedelta(0))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schema": SCHEMA,
            "id": self.id,
            "repository": self.repository,
            "labels": list(self.labels),
            "created_at": format_time(self.created_at),
            "started_at": format_time(self.started_at),
            "completed_at": format_time(self.completed_at),
            "run_attempt": self.run_attempt,
            "runner_name": self.runner_name,
            "conclusion": self.conclusion,
            "source": self.source,
        }
        for key in ("run_id", "department", "group"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out

    def to_line(self) -> str:
        return json.dumps(self.to_json(), separators=(",", ":"), ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, obj: object) -> JobRecord:
        """Parse one decoded line; RecordError says what is wrong."""
        if not isinstance(obj, Mapping):
            raise RecordError(f"expected a JSON object, got {type(obj).__name__}")
        unknown = sorted(set(obj) - _FIELDS)
        if unknown:
            raise RecordError(f"unknown field(s) {', '.join(map(repr, unknown))}")
        missing = [key for key in _REQUIRED if key not in obj]
        if missing:
            raise RecordError(f"missing field(s) {', '.join(map(repr, missing))}")
        if obj["schema"] != SCHEMA:
            raise RecordError(f"schema must be {SCHEMA!r}, got {obj['schema']!r}")
        labels = obj["labels"]
        if not isinstance(labels, list) or not all(isinstance(label, str) and label for label in labels):
            raise RecordError("labels must be a list of non-empty strings")
        return cls(
            id=_int(obj["id"], "id"),
            repository=_str(obj["repository"], "repository"),
            labels=tuple(labels),
            created_at=_time(obj["created_at"], "created_at"),
            source=_str(obj["source"], "source"),
            started_at=_optional(obj, "started_at", _time),
            completed_at=_optional(obj, "completed_at", _time),
            run_attempt=_optional(obj, "run_attempt", _int),
            runner_name=_optional(obj, "runner_name", _str),
            conclusion=_optional(obj, "conclusion", _str),
            run_id=_optional(obj, "run_id", _int),
            department=_optional(obj, "department", _str),
            group=_optional(obj, "group", _str),
        )


def _check(r: JobRecord) -> None:
    """The rules a record obeys however it was made (reader, exporter, importer, generator)."""
    if isinstance(r.id, bool) or not isinstance(r.id, int) or r.id <= 0:
        raise RecordError(f"id must be a positive integer, got {r.id!r}")
    if not isinstance(r.repository, str) or not _REPO.match(r.repository):
        raise RecordError(f"repository must look like 'owner/name', got {r.repository!r}")
    if r.source not in SOURCES:
        raise RecordError(f"source must be one of {', '.join(sorted(SOURCES))}, got {r.source!r}")
    if not r.labels and r.group is None:
        raise RecordError("labels is empty and no group says where the job was routed")
    if r.run_attempt is not None and r.run_attempt < 1:
        raise RecordError(f"run_attempt must be at least 1, got {r.run_attempt}")
    if r.run_id is not None and r.run_id <= 0:
        raise RecordError(f"run_id must be positive, got {r.run_id}")
    if r.conclusion is not None and r.conclusion not in CONCLUSIONS:
        raise RecordError(f"conclusion {r.conclusion!r} is not one of GitHub's ({', '.join(sorted(CONCLUSIONS))})")
    if r.conclusion is not None and r.completed_at is None:
        raise RecordError("a conclusion without completed_at")
    if r.started_at is not None and r.started_at < r.created_at - CLOCK_SKEW:
        raise RecordError(f"started_at is {_ago(r.created_at - r.started_at)} before created_at")
    if r.completed_at is not None:
        first = r.started_at or r.created_at
        if r.completed_at < first - CLOCK_SKEW:
            raise RecordError(
                f"completed_at is {_ago(first - r.completed_at)} before {'started_at' if r.started_at else 'created_at'}"
            )


def _ago(delta: timedelta) -> str:
    return f"{delta.total_seconds():.0f}s"


def _optional(obj: Mapping[str, Any], key: str, parse: Callable[[Any, str], T]) -> T | None:
    value = obj.get(key)
    return None if value is None else parse(value, key)


def _int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RecordError(f"{key} must be an integer, got {value!r}")
    return value


def _str(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise RecordError(f"{key} must be a non-empty string, got {value!r}")
    return value


def _time(value: Any, key: str) -> datetime:
    if not isinstance(value, str):
        raise RecordError(f"{key} must be an ISO 8601 time string, got {value!r}")
    try:
        return parse_time(value)
    except ValueError as exc:
        raise RecordError(f"{key}: {exc}") from None


def parse_time(value: str) -> datetime:
    """An ISO 8601 time with a zone (GitHub writes ...Z) as an aware UTC datetime."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    except ValueError:
        raise ValueError(f"not an ISO 8601 time: {value!r}") from None
    if parsed.tzinfo is None:
        raise ValueError(f"time without a zone (add Z for UTC): {value!r}")
    return parsed.astimezone(UTC)


def format_time(value: datetime | None) -> str | None:
    if value is None:
        return None
    value = value.astimezone(UTC)
    spec = "milliseconds" if value.microsecond else "seconds"
    return value.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


# ---------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class LineError:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass
class ReadReport:
    """What a file held: the good records, and every bad line with its reason."""

    path: str
    records: list[JobRecord] = field(default_factory=list)
    errors: list[LineError] = field(default_factory=list)
    blank_lines: int = 0

    @property
    def lines(self) -> int:
        return len(self.records) + len(self.errors) + self.blank_lines

    def summary(self) -> str:
        sources = Counter(r.source for r in self.records)
        mix = ", ".join(f"{n} {s}" for s, n in sorted(sources.items())) or "none"
        text = f"{self.path}: {len(self.records)} jobs ({mix}), {len(self.errors)} bad line(s)"
        return text + (f", {self.blank_lines} blank" if self.blank_lines else "")

    def error_lines(self, limit: int = MAX_SHOWN_ERRORS) -> list[str]:
        shown = [f"{self.path}: {error}" for error in self.errors[:limit]]
        if len(self.errors) > limit:
            shown.append(f"{self.path}: ... and {len(self.errors) - limit} more bad line(s)")
        return shown


def parse_lines(lines: Iterable[str], path: str = "<history>") -> ReadReport:
    """Parse history lines, keeping every good record and a LineError for every bad one."""
    report = ReadReport(path)
    first_line: dict[int, int] = {}
    number = 0
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            report.blank_lines += 1
            continue
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError):
            truncated = not text.endswith("\n")
            why = "truncated record (the file ends mid-line)" if truncated else "not valid JSON"
            report.errors.append(LineError(number, why))
            continue
        try:
            record = JobRecord.from_json(obj)
        except RecordError as exc:
            report.errors.append(LineError(number, str(exc)))
            continue
        if record.id in first_line:
            report.errors.append(LineError(number, f"job {record.id} again (first on line {first_line[record.id]})"))
            continue
        first_line[record.id] = number
        report.records.append(record)
    return report


def read_history(path: str | Path, *, skip_bad: bool = False) -> ReadReport:
    """Read a history file; HistoryError lists the bad lines unless `skip_bad` (they are still counted)."""
    try:
        with open(path, encoding="utf-8") as stream:
            report = parse_lines(stream, str(path))
    except OSError as exc:
        raise HistoryError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise HistoryError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    if report.errors and not skip_bad:
        details = "\n".join(report.error_lines())
        raise HistoryError(f"{report.summary()}; pass --skip-bad to go on without them\n{details}")
    return report


def write_records(stream: TextIO, records: Iterable[JobRecord]) -> int:
    count = 0
    for record in records:
        stream.write(record.to_line())
        count += 1
    return count


def iter_sorted(records: Iterable[JobRecord]) -> Iterator[JobRecord]:
    """Records in the order the simulator replays them: by queue time, then id."""
    return iter(sorted(records, key=lambda r: (r.created_at, r.id)))
