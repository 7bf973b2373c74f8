"""The exporter process: serves /metrics and /healthz on the socket the master bound, from what the master feeds
it (feed.py) and what it reads from Redis (redisinfo.py).

It is a child of the master (forked with the master's signals blocked, see children.fork): it ignores the
signals the daemon's process group receives and exits when its feed pipe reaches end of file, which happens when
the master stops or dies. Threads are fine here: this process forks nothing. One thread reads the feed, one polls
Redis, and the HTTP server answers each request on a thread of its own (a slow client holds only its thread).

Must not import: sidepunch.api or sidepunch.admin (core and client only).
"""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, NoReturn

import setproctitle

from ..children import MASTER_SIGNALS, unblock_after_fork
from .collect import MetricsState, health, render
from .redisinfo import RedisPoller

log = logging.getLogger("sidepunch.metrics")

REQUEST_TIMEOUT = 10.0
MAX_CONNECTIONS = 32     # connections served at once; a new one beyond them ends the oldest
MAX_LINE = 4 * 2 ** 20   # a feed line longer than this is dropped (the master writes lines of a few KB)


def serve(config: Any, listener: socket.socket, feed: int) -> NoReturn:
    """The exporter process's body (called in the forked child); never returns."""
    for signum in MASTER_SIGNALS:
        signal.signal(signum, signal.SIG_DFL if signum in (signal.SIGCHLD, signal.SIGCONT) else signal.SIG_IGN)
    signal.set_wakeup_fd(-1)  # the master's wake-up pipe is not this process's
    unblock_after_fork()
    setproctitle.setproctitle(f"sidepunchd metrics exporter {config.metrics_bind}:{config.metrics_port}")
    code = 1
    try:
        state = MetricsState(time.monotonic(), config.healthz_redis_grace)
        poller = RedisPoller(config, state)
        threading.Thread(target=poller.run, name="redis-poller", daemon=True).start()
        server = _Server(listener, state, config)

        def open_doors() -> None:  # once the master's totals are in: a counter must never read lower
            threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
            log.info("metrics on http://%s:%d/metrics and /healthz (exporter pid %d)", config.metrics_bind,
                     config.metrics_port, os.getpid())
        read_feed(feed, state, open_doors)
        code = 0
    except BaseException:
        log.exception("the metrics exporter failed")
    finally:
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(code)


def read_feed(fd: int, state: MetricsState, on_first_state: Callable[[], None]) -> None:
    """Apply the master's lines to `state` until end of file. The master sends its totals, then a state line:
    `on_first_state` runs once that is applied (HTTP waits for it, so a new exporter never serves zeros)."""
    pending = b""
    waiting = True
    while True:
        data = os.read(fd, 65536)
        if not data:
            return
        *lines, pending = (pending + data).split(b"\n")
        if len(pending) > MAX_LINE:
            pending = b""
        for line in lines:
            kind, _, body = line.partition(b" ")
            state.apply(kind.decode("ascii", "replace"), body)
            if waiting and kind == b"state":
                waiting = False
                on_first_state()


class _Server(ThreadingHTTPServer):
    """An HTTP server on a socket that is already bound and listening (the master's)."""

    daemon_threads = True

    def __init__(self, listener: socket.socket, state: MetricsState, config: Any) -> None:
        self.address_family = listener.family
        super().__init__(listener.getsockname()[:2], _Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = listener
        self.server_name, self.server_port = str(listener.getsockname()[0]), listener.getsockname()[1]
        self.state = state
        self.config = config
        self._failed = False
        self._open: dict[socket.socket, float] = {}  # connection -> when it must be done (monotonic)
        self._open_lock = threading.Lock()
        threading.Thread(target=self._reap, name="http-deadlines", daemon=True).start()

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve a connection on its own thread, within REQUEST_TIMEOUT from accept to answer, and at most
        MAX_CONNECTIONS at once (the oldest is ended for a new one). The socket timeout alone bounds each read, not
        the request: a client trickling a byte at a time would hold its thread for ever, and threads without
        bound count against the process limit the master needs to fork workers."""
        with self._open_lock:
            if len(self._open) >= MAX_CONNECTIONS:
                oldest = min(self._open, key=self._open.__getitem__)
                _hang_up(oldest)
                del self._open[oldest]
            self._open[request] = time.monotonic() + REQUEST_TIMEOUT
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """socketserver's thread body; the connection leaves the open set however it ends."""
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._open_lock:
                self._open.pop(request, None)

    def _reap(self) -> None:
        """Once a second, end the connections past their deadline (their blocked read then returns)."""
        while True:
            time.sleep(1.0)
            now = time.monotonic()
            with self._open_lock:
                for request, deadline in list(self._open.items()):
                    if deadline <= now:
                        _hang_up(request)
                        del self._open[request]

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A request that raised. socketserver prints a traceback to stderr for each: a client that resets its
        connection (its doing, not a fault here) would flood the daemon's log. Connection errors are dropped;
        anything else is logged with its traceback once, then in one line at debug."""
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            return
        if not self._failed:
            self._failed = True
            log.exception("a metrics request from %s failed (later failures are logged at debug)", client_address)
        else:
            log.debug("a metrics request from %s failed: %r", client_address, exc)


def _hang_up(request: socket.socket) -> None:
    """Shut a connection down under its handler thread (its read returns end of file); it may be closed already."""
    try:
        request.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class _Handler(BaseHTTPRequestHandler):
    """GET /metrics (Prometheus text format) and GET /healthz (JSON); anything else is 404."""

    timeout = REQUEST_TIMEOUT
    server: _Server
    server_version = "sidepunchd"

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            body, kind = render(self.server.state, self.headers.get("Accept"))
            self._answer(200, kind, body)
        elif path == "/healthz":
            status, reason = health(self.server.state, time.monotonic(), self.server.config)
            self._answer(status, "application/json", json.dumps(reason).encode() + b"\n")
        else:
            self._answer(404, "text/plain; charset=utf-8", b"not found: try /metrics or /healthz\n")

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    def _answer(self, status: int, kind: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Requests are not logged (a scrape every few seconds would fill the log)."""
