"""Jobs that change a counter through the counters service: what `sidepunchd -r counters.jobs` loads.

A web request calls `Increment.perform_async("apples", 2)` and answers at once; a sidepunchd worker later
runs `perform`, which makes the slow HTTP call. Every failure raises (an error status, a refused connection,
a timeout), so the job goes to the retry set and Sidekiq's backoff applies, then the dead set after its last
retry. The service's URL is read from $COUNTERS_URL when a job runs, never at import: the daemon imports this
module before anything is running, and the same code serves every environment.
"""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Mapping
from urllib.parse import quote

import sidepunch

#: Seconds to wait for the service. Without a limit a hung service would hold a worker thread for good.
HTTP_TIMEOUT = 10.0


class CountersError(Exception):
    """The service answered with an error status."""

    def __init__(self, status: int, message: str, url: str) -> None:
        super().__init__(f"{url} answered {status}: {message}")
        self.status = status


def service_url(environ: Mapping[str, str] | None = None) -> str:
    url = (os.environ if environ is None else environ).get("COUNTERS_URL", "")
    if not url:
        raise RuntimeError("COUNTERS_URL is not set: give sidepunchd the service's URL, "
                           "e.g. COUNTERS_URL=http://127.0.0.1:8000")
    return url.rstrip("/")


def change(name: str, action: str, by: int, idempotency_key: str = "") -> int:
    """POST /counters/<name>/<action> {"by": by}; returns the counter's new value."""
    url = f"{service_url()}/counters/{quote(name, safe='')}/{action}"
    headers = {"Content-Type": "application/json"}
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    request = urllib.request.Request(url, data=json.dumps({"by": by}).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:
            return json.load(response)["value"]
    except urllib.error.HTTPError as exc:
        raise CountersError(exc.code, _error_message(exc), url) from None


def _error_message(exc: urllib.error.HTTPError) -> str:
    """The service's {"error": ...}, or the start of whatever else answered (a proxy's HTML page, say)."""
    body = exc.read(2048)
    try:
        return str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        return body.decode("utf-8", "replace").strip()[:200] or exc.reason


class Increment(sidepunch.Job):
    """Add `by` to the counter `name`."""

    def perform(self, name: str, by: int = 1) -> None:
        # The jid is the idempotency key: delivery is at least once (a worker killed mid-job has the job run
        # again), and the service applies each key once.
        change(name, "increment", by, self.jid)


class Decrement(sidepunch.Job):
    """Subtract `by` from the counter `name`."""

    def perform(self, name: str, by: int = 1) -> None:
        change(name, "decrement", by, self.jid)
