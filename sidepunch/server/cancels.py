"""CancelWatcher: acts on `sidepunch.api.cancel` requests for the jobs this worker process runs.

A cancel request is a key per jid (keys.cancel_request, set by the API with a TTL), so it reaches whichever host
runs the job. Once a second, while jobs run here, one MGET asks about the running jids; a request found is handed
to the pool (`stop_job`: interrupt a sync job, cancel an async one's task) and, once acted on, deleted. A job
fetched after its request was written is caught within a second of its start, since the request outlives the
search. Nothing is asked of Redis while the process is idle. Must not import the launcher.

Must not import: sidepunch.api or sidepunch.admin (core and client only).
"""
from __future__ import annotations

import logging
import threading
from typing import Callable

import redis

from ..core import keys
from .state import ChildContext

log = logging.getLogger("sidepunch.cancel")

POLL = 1.0


class CancelWatcher:
    def __init__(self, ctx: ChildContext, running: Callable[[], list[str]], stop_job: Callable[[str], bool],
                 poll: float = POLL) -> None:
        self.ctx = ctx
        self._running = running
        self._stop_job = stop_job
        self._poll = poll
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="cancel-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def _run(self) -> None:
        while not self._stopped.wait(self._poll):
            try:
                self.check()
            except redis.RedisError:
                pass  # an outage: the processors and the heartbeat log it; the requests wait in Redis
            except Exception:  # this thread must outlive any one failure
                log.exception("cancel watcher failed; trying again in a second")

    def check(self) -> int:
        """One look for requests about the running jids; returns how many were acted on."""
        jids = list(dict.fromkeys(self._running()))
        if not jids:
            return 0
        found = self.ctx.redis.mget([keys.cancel_request(jid) for jid in jids])
        acted = [jid for jid, request in zip(jids, found) if request is not None and self._stop_job(jid)]
        if acted:
            self.ctx.redis.delete(*(keys.cancel_request(jid) for jid in acted))
            for jid in acted:
                log.info("cancel requested for jid=%.100s: stopping it", jid)
        return len(acted)
