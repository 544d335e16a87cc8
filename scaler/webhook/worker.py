"""The gunicorn worker for the webhook: gthread, but threads only ever see whole requests.

gunicorn's gthread worker hands a connection to a thread as soon as it is
readable, and the thread then reads the headers and body with blocking
reads. A client that sends half a request and stops (slowloris) holds that
thread until it gives up; with 2 workers x 4 threads (the default then), ten such connections
kept every genuine delivery waiting past GitHub's 10 s timeout.

This worker reads requests in the worker's event loop instead, without
blocking: bytes are buffered until the headers and the ``Content-Length``
body have arrived, and only then does a thread run the app on them. A slow
client costs a buffer and a poller slot, never a thread, and is dropped once
``GARO_WEBHOOK_READ_TIMEOUT`` seconds pass without a complete request. The
buffer is bounded: a body announced larger than ``GARO_WEBHOOK_MAX_BODY`` gets
413 and headers over 64 KiB get 431, answered from the event loop and the
connection closed, so no thread ever waits for the rest. Keep-alive connections
come back through the same gate for their next request; idle ones close after
gunicorn's ``keepalive``, and ``worker_connections`` bounds how many one
worker holds.

Not handled here: TLS (terminated in front of the service: Cloud Run, a load
balancer), and ``Expect: 100-continue`` (a client that waits for ``100
Continue`` before sending its body, as curl does for large bodies, sends it
after its own timeout, about a second; GitHub does not wait).
"""

from __future__ import annotations

import re
import selectors
import time
from functools import partial
from typing import Any

from gunicorn.workers.gthread import ThreadWorker

from scaler.webhook.settings import server_settings_from_env

MAX_HEAD = 64 * 1024  # request line plus headers; beyond that the parser refuses the request (400/431)
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*([0-9]{1,12})[ \t]*\r", re.IGNORECASE)
_CHUNKED = re.compile(rb"\r\ntransfer-encoding:", re.IGNORECASE)


WAIT, READY = "wait", "ready"
TOO_LARGE = {  # answered from the event loop: a thread would wait for bytes we will not read
    413: b'{"status": "too_large", "error": "Request Entity Too Large"}',
    431: b'{"status": "bad_request", "error": "Request Header Fields Too Large"}',
}


def request_state(buffer: bytes | bytearray, max_body: int) -> str | int:
    """WAIT for more bytes, READY for a thread, or the status (413/431) to refuse it with.

    READY once the headers and the whole ``Content-Length`` body are in (a
    chunked body: once its last chunk is). Pipelined requests: the first one
    is what counts.
    """
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return 431 if len(buffer) > MAX_HEAD else WAIT
    if end > MAX_HEAD:
        return 431
    head = bytes(buffer[: end + 2])
    if _CHUNKED.search(head):
        if len(buffer) - (end + 4) > max_body:
            return 413
        return READY if buffer.endswith(b"0\r\n\r\n") else WAIT
    match = _CONTENT_LENGTH.search(head)
    length = int(match.group(1)) if match else 0
    if length > max_body:
        return 413
    return READY if len(buffer) - (end + 4) >= length else WAIT


class RequestBufferingWorker(ThreadWorker):  # type: ignore[misc,unused-ignore]  # gunicorn: no type hints
    """gunicorn's ``gthread`` worker with requests read in the event loop (see the module docstring)."""

    _notified_at = float("-inf")

    def notify(self) -> None:
        """Tell the arbiter we are alive at most once a second.

        gunicorn touches its heartbeat file (a ``utime`` call) on every turn of
        the event loop, several per request; the arbiter only checks it against
        ``timeout`` (30 s).
        """
        now = time.monotonic()
        if now - self._notified_at >= 1.0:
            self._notified_at = now
            super().notify()

    def init_process(self) -> None:
        server = server_settings_from_env()
        self.read_timeout = server.read_timeout
        self.max_body = server.max_body_bytes
        super().init_process()

    def enqueue_req(self, conn: Any) -> None:
        """Every path to a thread (new, kept-alive and pipelined connections) passes this gate."""
        if getattr(conn, "garo_complete", False) or self.cfg.is_ssl:
            conn.garo_complete = False  # the next request on this connection waits at the gate again
            super().enqueue_req(conn)
            return
        buffered = conn.parser.unreader.take_buffered() if conn.parser is not None else b""
        conn.garo_buffer = bytearray(buffered or b"")
        conn.sock.setblocking(False)
        state = request_state(conn.garo_buffer, self.max_body)
        if state == WAIT:
            # A kept-alive connection comes here because the poller saw it readable: its
            # request is usually all there, so read it now rather than after another poll.
            data = self._read_now(conn)
            if data == b"":  # closed before sending a request
                self.nr_conns -= 1
                conn.close()
                return
            if data:
                conn.garo_buffer += data
                state = request_state(conn.garo_buffer, self.max_body)
        if state != WAIT:
            self._settle(conn, state)
            return
        conn.timeout = time.monotonic() + self.read_timeout  # gunicorn's murder_pending closes it then
        self.pending_conns.append(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._readable, conn))

    @staticmethod
    def _read_now(conn: Any) -> bytes | None:
        """What the socket holds now: None if nothing yet, b"" once the client closed it (or it broke)."""
        try:
            data: bytes = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            return b""
        return data

    def _readable(self, conn: Any, client: Any) -> None:
        data = self._read_now(conn)
        if data is None:
            return
        state: str | int = WAIT
        if data:
            conn.garo_buffer += data
            state = request_state(conn.garo_buffer, self.max_body)
            if state == WAIT:
                return
        self.poller.unregister(client)
        self.pending_conns.remove(conn)
        if not data:  # the client went away before finishing its request
            self.nr_conns -= 1
            conn.close()
            return
        self._settle(conn, state)

    def _settle(self, conn: Any, state: str | int) -> None:
        """A thread for a complete request; a short refusal and a closed connection for an oversized one."""
        if state == READY:
            self._hand_over(conn)
            return
        assert isinstance(state, int)
        body = TOO_LARGE[state]
        head = f"HTTP/1.1 {state} {'Content Too Large' if state == 413 else 'Request Header Fields Too Large'}\r\n"
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        try:
            conn.sock.send(head.encode() + body)  # a few hundred bytes: fits the socket buffer
        except OSError:
            pass  # the client is gone or not reading: closing is all that is left
        self.log.info("refused an oversized request from the event loop with %s", state)
        self.nr_conns -= 1
        conn.close()

    def _hand_over(self, conn: Any) -> None:
        """Give the buffered bytes to the connection's parser and the connection to a thread."""
        conn.init()  # no TLS here, so this only creates the HTTP parser (once per connection)
        conn.parser.unreader.unread(bytes(conn.garo_buffer))
        conn.garo_buffer = bytearray()
        conn.data_ready = True
        conn.garo_complete = True
        self.enqueue_req(conn)
