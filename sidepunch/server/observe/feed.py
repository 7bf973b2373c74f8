"""The master's side of the metrics: its listening socket, the totals it keeps, and the exporter it feeds.

The master stays single-threaded (it forks workers: a thread holding a lock at fork() would leave that lock
held in the child), so HTTP and the Redis queries live in an exporter *process* (exporter.py) that the master
forks once at start, and again if it dies. The master binds the socket itself, at start, so a port that is taken
is a usage error (exit status 2) and a restarted exporter serves the same socket. Tally lines heard from the
workers are added to the master's `Totals` (counters never go backwards when a worker or the exporter is
replaced) and forwarded; a new exporter is first sent the totals. About twice a second the master also sends a
"state" line: workers alive and heartbeating, jobs in flight, restarts by reason. Writes never block the master:
what the pipe cannot take waits in a buffer, and an exporter that stops reading is replaced.

Must not import: sidepunch.api or sidepunch.admin (core and client only); nor prometheus_client.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import signal
import socket
import time
from typing import Any, Callable, Iterable

from ..settings import ConfigError
from .tally import Totals

log = logging.getLogger("sidepunch.metrics")

STATE_EVERY = 0.5
MAX_BUFFER = 8 * 2 ** 20   # bytes waiting for the exporter before it is deemed stuck and replaced
RESTART_AFTER = 1.0        # seconds before an exporter that died is replaced; doubled while they die young
MAX_RESTART_AFTER = 60.0
STABLE_AFTER = 10.0        # an exporter that lived this long resets the delay
#: Why a worker was replaced: the `reason` label of sidepunch_worker_restarts_total (a bounded set).
REASONS = ("crash", "stuck", "memory", "max_jobs", "reload", "status_pipe", "retired", "exited")


def open_listener(config: Any) -> socket.socket:
    """The bound, listening socket for --metrics-bind/--metrics-port; ConfigError (exit 2) if it cannot be, or
    if prometheus_client is not installed (found, not imported: the master never loads it)."""
    if importlib.util.find_spec("prometheus_client") is None:
        raise ConfigError("--metrics-port needs prometheus_client: pip install 'sidepunch[prometheus]'")
    where = f"{config.metrics_bind!r}:{config.metrics_port}"
    if not config.metrics_bind or not config.metrics_bind.isprintable() or " " in config.metrics_bind:
        raise ConfigError(f"--metrics-bind: {where[:100]} is not a host name or address")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(config.metrics_bind, config.metrics_port,
                                                             type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
    except (OSError, UnicodeError, ValueError) as exc:
        raise ConfigError(f"--metrics-bind: cannot listen on {where[:100]}: {_reason(exc)}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(64)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"--metrics-port: cannot listen on {where[:100]}: {_reason(exc)}") from None
    return sock


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or " ".join(str(exc).split())[:200]


def restart_reason(retired_for: str, clean: bool) -> str:
    """The label for a worker that exited while the daemon was not stopping (master's `record.reason`)."""
    if not retired_for:
        return "exited" if clean else "crash"
    for prefix, label in (("stuck", "stuck"), ("RSS", "memory"), ("reload", "reload"),
                          ("it closed its status pipe", "status_pipe")):
        if retired_for.startswith(prefix):
            return label
    return "max_jobs" if "--max-jobs" in retired_for else "retired"


def serve_exporter(config: Any, listener: socket.socket, feed: int) -> None:
    """The exporter's body, imported in the forked child only: the master never loads prometheus_client."""
    from .exporter import serve
    serve(config, listener, feed)


class Observer:
    """What the master does for the metrics; `fork` is children.fork, `serve` runs the exporter (child side)."""

    def __init__(self, config: Any, listener: socket.socket, fork: Callable[[], int],
                 serve: Callable[[Any, socket.socket, int], None] = serve_exporter) -> None:
        self.config = config
        self.listener = listener
        self.totals = Totals()
        self.restarts = dict.fromkeys(REASONS, 0)
        self._fork, self._serve = fork, serve
        self.pid: int | None = None
        self._feed = -1
        self._buffer = bytearray()
        self._next_state = 0.0
        self._not_before = 0.0
        self._delay = RESTART_AFTER
        self._started = 0.0
        self.stopping = False

    @property
    def fds(self) -> tuple[int, ...]:
        """The master's descriptors a forked worker must close."""
        return (self.listener.fileno(),) + ((self._feed,) if self._feed >= 0 else ())

    def owns(self, pid: int) -> bool:
        return pid == self.pid

    def exited(self, status: int, stopping: bool) -> None:
        """The exporter was reaped: replaced on a later tick unless the daemon is stopping."""
        self.pid = None
        self._close_feed()
        lived = time.monotonic() - self._started
        self._delay = RESTART_AFTER if lived > STABLE_AFTER else min(self._delay * 2, MAX_RESTART_AFTER)
        self._not_before = time.monotonic() + self._delay
        if not stopping:
            how = (f"killed by {signal.Signals(os.WTERMSIG(status)).name}" if os.WIFSIGNALED(status)
                   else f"exited with status {os.WEXITSTATUS(status)}")
            log.error("the metrics exporter %s after %.0fs; starting a new one in %.0fs", how, lived, self._delay)

    def start(self, close: Iterable[int]) -> None:
        read_fd, write_fd = os.pipe()
        pid = self._fork()
        if pid == 0:
            try:
                os.close(write_fd)
                for fd in set(close) - {self.listener.fileno(), read_fd}:
                    _close(fd)
                self._serve(self.config, self.listener, read_fd)
            finally:
                os._exit(1)
        os.close(read_fd)
        os.set_blocking(write_fd, False)
        self.pid, self._feed, self._buffer = pid, write_fd, bytearray()
        for line in self.totals.lines():  # a new exporter starts from the master's totals...
            self._send(line)
        self._next_state = 0.0  # ...and the state, right after: it serves once both are in

    def heard(self, text: str) -> None:
        """A worker's tally line (the JSON after "tally "): added to the totals, forwarded."""
        if self.totals.add_line(text):
            self._send(b"tally " + text.encode() + b"\n")

    def restarted(self, retired_for: str, clean: bool) -> None:
        self.restarts[restart_reason(retired_for, clean)] += 1

    def tick(self, children: Iterable[Any], now: float, close: Iterable[int], stopping: bool = False) -> None:
        """Every loop of the master: restart a dead exporter (not at stop), send the state now and then, push
        the buffer. `close`: the master's descriptors a new exporter closes."""
        self.stopping = stopping
        if self.pid is None and now >= self._not_before and not stopping:
            self._started = now
            self.start(close)
        if now >= self._next_state:
            self._next_state = now + STATE_EVERY
            self._send(self._state_line(list(children), now))
        self._push()

    def _state_line(self, children: list[Any], now: float) -> bytes:
        live = [r for r in children if r.kill_at is None]
        beating = [r for r in live if r.ready and now - r.last_beat <= self.config.worker_timeout]
        state = {"workers": len(live), "beating": len(beating), "busy": sum(r.busy for r in live),
                 "restarts": self.restarts, "stopping": self.stopping}
        return b"state " + json.dumps(state, separators=(",", ":")).encode() + b"\n"

    def _send(self, line: bytes) -> None:
        if self._feed < 0:
            return
        self._buffer += line
        self._push()

    def _push(self) -> None:
        """Write what the pipe takes; an exporter that let MAX_BUFFER pile up is stuck: it is replaced."""
        if self._feed < 0 or not self._buffer:
            return
        try:
            written = os.write(self._feed, self._buffer)
            del self._buffer[:written]
        except BlockingIOError:
            pass
        except OSError:  # the exporter is gone; reap notices
            self._buffer.clear()
        if len(self._buffer) > MAX_BUFFER and self.pid is not None:
            log.error("the metrics exporter stopped reading; replacing it")
            _kill(self.pid)
            self._buffer.clear()

    def finish(self, wait: float = 5.0) -> None:
        """At the master's exit: close the feed (the exporter then exits) and reap it."""
        self._close_feed()
        pid, self.pid = self.pid, None
        if pid is None:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                if os.waitpid(pid, os.WNOHANG)[0]:
                    return
            except ChildProcessError:
                return
            time.sleep(0.05)
        _kill(pid)
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass

    def _close_feed(self) -> None:
        if self._feed >= 0:
            _close(self._feed)
            self._feed = -1
        self._buffer.clear()


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
