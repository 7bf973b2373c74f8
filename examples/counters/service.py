"""The counters service: named integer counters held in memory behind a small JSON HTTP API.

It plays the slow third-party API that a web app should not call while a user waits: counters.jobs calls it
from sidepunchd's workers instead. Standard library only; the counts live as long as the process.

    GET  /counters                   -> {"apples": 3, "pears": -1}
    GET  /counters/<name>            -> {"name": "apples", "value": 3}; 404 if it was never changed
    POST /counters/<name>/increment  body {"by": n}, optional, n a whole number >= 1 (default 1)
    POST /counters/<name>/decrement  -> {"name": "apples", "value": 2}

Errors are JSON as well, {"error": "..."}: 400 for a body that is not JSON or a bad "by", 404 for an unknown
route or counter, 405 (with Allow) for a known route and the wrong method, 413 for an oversized body.

A POST with an Idempotency-Key header that was already applied gets the first answer and changes nothing:
jobs are delivered at least once, so a job that is retried after its change landed must not count twice.

    python -m counters.service --port 8000 [--host 127.0.0.1] [--delay 0.05]

SIGTERM or SIGINT stops it cleanly.
"""
from __future__ import annotations

import argparse
import json
import signal
import threading
import time
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Sequence
from urllib.parse import unquote, urlsplit

MAX_BODY = 64 * 1024
#: Idempotency keys remembered; a retry comes within minutes, long before this many newer changes.
REMEMBER_KEYS = 100_000
#: Which method each route answers.
METHODS = {"list": "GET", "show": "GET", "increment": "POST", "decrement": "POST"}


class CounterStore:
    """The counters and the idempotency keys already applied, under one lock (requests run in threads)."""

    def __init__(self, remember: int = REMEMBER_KEYS) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, int] = {}
        self._applied: OrderedDict[str, int] = OrderedDict()
        self._remember = remember

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._values)

    def get(self, name: str) -> int | None:
        with self._lock:
            return self._values.get(name)

    def add(self, name: str, delta: int, key: str | None = None) -> int:
        """Apply `delta` unless `key` was applied before; returns the value the first application produced."""
        with self._lock:
            if key is not None and key in self._applied:
                return self._applied[key]
            value = self._values.get(name, 0) + delta
            self._values[name] = value
            if key is not None:
                self._applied[key] = value
                if len(self._applied) > self._remember:
                    self._applied.popitem(last=False)
            return value


def route(path: str) -> tuple[str, str | None] | None:
    """("list", None), ("show", name), ("increment" or "decrement", name), or None for an unknown path."""
    parts = [unquote(part) for part in urlsplit(path).path.strip("/").split("/")]
    if parts[0] != "counters":
        return None
    if len(parts) == 1:
        return "list", None
    if not parts[1]:
        return None
    if len(parts) == 2:
        return "show", parts[1]
    if len(parts) == 3 and parts[2] in ("increment", "decrement"):
        return parts[2], parts[1]
    return None


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def parse_by(body: bytes) -> int:
    """The "by" of a POST body; an empty body means 1."""
    if not body.strip():
        return 1
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(400, f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest(400, 'the body must be a JSON object such as {"by": 2}')
    by = data.get("by", 1)
    # bool is an int in Python, but `true` is not a count.
    if type(by) is not int or by < 1:
        raise BadRequest(400, f'"by" must be a whole number of at least 1, got {json.dumps(by)}')
    return by


class CountersHandler(BaseHTTPRequestHandler):
    server: "CountersServer"

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _handle(self, method: str) -> None:
        found = route(self.path)
        if found is None:
            return self._reply(404, {"error": f"no route for {method} {self.path}"})
        action, name = found
        if METHODS[action] != method:
            return self._reply(405, {"error": f"{self.path} accepts {METHODS[action]}, not {method}"},
                               allow=METHODS[action])
        try:
            status, payload = self._dispatch(action, name)
        except BadRequest as exc:
            status, payload = exc.status, {"error": str(exc)}
        self._reply(status, payload)

    def _dispatch(self, action: str, name: str | None) -> tuple[int, Any]:
        store = self.server.store
        if action == "list":
            return 200, store.snapshot()
        assert name is not None
        if action == "show":
            value = store.get(name)
            if value is None:
                return 404, {"error": f"no counter named {name!r}"}
            return 200, {"name": name, "value": value}
        by = parse_by(self._body())
        time.sleep(self.server.delay)
        value = store.add(name, by if action == "increment" else -by, self.headers.get("Idempotency-Key"))
        return 200, {"name": name, "value": value}

    def _body(self) -> bytes:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise BadRequest(400, "Content-Length is not a number") from None
        if length > MAX_BODY:
            raise BadRequest(413, f"the body is over {MAX_BODY} bytes")
        return self.rfile.read(length) if length > 0 else b""

    def _reply(self, status: int, payload: Any, allow: str | None = None) -> None:
        body = json.dumps(payload).encode() + b"\n"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if allow:
            self.send_header("Allow", allow)
        self.end_headers()
        self.wfile.write(body)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # one line per request drowns the errors in thousands of demo requests; log_error still prints


class CountersServer(ThreadingHTTPServer):
    # Every worker thread of sidepunchd may connect at once; with the default backlog of 5 the kernel drops
    # the rest and their clients wait a second for the SYN to be retried.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], store: CounterStore | None = None, delay: float = 0.0) -> None:
        super().__init__(address, CountersHandler)
        self.store = store or CounterStore()
        self.delay = delay


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m counters.service", description="The counters JSON API.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--delay", type=float, default=0.0,
                        help="seconds each change takes, to play a slow upstream API")
    args = parser.parse_args(argv)
    server = CountersServer((args.host, args.port), delay=args.delay)
    # SIGTERM takes the same way out as Ctrl-C, so `finally` closes the socket either way.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    host, port = server.server_address[:2]
    print(f"counters service listening on http://{host}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
