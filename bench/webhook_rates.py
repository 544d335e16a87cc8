"""Webhook latency at fixed rates (open loop): p50, p99, p99.9 and server CPU per request.

Each client process sends at fixed times (start + k / its share of the rate) and
measures latency from the time a request was *due*, not from when it went out:
a slow answer delays nothing but itself, and a request that could not go out on
time counts its wait, so queueing cannot hide (no coordinated omission). A client
keeps a pool of keep-alive connections (renewed every RECYCLE_AFTER requests, like
a load balancer's) and sends each request when due on an idle one, opening another
if all are busy, up to ``--connections``, as GitHub's deliveries do not wait for each
other. (With one connection per client, a client had one request in flight: 8
clients at 1,000/s left 8 ms per request, and once the Pub/Sub path's latency
reached that, the clients' own queue was what grew and was measured.)

The server is the real intake under the repository's gunicorn settings (bench/webhook.py
starts it) publishing to the embedded SQLite bus, or (``--bus pubsub``) with the real
Pub/Sub publisher to the gRPC Pub/Sub server of ``tests/harness/pubsub.py`` behind a TCP
proxy that holds every chunk it forwards, each way, for half of ``--added-latency`` (so
each RPC round trip takes that much longer, as in a real region).

Every party's CPU is counted, since all share the machine's cores: the server's is the
user+system time of gunicorn's master and workers over the measured window (from /proc),
divided by the requests answered; the clients' is their process time from their first
measured request to their last answer; the stand-in's is this bench process's (the Pub/Sub
server and its proxy run in its threads). Clients build and sign their requests before
the first is due and speak HTTP/1.1 on raw sockets, so that they take as little of the
server's CPU as they can.

    .venv/bin/python bench/webhook_rates.py [--rates 500,800,1000] [--duration 10] [--clients 8]
        [--bus sqlite|pubsub] [--added-latency 0.002] [--write-docs]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import resource
import selectors
import shlex
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.docs import DOCS, add_entry, heading  # noqa: E402
from bench.webhook import JOB_ID_MARK, _payloads, _start  # noqa: E402
from scaler.bus.sqlite import SqliteBus  # noqa: E402
from tests.harness.webhooks import ROUTES, SECRET, sign  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
RECYCLE_AFTER = 100  # requests per connection, like a load balancer recycling its backend connections


class DelayProxy:
    """A TCP proxy on loopback that delays every chunk by ``delay`` seconds in each direction, order kept."""

    def __init__(self, upstream: str, delay: float) -> None:
        self.host, port = upstream.rsplit(":", 1)
        self.upstream_port, self.delay = int(port), delay
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.port = 0

        async def serve() -> None:
            server = await asyncio.start_server(self._client, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            async with server:
                await server.serve_forever()

        threading.Thread(target=lambda: self.loop.run_until_complete(serve()), daemon=True).start()
        ready.wait(10)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        while chunk := await reader.read(65536):
            loop.call_later(self.delay, writer.write, chunk)  # same delay for all: order is kept
        loop.call_later(self.delay, writer.close)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.host, self.upstream_port)
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True)


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


def _requests(port: int, bodies: list[bytes], count: int) -> list[bytes]:
    """``count`` signed requests, each with a job id and delivery GUID of its own, as raw HTTP/1.1 bytes."""
    built = []
    for k in range(count):
        job_id = str(JOB_ID_MARK + os.getpid() * 10**6 + k).encode()
        body = bodies[k % len(bodies)].replace(str(JOB_ID_MARK).encode(), job_id)
        head = (
            f"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"X-GitHub-Event: workflow_job\r\nX-GitHub-Delivery: {uuid.uuid4()}\r\n"
            f"X-Hub-Signature-256: {sign(body, SECRET)}\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        built.append(head.encode() + body)
    return built


def _response_status(data: bytes | bytearray) -> int | None:
    """The status code of the response in ``data`` once it is complete (headers and Content-Length body)."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(data[:end]).decode("latin-1")
    length = next(
        (int(line.split(":", 1)[1]) for line in head.split("\r\n") if line.lower().startswith("content-length:")), 0
    )
    return int(head.split(" ", 2)[1]) if len(data) - (end + 4) >= length else None


