"""Webhook intake throughput: the real app vs a bare Flask handler, same gunicorn settings.

Starts gunicorn twice with the repository's settings (scaler/webhook/gunicorn_conf.py:
gthread, GARO_WEBHOOK_WORKERS workers): once the real app (signature, routing,
publish to the embedded SQLite bus) fed with GitHub's example ``workflow_job``
payloads (relabelled so that every one routes and publishes), once a bare
Flask handler that answers 202. The same pure-Python load generator (several
processes, one persistent connection each) drives both for a fixed time.
Then it times ``SqliteBus.publish`` alone, with and without fsync, to show
what the bus costs per request.

    .venv/bin/python bench/webhook.py [--duration 10] [--clients 4] [--rounds 3] [--write-docs]

With --write-docs it adds a dated entry to docs/benchmarks.md (bench/docs.py):
every figure in it comes from this run or its arguments.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from http.client import HTTPConnection
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.docs import DOCS, add_entry, heading  # noqa: E402
from scaler.bus.sqlite import SqliteBus  # noqa: E402
from tests.harness.webhooks import ROUTES, SECRET, load_examples, sign, to_bytes  # noqa: E402

BARE_APP = """
from flask import Flask


def create_app():
    app = Flask("bare")

    @app.post("/webhook")
    def webhook():
        return "", 202

    @app.get("/healthz")
    def healthz():
        return "ok"

    return app
"""

# The real app with a publisher that accepts everything at once: separates
# the cost of the intake (Flask, signature, JSON, routing) from the bus's.
NULL_APP = """
import os

from scaler.config.routing import load_routing_table
from scaler.webhook import WebhookSettings, create_app as _create_app


class NullPublisher:
    def publish(self, data, attributes):
        return "0"

    def ready(self):
        return True


def create_app():
    settings = WebhookSettings(
        secrets=(os.environ["GARO_WEBHOOK_SECRET"].encode(),),
        routes=load_routing_table(os.environ["GARO_ROUTES"]),
        publisher=NullPublisher(),
    )
    return _create_app(settings)
