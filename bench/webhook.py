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
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
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

from scaler.routing import load_routing_table
from scaler.webhook import WebhookSettings, create_app as _create_app


class NullPublisher:
    def publish(self, data, attributes, ordering_key=""):
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
    out: multiprocessing.Queue,
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
    queue: multiprocessing.Queue = ctx.Queue()
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


READING = """How to read it. The paired figure (each round runs the three servers back to back) is the fairest; medians of req/s taken per server can come from rounds with different outside load.

Where the time goes (py-spy on a worker under this load, and each process's CPU time per request from /proc): gunicorn's gthread machinery (HTTP parsing, the thread-pool hand-off, re-polling keep-alive connections) costs about 0.6 ms of CPU per request, and that is nearly all the bare handler does. The intake adds about 0.2-0.3 ms: parsing the ~8 KB JSON body (~40 µs), the JSON log line (~20 µs), Flask/Werkzeug request and response objects, HMAC-SHA256 (~10 µs), routing, metrics. The SQLite publish adds about 0.5-0.6 ms per request under gunicorn: ~170 µs in SQLite itself (the 8 KB row, its UNIQUE delivery index, the fan-out row, the WAL frames), the rest threads trading the GIL around every SQLite call and the two workers taking turns on the bus lock (strace of a worker: the SQLite path adds about 25 system calls per request, some 8 WAL writes, 5 re-reads of pages the other worker changed, POSIX and flock locks, on top of the ~20 futex calls of gthread's GIL and thread-pool hand-offs that every server pays). That publish is what keeps the SQLite path below 80%: once both servers use both cores, a free intake would still leave it near 60% (bare ~0.9 ms of CPU per request including the client's share, against ~1.5 ms). The null publisher's ratio swings the most on this shared machine (from about 60% to above 100% across runs of the same code): its req/s are close to the bare handler's, so outside load decides which is ahead.

Before (same command, same day, as first measured): 627 vs 1169 req/s, 54% with the SQLite bus, 66% with the null publisher. What changed: (1) the clients renew their connections every 100 requests. Before, the four connections, opened at once, all landed on one gunicorn worker (the first to wake accepts them all) and stayed there, so every server ran on one core and rounds swung by tens of percent on where the connections happened to land; a load balancer's pool does not behave like that. This lowers the ratio rather than raising it: pinned to one core, both servers were limited by that core while the clients had the other; now the bare handler uses both cores and the intake's larger CPU per request shows in full, so today's figures are not comparable with the 54% above. (2) Group commit in the SQLite bus: correct and tested, but with 4 clients over 2 workers its batches average about 1.1 messages, so it barely shows here; it pays when publishers queue on the lock (bursts, another process writing). (3) WAL checkpoints run in a background thread, so no request pays a checkpoint's fsyncs (about 10 ms every ~1000 pages, while holding the lock every writer waits on). (4) Metric children cached, headers read from the WSGI environ, the log encoder built once: small: an A/B against the old code under the same client measured 2-5% less server CPU per request on the SQLite path, and nothing the noise would not hide on the null path.

Fairness: the same gunicorn settings (the product defaults, scaler/webhook/gunicorn_conf.py), client and payloads (GitHub's example workflow_job bodies, 7-11 KB) for all three servers. The bare handler does not call request.get_data(): gunicorn receives and drains every body from the socket anyway, so only the copy into Flask (~10 µs) is skipped, a gap left in the bare handler's favour. The client processes (about 0.3-0.4 ms of CPU per request) share the two cores with whichever server runs.

Settings: GARO_WEBHOOK_THREADS=1 or 2 cut the SQLite path's CPU per request by 10-15% (less GIL trading) but leave a worker one or two requests in flight; in production the publish is a Pub/Sub round trip of milliseconds, so the default stays 2 workers x 4 threads.
"""