class _Connections:
    """A client's keep-alive connections: idle ones to send on, busy ones with the due time of their request."""

    def __init__(self, port: int, limit: int) -> None:
        self.port, self.limit = port, limit
        self.selector = selectors.DefaultSelector()
        self.idle: list[socket.socket] = []
        self.busy: dict[socket.socket, tuple[float, bytearray]] = {}  # due time, response bytes so far
        self.uses: dict[socket.socket, int] = {}

    def can_send(self) -> bool:
        return bool(self.idle) or len(self.uses) < self.limit

    def send(self, request: bytes, due: float) -> None:
        connection = self.idle.pop() if self.idle else self._open()
        connection.sendall(request)
        self.busy[connection] = (due, bytearray())

    def _open(self) -> socket.socket:
        connection = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        self.selector.register(connection, selectors.EVENT_READ)
        self.uses[connection] = 0
        return connection

    def _close(self, connection: socket.socket) -> None:
        self.selector.unregister(connection)
        del self.uses[connection]
        connection.close()

    def answered(self, timeout: float) -> list[tuple[float, int]]:
        """(due time, status) of every response completed within ``timeout``."""
        done = []
        for key, _ in self.selector.select(timeout):
            connection: socket.socket = key.fileobj  # type: ignore[assignment]
            chunk = connection.recv(65536)
            if connection not in self.busy:  # an idle connection the server closed
                self.idle.remove(connection)
                self._close(connection)
                continue
            if not chunk:
                raise ConnectionError("the server closed the connection mid-response")
            due, data = self.busy[connection]
            data += chunk
            if (status := _response_status(data)) is None:
                continue
            del self.busy[connection]
            done.append((due, status))
            self.uses[connection] += 1
            if self.uses[connection] % RECYCLE_AFTER == 0:  # like a load balancer recycling its connections
                self._close(connection)
            else:
                self.idle.append(connection)
        return done


def _client(
    port: int,
    bodies: list[bytes],
    rate: float,
    start: float,
    until: float,
    measure_from: float,
    connections_limit: int,
    out: Any,
) -> None:
    """Send each request at its due time, on an idle connection or a new one, whatever is still in flight.

    Requests are built (signed) before the first is due, so that the client's own CPU, which shares
    the machine with the server, is only sending and reading.
    """
    requests = _requests(port, bodies, int((until - start) * rate) + 1)
    dues = [due for k in range(len(requests)) if (due := start + k / rate) < until]
    connections = _Connections(port, connections_limit)
    latencies: list[float] = []
    errors, k, cpu_from = 0, 0, None
    while k < len(dues) or connections.busy:
        now = time.perf_counter()
        if k < len(dues) and dues[k] <= now and connections.can_send():
            if cpu_from is None and dues[k] >= measure_from:
                cpu_from = time.process_time()
            connections.send(requests[k], dues[k])
            k += 1
            continue
        wait = dues[k] - now if k < len(dues) and connections.can_send() else 30.0
        for due, status in connections.answered(max(wait, 0.0)):
            if due >= measure_from:
                latencies.append(time.perf_counter() - due)
                errors += status != 202
    cpu = time.process_time() - cpu_from if cpu_from is not None else 0.0
    out.put((latencies, errors, cpu))


def measure(
    port: int, pid: int, rate: float, clients: int, duration: float, warmup: float, connections: int = 64
) -> dict[str, float]:
    bodies = _payloads()
    ctx = multiprocessing.get_context("fork")
    queue: Any = ctx.Queue()
    start = time.perf_counter() + 0.3
    measure_from, until = start + warmup, start + warmup + duration
    procs = [
        ctx.Process(
            target=_client,
            args=(port, bodies, rate / clients, start + i / rate, until, measure_from, connections, queue),
        )
        for i in range(clients)
    ]
    for p in procs:
        p.start()
    time.sleep(max(measure_from - time.perf_counter(), 0))
    cpu_before, stand_in_before = server_cpu(pid), _own_cpu()
    results = [queue.get(timeout=duration + warmup + 120) for _ in procs]
    cpu, stand_in = server_cpu(pid) - cpu_before, _own_cpu() - stand_in_before
    for p in procs:
        p.join()
    latencies = sorted(x for lat, _, _ in results for x in lat)
    q = statistics.quantiles(latencies, n=1000)
    answered = max(len(latencies), 1)
    return {
        "rate": rate,
        "requests": len(latencies),
        "p50_ms": q[499] * 1000,
        "p99_ms": q[989] * 1000,
        "p999_ms": q[998] * 1000,
        "errors": sum(e for _, e, _ in results),
        "cpu_ms_per_request": cpu / answered * 1000,
        "client_cpu_ms_per_request": sum(c for _, _, c in results) / answered * 1000,
        "stand_in_cpu_ms_per_request": stand_in / answered * 1000,
    }


