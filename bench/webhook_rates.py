"""Webhook latency at fixed rates (open loop): p50, p99, p99.9 and server CPU per request.

Each client process sends at fixed times (start + k / its share of the rate) and
measures latency from the time a request was *due*, not from when it went out:
a slow answer delays the requests behind it and that delay counts, so queueing
cannot hide (no coordinated omission). The server is the real intake under the
repository's gunicorn settings (bench/webhook.py starts it) publishing to the
embedded SQLite bus. Server CPU is the user+system time of gunicorn's master and
workers over the measured window (from /proc), divided by the requests answered.

    .venv/bin/python bench/webhook_rates.py [--rates 500,800,1000] [--duration 10] [--clients 8] [--write-docs]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shlex
import statistics
import sys
import tempfile
import time
import uuid
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.docs import DOCS, add_entry, heading  # noqa: E402
from bench.webhook import JOB_ID_MARK, _payloads, _start  # noqa: E402
from scaler.bus.sqlite import SqliteBus  # noqa: E402
from tests.harness.webhooks import ROUTES, SECRET, sign  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def server_cpu(pid: int) -> float:
    """User+system CPU seconds of a process and its children (gunicorn's workers), from /proc."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry.name) == pid or int(fields[1]) == pid:  # fields[1] is the parent's pid
            total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


def _client(
    port: int, bodies: list[bytes], rate: float, start: float, until: float, measure_from: float, out: Any
) -> None:
    connection = HTTPConnection("127.0.0.1", port, timeout=30)
    latencies: list[float] = []
    errors, k = 0, 0
    while (due := start + k / rate) < until:
        k += 1
        job_id = str(JOB_ID_MARK + os.getpid() * 10**6 + k).encode()
        body = bodies[k % len(bodies)].replace(str(JOB_ID_MARK).encode(), job_id)
        headers = {
            "Content-Type": "application/json",
            "X-GitHub-Event": "workflow_job",
            "X-GitHub-Delivery": str(uuid.uuid4()),
            "X-Hub-Signature-256": sign(body, SECRET),
        }
        if (wait := due - time.perf_counter()) > 0:
            time.sleep(wait)
        if k % 100 == 0:  # like a load balancer recycling its connections (spreads them over workers)
            connection.close()
            connection = HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request("POST", "/webhook", body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        if due >= measure_from:
            latencies.append(time.perf_counter() - due)
            errors += response.status != 202
    out.put((latencies, errors))


def measure(port: int, pid: int, rate: float, clients: int, duration: float, warmup: float) -> dict[str, float]:
    bodies = _payloads()
    ctx = multiprocessing.get_context("fork")
    queue: Any = ctx.Queue()
    start = time.perf_counter() + 0.3
    measure_from, until = start + warmup, start + warmup + duration
    procs = [
        ctx.Process(target=_client, args=(port, bodies, rate / clients, start + i / rate, until, measure_from, queue))
        for i in range(clients)
    ]
    for p in procs:
        p.start()
    time.sleep(max(measure_from - time.perf_counter(), 0))
    cpu_before = server_cpu(pid)
    results = [queue.get(timeout=duration + warmup + 120) for _ in procs]
    cpu = server_cpu(pid) - cpu_before
    for p in procs:
        p.join()
    latencies = sorted(x for lat, _ in results for x in lat)
    q = statistics.quantiles(latencies, n=1000)
    return {
        "rate": rate,
        "requests": len(latencies),
        "p50_ms": q[499] * 1000,
        "p99_ms": q[989] * 1000,
        "p999_ms": q[998] * 1000,
        "errors": sum(e for _, e in results),
        "cpu_ms_per_request": cpu / max(len(latencies), 1) * 1000,
    }


INTRO = """`bench/webhook_rates.py` drives the real intake (gunicorn with the repository's settings, the embedded
SQLite bus) at fixed request rates with an open-loop client: each request is due at a fixed time and its latency
counts from then, so a slow answer that delays later requests shows in their latency. Server CPU per request is
the gunicorn master's and workers' user+system time over the measured window divided by the requests answered
(steadier than throughput on a shared machine). The Pub/Sub publisher path is not measured by this bench."""


def markdown(rows: list[dict[str, float]], args: argparse.Namespace, command: str, date: str | None = None) -> str:
    table = "\n".join(
        f"| {r['rate']:.0f}/s | {r['requests']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['p999_ms']:.2f} | "
        f"{r['errors']:.0f} | {r['cpu_ms_per_request']:.2f} |"
        for r in rows
    )
    return f"""{heading(date or time.strftime("%Y-%m-%d"), command)}

{os.cpu_count()} cores; {args.clients} client processes; {args.duration:g} s measured after {args.warmup:g} s \
warm-up per rate; SQLite bus.

| rate | requests | p50 ms | p99 ms | p99.9 ms | non-202 | server CPU ms per request |
|---|---|---|---|---|---|---|
{table}
"""


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rates", default="500,800,1000", help="requests a second, comma-separated")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--write-docs", action="store_true", help="add a dated entry to docs/benchmarks.md")
    parser.add_argument("--docs", type=Path, default=DOCS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="garo-bench-") as tmp:
        workdir = Path(tmp)
        (workdir / "routes.json").write_text(json.dumps(ROUTES))
        env = {
            "GARO_WEBHOOK_SECRET": SECRET,
            "GARO_ROUTES": str(workdir / "routes.json"),
            "GARO_BUS": f"sqlite://{workdir}/bus.db",
        }
        SqliteBus(workdir / "bus.db", subscription="data", filter={"department": "data"})
        for rate in (float(r) for r in args.rates.split(",")):
            server, port = _start("scaler.webhook:create_app()", env, workdir)
            try:
                rows.append(measure(port, server.pid, rate, args.clients, args.duration, args.warmup))
            finally:
                server.terminate()
                server.wait(30)
            print(rows[-1], flush=True)
    given = list(sys.argv[1:] if argv is None else argv)
    shown = [a for i, a in enumerate(given) if a != "--docs" and (i == 0 or given[i - 1] != "--docs")]
    entry = markdown(rows, args, shlex.join([".venv/bin/python", "bench/webhook_rates.py", *shown]))
    print(entry)
    if args.write_docs:
        add_entry("Webhook at fixed rates", INTRO, entry, args.docs)
    return rows


if __name__ == "__main__":
    main()