def _write_docs(text: str) -> None:
    path = ROOT / "docs/benchmarks.md"
    current = path.read_text() if path.exists() else "# Benchmarks\n\nMeasured, not asserted in tests.\n"
    start = current.find("## Webhook intake")
    if start == -1:
        current = current.rstrip() + "\n\n" + text
    else:
        end = current.find("\n## ", start + 1)
        current = current[:start] + text.rstrip() + "\n\n" + (current[end + 1 :] if end != -1 else "")
    path.write_text(current.rstrip() + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
    parser.add_argument("--write-docs", action="store_true", help="replace the section in docs/benchmarks.md")
    args = parser.parse_args()
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
        servers = (
            ("garo intake (sqlite bus)", "scaler.webhook:create_app()", real_env),
            ("garo intake (null publisher)", "null_app:create_app()", real_env),
            ("bare Flask 202", "bare_app:create_app()", {}),
        )
        runs: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in servers}
        # The machine is shared: interleave the servers over several rounds and
        # keep each one's median round, so a burst of outside load hits all alike.
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
        rows = {name: sorted(r, key=lambda x: x["rps"])[len(r) // 2] for name, r in runs.items()}
        tap = SqliteBus(workdir / "bus.db", subscription="data", filter={"department": "data"})
        published = len(tap.pull(max_messages=10**6, timeout=0))
        costs = {mode: _publish_cost(workdir, mode) for mode in ("NORMAL", "FULL")}
    real, bare = rows["garo intake (sqlite bus)"], rows["bare Flask 202"]
    ratio = real["rps"] / bare["rps"]
    null_ratio = rows["garo intake (null publisher)"]["rps"] / bare["rps"]
    # Each round runs the servers back to back: its ratio is the fairest single comparison.
    paired = [
        r["rps"] / b["rps"] for r, b in zip(runs["garo intake (sqlite bus)"], runs["bare Flask 202"], strict=True)
    ]
    paired_null = [
        r["rps"] / b["rps"] for r, b in zip(runs["garo intake (null publisher)"], runs["bare Flask 202"], strict=True)
    ]
    per_round = ", ".join(f"{x:.0%}" for x in paired)
    print(
        f"ratio: {ratio:.0%} of the bare handler ({null_ratio:.0%} with the null publisher); "
        f"per round: {per_round} (median {statistics.median(paired):.0%}; null publisher "
        f"{statistics.median(paired_null):.0%}); "
        "SqliteBus.publish alone: "
        f"{costs['NORMAL']:.0f} us (synchronous=NORMAL), {costs['FULL']:.0f} us (FULL)"
    )
    if args.write_docs:
        command = f".venv/bin/python bench/webhook.py --duration {args.duration:g} --clients {args.clients}"
        command += f" --rounds {args.rounds}"
        if args.reconnect_every != 100:
            command += f" --reconnect-every {args.reconnect_every}"
        if args.synchronous != "NORMAL":
            command += f" --synchronous {args.synchronous}"
        table = "\n".join(
            f"| {n} | {r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['errors']} |" for n, r in rows.items()
        )
        _write_docs(
            f"## Webhook intake\n\n`{command} --write-docs` ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}, gunicorn gthread with the repository's settings, "
            f"{args.clients} client processes on the same machine, each with one keep-alive connection renewed "
            f"every {args.reconnect_every} requests, "
            f"{args.duration:g} s after {args.warmup:g} s warm-up, median of {args.rounds} interleaved rounds; "
            "the machine is shared with other work, so absolute figures vary by tens of percent).\n\n"
            "| server | req/s | p50 ms | p99 ms | non-202 |\n|---|---|---|---|---|\n"
            f"{table}\n\nThroughput ratio: **{ratio:.0%}** of the bare handler with the SQLite bus, "
            f"**{null_ratio:.0%}** with the null publisher (goal: at least 80%). Paired by round (each round runs "
            f"the servers back to back): {per_round}, median **{statistics.median(paired):.0%}** with the SQLite bus, "
            f"**{statistics.median(paired_null):.0%}** with the null publisher. "
            f"Every request of the real app was verified, routed and published: the bus holds {published} "
            f"messages for the subscribed department (the measured ones plus warm-up).\n\n"
            f"SqliteBus.publish alone (one transaction, fan-out to one subscription): "
            f"{costs['NORMAL']:.0f} µs with `synchronous=NORMAL` (the default), {costs['FULL']:.0f} µs with "
            "`synchronous=FULL` (an fsync per publish).\n\n"
            f"{READING}"
        )


if __name__ == "__main__":
    main()
