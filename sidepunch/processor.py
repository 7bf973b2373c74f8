"""Processor: one thread that fetches a job, runs it, and records the outcome, over and over.

`process(unit)` is synchronous so tests can call it against a real Redis. Failures go to RetryPolicy;
a payload that cannot be parsed goes to the dead set untouched. A write that fails because Redis is down
is retried until it lands or the child's hard deadline passes (reliable fetch then still holds the job).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from .connection import OUTAGE_ERRORS
from .fetch import UnitOfWork
from .middleware import run_server_chain
from .payload import PayloadError, decode
from .state import ChildContext

log = logging.getLogger("sidepunch.processor")


class BadJob(Exception):
    """The payload parses but cannot be run as given (e.g. args is not a list)."""


class Processor:
    """Duties: fetch while the child is fetching, run each job, acknowledge or hand it to retry."""

    def __init__(self, index: int, ctx: ChildContext, fetcher: Any) -> None:
        self.index = index
        self.ctx = ctx
        self.fetcher = fetcher
        self.tid = f"p{index}"
        self.current: UnitOfWork | None = None
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self.run, name=f"processor-{self.index}", daemon=True)
        self.thread.start()

    def run(self) -> None:
        try:
            self._loop()
        except BaseException:
            log.exception("processor %d died; it will be replaced", self.index)
            if self.current is not None:
                self._persist(lambda: self.fetcher.requeue([self.current]), "requeue")

    def _loop(self) -> None:
        state, outage = self.ctx.state, self.ctx.outage
        while not state.stopping:
            if not state.fetching:
                self._persist(self.fetcher.flush, "acknowledge")
                state.wait_until_fetching(1.0)
                continue
            try:
                unit = self.fetcher.fetch()
                outage.ok()
            except OUTAGE_ERRORS as exc:
                time.sleep(outage.failed(exc))
                continue
            if unit is None:
                continue
            if not state.fetching:
                self._persist(lambda: self.fetcher.requeue([unit]), "requeue")
                continue
            self.current = unit
            self.process(unit)
            self.current = None
        self._persist(self.fetcher.flush, "acknowledge")

    def process(self, unit: UnitOfWork) -> str:
        """Run one job; returns "done", "retry", "dead" or "discarded"."""
        ctx = self.ctx
        ctx.work.start(self.tid, unit.queue, unit.payload)
        try:
            try:
                job = decode(unit.payload)
            except PayloadError as problem:
                self._persist(lambda: ctx.retry.kill_unparseable(unit, problem), "dead-set write")
                return "dead"
            instance = None
            try:
                instance = ctx.resolver.resolve(job["class"])()
                instance.jid = job.get("jid", "")
                args = job.get("args")
                if type(args) is not list:
                    raise BadJob(f"job args must be a JSON array, got {type(args).__name__}")
                if ctx.server_middleware:
                    run_server_chain(ctx.server_middleware, instance, job, unit.queue,
                                     lambda: instance.perform(*args))
                else:
                    instance.perform(*args)
            except Exception as exc:
                ctx.counters.record(failed=True)
                outcome = self._persist(lambda: ctx.retry.handle(unit, instance, exc), "retry-set write")
                log.warning("%s jid=%s queue=%s failed (%s: %s): %s", job.get("class"), job.get("jid"),
                            unit.queue, type(exc).__name__, exc, outcome or "not recorded")
                return outcome or "retry"
            ctx.counters.record(failed=False)
            self._persist(lambda: self.fetcher.ack(unit), "acknowledge")
            return "done"
        finally:
            ctx.work.finish(self.tid)

    def _persist(self, write: Callable[[], Any], what: str) -> Any:
        """Run a Redis write, retrying through outages until the hard deadline."""
        outage = self.ctx.outage
        while True:
            try:
                result = write()
                outage.ok()
                return result
            except OUTAGE_ERRORS as exc:
                pause = outage.failed(exc)
                if self.ctx.state.past_hard_deadline():
                    log.error("gave up on a %s at shutdown (%s); reliable fetch keeps the job in the "
                              "working list for recovery", what, exc)
                    return None
                time.sleep(pause)