"""


# The webhook answers a repeat of the same event "duplicate" without publishing it, so every
# request carries a job id of its own (and its own signature) in place of this mark.
JOB_ID_MARK = 4444444444444


def _payloads() -> list[bytes]:
    """Every workflow_job example, labelled for a routed group of its organisation."""
    orgs = {d["org"].lower(): d["groups"][0]["labels"][-1] for d in ROUTES["departments"]}
    bodies = []
    for example in load_examples():
        if example.event == "workflow_job":
            payload = example.payload
            owner = (payload.get("organization") or {}).get("login") or payload["repository"]["full_name"].split("/")[0]
            payload["workflow_job"]["labels"] = ["self-hosted", orgs[owner.lower()]]
            payload["workflow_job"]["id"] = JOB_ID_MARK  # each request puts a job id of its own here
            bodies.append(to_bytes(payload))
    return bodies


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(app: str, env: dict[str, str], workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    env = {**os.environ, **env, "GARO_WEBHOOK_BIND": f"127.0.0.1:{port}"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    command = [sys.executable, "-m", "gunicorn", "-c", "python:scaler.webhook.gunicorn_conf"]
    command += ["--pythonpath", str(workdir), "--log-level", "warning", app]
    # The app logs one JSON line per request (INFO, the default): formatted, then discarded here.
    server = subprocess.Popen(command, env=env, cwd=workdir, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            HTTPConnection("127.0.0.1", port, timeout=1).request("GET", "/healthz")
            return server, port
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError(f"gunicorn for {app} did not start")


def _client(
    port: int,
    bodies: list[bytes],
    until: float,
    warmup_end: float,
    reconnect_every: int,
    out: multiprocessing.Queue[tuple[list[float], int]],
) -> None:
    connection = HTTPConnection("127.0.0.1", port, timeout=30)
    latencies: list[float] = []
    errors, i = 0, 0
    while (now := time.perf_counter()) < until:
        job_id = str(JOB_ID_MARK + os.getpid() * 10**6 + i).encode()
        body = bodies[i % len(bodies)].replace(str(JOB_ID_MARK).encode(), job_id)
        signature = sign(body, SECRET)
        now = time.perf_counter()  # the latency starts when the request is ready to send
        i += 1
        if reconnect_every and i % reconnect_every == 0:
            # Like a load balancer recycling its backend connections. Without it the
            # clients' few connections, opened at once, all land on one gunicorn worker
            # (the first to wake accepts them all) and stay there: one core serves.
            connection.close()
            connection = HTTPConnection("127.0.0.1", port, timeout=30)
        headers = {
            "Content-Type": "application/json",
            "X-GitHub-Event": "workflow_job",
            "X-GitHub-Delivery": str(uuid.uuid4()),
            "X-Hub-Signature-256": signature,
        }
        connection.request("POST", "/webhook", body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        done = time.perf_counter()
        if now >= warmup_end:
            latencies.append(done - now)
            errors += response.status != 202
    out.put((latencies, errors))


def _drive(port: int, clients: int, duration: float, warmup: float, reconnect_every: int = 100) -> dict[str, float]:
    bodies = _payloads()
    ctx = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue[tuple[list[float], int]] = ctx.Queue()
    start = time.perf_counter() + 0.2
    until, warmup_end = start + warmup + duration, start + warmup
    procs = [
        ctx.Process(target=_client, args=(port, bodies, until, warmup_end, reconnect_every, queue))
        for _ in range(clients)
    ]
    for p in procs:
        p.start()
    results = [queue.get(timeout=duration + warmup + 60) for _ in procs]
    for p in procs:
        p.join()
    latencies = sorted(x for lat, _ in results for x in lat)
    q = statistics.quantiles(latencies, n=100)
    return {
        "rps": len(latencies) / duration,
        "p50_ms": q[49] * 1000,
        "p99_ms": q[98] * 1000,
        "errors": sum(e for _, e in results),
        "requests": len(latencies),
    }


def _publish_cost(workdir: Path, synchronous: str, n: int = 2000) -> float:
    bus = SqliteBus(workdir / f"publish-{synchronous}.db", synchronous=synchronous)
    SqliteBus(workdir / f"publish-{synchronous}.db", subscription="data", filter={"department": "data"})
    body = _payloads()[0]
    attrs = {"department": "data", "group": "gpu", "action": "queued", "job_id": "1"}
    start = time.perf_counter()
    for i in range(n):
        bus.publish(body, {**attrs, "delivery": f"d-{i}"})
    return (time.perf_counter() - start) / n * 1e6


INTRO = """`bench/webhook.py` starts gunicorn with the repository's settings (scaler/webhook/gunicorn_conf.py) three
times: the real intake publishing to the embedded SQLite bus, the real intake with a publisher that accepts
everything at once (the intake's own cost), and a bare Flask handler that answers 202. The same client processes
(one keep-alive connection each, renewed every so many requests, like a load balancer's pool) send GitHub's
example `workflow_job` bodies, signed, to all three, in interleaved rounds so that outside load hits all alike.
The paired ratio (each round runs the servers back to back) is the fairest single comparison. The bare handler
does not read the body into Flask, a small gap left in its favour. The client processes share the machine's
cores with whichever server runs, and this machine is shared with other work, so absolute figures vary between
runs; compare entries by their ratios."""


SERVERS = ("garo intake (sqlite bus)", "garo intake (null publisher)", "bare Flask 202")


def summarize(runs: dict[str, list[dict[str, float]]], published: int, costs: dict[str, float]) -> dict[str, object]:
    """Everything an entry states, computed from the rounds (median round per server; ratios paired by round)."""
    rows = {name: sorted(r, key=lambda x: x["rps"])[len(r) // 2] for name, r in runs.items()}
    real, null, bare = (runs[name] for name in SERVERS)
    paired = [r["rps"] / b["rps"] for r, b in zip(real, bare, strict=True)]
    paired_null = [r["rps"] / b["rps"] for r, b in zip(null, bare, strict=True)]
    return {
        "rows": rows,
        "ratio": rows[SERVERS[0]]["rps"] / rows[SERVERS[2]]["rps"],
        "null_ratio": rows[SERVERS[1]]["rps"] / rows[SERVERS[2]]["rps"],
        "paired": paired,
        "paired_median": statistics.median(paired),
        "paired_null_median": statistics.median(paired_null),
        "published": published,
        "costs": costs,
    }


def markdown(s: dict[str, object], args: argparse.Namespace, command: str, date: str | None = None) -> str:
    """One dated entry; every figure in it is from ``s`` (this run) or ``args``."""
    rows: dict[str, dict[str, float]] = s["rows"]  # type: ignore[assignment]
    costs: dict[str, float] = s["costs"]  # type: ignore[assignment]
    paired: list[float] = s["paired"]  # type: ignore[assignment]
    table = "\n".join(
        f"| {n} | {r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['errors']:.0f} |" for n, r in rows.items()
    )
    return f"""{heading(date or time.strftime("%Y-%m-%d"), command)}

{os.cpu_count()} cores, Python {platform.python_version()}; client processes: {args.clients}, connections renewed \
every {args.reconnect_every} requests; {args.duration:g} s measured after {args.warmup:g} s warm-up; median of \
{args.rounds} interleaved rounds; SQLite bus `synchronous={args.synchronous}`.

| server | req/s | p50 ms | p99 ms | non-202 |
|---|---|---|---|---|
{table}

- Throughput against the bare handler: **{s["ratio"]:.0%}** with the SQLite bus, **{s["null_ratio"]:.0%}** with the \
null publisher. Paired by round: {", ".join(f"{x:.0%}" for x in paired)}; median \
**{s["paired_median"]:.0%}** with the SQLite bus, **{s["paired_null_median"]:.0%}** with the null publisher.
- The one subscription the bench reads (department `data`) holds {s["published"]} messages: the real app's \
requests routed to that department, warm-up included.
- `SqliteBus.publish` alone (one transaction, fan-out to one subscription): {costs["NORMAL"]:.0f} µs with \
`synchronous=NORMAL`, {costs["FULL"]:.0f} µs with `synchronous=FULL` (an fsync per publish).
"""


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is reported")
    parser.add_argument("--synchronous", default="NORMAL", help="SQLite bus durability: NORMAL or FULL")
    parser.add_argument(
        "--reconnect-every",
        type=int,
        default=100,
        help="requests per client connection (0: never reconnect; the connections then stay on one worker)",
    )
    parser.add_argument("--publish-samples", type=int, default=2000, help="publishes timed per SQLite mode")
    parser.add_argument("--write-docs", action="store_true", help="add a dated entry to docs/benchmarks.md")
    parser.add_argument("--docs", type=Path, default=DOCS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="garo-bench-") as tmp:
        workdir = Path(tmp)
        (workdir / "bare_app.py").write_text(BARE_APP)
        (workdir / "null_app.py").write_text(NULL_APP)
        (workdir / "routes.json").write_text(json.dumps(ROUTES))
        real_env = {
            "GARO_WEBHOOK_SECRET": SECRET,
            "GARO_ROUTES": str(workdir / "routes.json"),
            "GARO_BUS": f"sqlite://{workdir}/bus.db?synchronous={args.synchronous}",
        }
        SqliteBus(workdir / "bus.db", subscription="data", filter={"department": "data"})  # fan-out work too
        servers: tuple[tuple[str, str, dict[str, str]], ...] = (
            (SERVERS[0], "scaler.webhook:create_app()", real_env),
            (SERVERS[1], "null_app:create_app()", real_env),
            (SERVERS[2], "bare_app:create_app()", {}),
        )
        runs: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in servers}
        for round_ in range(args.rounds):
            for name, app, env in servers:
                server, port = _start(app, env, workdir)
                try:
                    result = _drive(port, args.clients, args.duration, args.warmup, args.reconnect_every)
                finally:
                    server.terminate()
                    server.wait(30)
                runs[name].append(result)
                print(
                    f"round {round_ + 1} {name:28s} {result['rps']:8.0f} req/s  p50 {result['p50_ms']:6.2f} ms  "
                    f"p99 {result['p99_ms']:6.2f} ms  non-202: {result['errors']}",
                    flush=True,
                )
        tap = SqliteBus(workdir / "bus.db", subscription="data", filter={"department": "data"})
        published = len(tap.pull(max_messages=10**6, timeout=0))
        costs = {mode: _publish_cost(workdir, mode, args.publish_samples) for mode in ("NORMAL", "FULL")}
    summary = summarize(runs, published, costs)
    given = list(sys.argv[1:] if argv is None else argv)
    shown = [a for i, a in enumerate(given) if a != "--docs" and (i == 0 or given[i - 1] != "--docs")]
    entry = markdown(summary, args, shlex.join([".venv/bin/python", "bench/webhook.py", *shown]))
    print(entry)
    if args.write_docs:
        add_entry("Webhook intake", INTRO, entry, args.docs)
    return summary


if __name__ == "__main__":
    main()