def _own_cpu() -> float:
    """CPU seconds of this process: the Pub/Sub stand-in and its delay proxy run in its threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


INTRO = """`bench/webhook_rates.py` drives the real intake (gunicorn with the repository's settings, the embedded
SQLite bus) at fixed request rates with an open-loop client: each request is due at a fixed time and its latency
counts from then, so a slow answer that delays later requests shows in their latency. Server CPU per request is
the gunicorn master's and workers' user+system time over the measured window divided by the requests answered
(steadier than throughput on a shared machine). The clients' CPU (sending prepared, signed requests and reading
the answers) and the stand-in's (the bench process: the Pub/Sub server and its proxy) are listed beside it: all of
them share the same cores. With `--bus pubsub` the intake publishes with the real Pub/Sub client to the gRPC
Pub/Sub server of `tests/harness/pubsub.py` (in the bench's process) through a proxy adding latency to every
round trip. Entries without the client CPU column were measured with clients that signed each request
when it was due and spoke through `http.client`, taking several times more of the shared cores. Entries that
do not say "up to N connections each" had one connection per client process, so a client had one request in
flight: with 8 clients at 1,000/s a request taking over 8 ms made the clients' own queue grow, and that queue
was measured as latency."""


def bus_text(args: argparse.Namespace) -> str:
    if args.bus == "sqlite":
        return "SQLite bus"
    return f"Pub/Sub publisher, gRPC server with {args.added_latency * 1000:g} ms added to every round trip"


def markdown(rows: list[dict[str, float]], args: argparse.Namespace, command: str, date: str | None = None) -> str:
    table = "\n".join(
        f"| {r['rate']:.0f}/s | {r['requests']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['p999_ms']:.2f} | "
        f"{r['errors']:.0f} | {r['cpu_ms_per_request']:.2f} | {r['client_cpu_ms_per_request']:.2f} | "
        f"{r['stand_in_cpu_ms_per_request']:.2f} |"
        for r in rows
    )
    return f"""{heading(date or time.strftime("%Y-%m-%d"), command)}

{os.cpu_count()} cores; {args.clients} open-loop client processes, up to {args.connections} connections each; \
{args.duration:g} s measured after {args.warmup:g} s \
warm-up per rate; {bus_text(args)}.

| rate | requests | p50 ms | p99 ms | p99.9 ms | non-202 | server CPU ms/request | client CPU ms/request | \
stand-in CPU ms/request |
|---|---|---|---|---|---|---|---|---|
{table}
"""


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rates", default="500,800,1000", help="requests a second, comma-separated")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument(
        "--connections",
        type=int,
        default=64,
        help="most connections per client (a request due while all are busy waits)",
    )
    parser.add_argument("--bus", choices=("sqlite", "pubsub"), default="sqlite")
    parser.add_argument("--added-latency", type=float, default=0.002, help="seconds per Pub/Sub round trip")
    parser.add_argument("--write-docs", action="store_true", help="add a dated entry to docs/benchmarks.md")
    parser.add_argument("--docs", type=Path, default=DOCS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    rows = []
    emulator = None
    with tempfile.TemporaryDirectory(prefix="garo-bench-") as tmp:
        workdir = Path(tmp)
        (workdir / "routes.json").write_text(json.dumps(ROUTES))
        env = {
            "GARO_WEBHOOK_SECRET": SECRET,
            "GARO_ROUTES": str(workdir / "routes.json"),
            "GARO_BUS": f"sqlite://{workdir}/bus.db",
        }
        SqliteBus(workdir / "bus.db", subscription="data", filter={"department": "data"})
        if args.bus == "pubsub":
            from tests.harness.pubsub import PubSubEmulator

            emulator = PubSubEmulator()
            emulator.start()
            emulator.create_topic("jobs")
            emulator.create_subscription("data", "jobs", filter='attributes.department = "data"')
            proxy = DelayProxy(emulator.host, args.added_latency / 2)
            env["GARO_BUS"] = f"pubsub://{emulator.project}/jobs"
            env["PUBSUB_EMULATOR_HOST"] = f"127.0.0.1:{proxy.port}"
            env["PUBSUB_PROJECT_ID"] = emulator.project
        for rate in (float(r) for r in args.rates.split(",")):
            server, port = _start("scaler.webhook:create_app()", env, workdir)
            try:
                rows.append(measure(port, server.pid, rate, args.clients, args.duration, args.warmup, args.connections))
            finally:
                server.terminate()
                server.wait(30)
            print(rows[-1], flush=True)
    if emulator is not None:
        emulator.stop()
    given = list(sys.argv[1:] if argv is None else argv)
    shown = [a for i, a in enumerate(given) if a != "--docs" and (i == 0 or given[i - 1] != "--docs")]
    entry = markdown(rows, args, shlex.join([".venv/bin/python", "bench/webhook_rates.py", *shown]))
    print(entry)
    if args.write_docs:
        add_entry("Webhook at fixed rates", INTRO, entry, args.docs)
    return rows


if __name__ == "__main__":
    main()
