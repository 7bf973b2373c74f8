"""AsyncRunner: the asyncio event loop of one worker process, which runs its async jobs (`async def perform`).

Processor threads fetch every job; one whose class has an `async def perform` is handed here (`submit`), and the
thread goes back to fetching. At most --async-concurrency async jobs are in flight per process (a thread that
would pass the limit waits for a slot), whatever --threads is. Each job runs as a task on the loop, inside the
async middleware chain and its timeout (`asyncio.timeout`: the task is cancelled and the job is recorded as a
JobTimeout failure). The outcome is recorded by the recorder thread (outcomes.py, acknowledgements batched per
round trip), never on the loop, so no Redis round trip blocks the loop. The job stays in the working list of the
thread that fetched it until then; `units()` tells that thread's fetcher which of its jobs are out here.

Every entry ends exactly once: recorded (finished on the loop) or taken (at the stop deadline, for requeue; or
by the pool when it would not stop in time), whichever claims it first. Must not import the launcher or pool.

Must not import: sidepunch.api or sidepunch.admin (core and client only).
"""
from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import queue
import threading
import time
from typing import Any, Callable

from ..core.middleware import Outcome, Reschedule, run_async_chain
from .fetch import UnitOfWork
from .outcomes import Outcomes, PendingAcks, await_on_cancel, job_log
from .processor import BadJob, Taken, job_timeout
from .state import ChildContext

log = logging.getLogger("sidepunch.async")

RUNNING, FINISHED, TAKEN = "running", "finished", "taken"


class AsyncEntry:
    """One async job in flight."""

    def __init__(self, tid: str, unit: UnitOfWork, job: dict, instance: Any, started: float, timeout: float):
        self.tid, self.unit, self.job, self.instance = tid, unit, job, instance
        self.started, self.timeout = started, timeout
        self.deadline = started + timeout if timeout > 0 else None
        self.state = RUNNING
        self.stop_reason: str | None = None
        self.stop_at: float | None = None
        self.task: asyncio.Task | None = None
        self.result: Any = None
        self.failure: BaseException | None = None

    def taken(self) -> Taken:
        return Taken(self.unit, self.job, self.instance, self.started, self.timeout, self.stop_reason)


class AsyncRunner:
    """The loop thread, the recorder thread and the table of async jobs in flight (started on first use)."""

    def __init__(self, ctx: ChildContext, limit: int, ack_into: Callable[[Any, UnitOfWork], None],
                 chain: tuple[Any, ...] = ()) -> None:
        self.ctx = ctx
        self.limit = limit
        self.chain = chain  # the async middleware chain (the worker closes its instances at exit)
        self._outcomes = Outcomes(ctx)
        self._acks = PendingAcks(ctx.redis, ack_into)
        self._slots = threading.BoundedSemaphore(limit)
        self._entries: dict[str, AsyncEntry] = {}  # in flight: running, or finished and not recorded yet
        self._held: dict[str, AsyncEntry] = {}     # taken because they would not stop; recorded at exit
        self._finished: queue.SimpleQueue[AsyncEntry | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._kinds: dict[type, bool] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self._closing = threading.Event()
        self._threads: list[threading.Thread] = []

    def is_async(self, instance: Any) -> bool:
        kind = type(instance)
        found = self._kinds.get(kind)
        if found is None:
            found = self._kinds[kind] = inspect.iscoroutinefunction(getattr(kind, "perform", None))
        return found

    def submit(self, unit: UnitOfWork, job: dict, instance: Any, started: float, fetcher: Any) -> bool:
        """Start `job` on the loop; False (the caller keeps it) if the worker began stopping while it waited."""
        while not self._slots.acquire(timeout=0.2):
            if self.ctx.state.stopping:
                return False
        self._start_threads()
        entry = AsyncEntry(f"a{next(self._ids)}", unit, job, instance, started,
                           job_timeout(job, self.ctx.config.job_timeout))
        self._entries[entry.tid] = entry
        self.ctx.work.start(entry.tid, unit.queue, unit.payload)
        try:
            if self._closing.is_set():  # handed over after the stop deadline took the loop's jobs back
                raise RuntimeError("the event loop is closing")
            self.loop.call_soon_threadsafe(self._spawn, entry)  # type: ignore[union-attr]
        except RuntimeError:  # closed under us: the caller puts the job back with its prefetched ones
            self._forget(entry)
            return False
        return True

    def _start_threads(self) -> None:
        if self.loop is not None:
            return
        with self._lock:
            if self.loop is not None:
                return
            loop = asyncio.new_event_loop()
            for name, target in (("asyncio", lambda: self._run_loop(loop)), ("async-recorder", self._record)):
                self._threads.append(threading.Thread(target=target, name=name, daemon=True))
                self._threads[-1].start()
            self.loop = loop

    def _run_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            # Until close(): a job that stops the loop (loop.stop()), or whose callback raises SystemExit or
            # KeyboardInterrupt out of it, must not strand every other job on it.
            while not self._closing.is_set():
                try:
                    loop.run_forever()
                except BaseException:
                    log.exception("a callback raised out of the event loop; it runs on")
        finally:
            loop.close()

    def _spawn(self, entry: AsyncEntry) -> None:
        entry.task = asyncio.get_running_loop().create_task(self._run(entry), name=entry.tid)
        if entry.stop_reason is not None:  # cancelled before its task existed
            entry.task.cancel()

    async def _run(self, entry: AsyncEntry) -> None:
        timer = asyncio.timeout(entry.timeout if entry.timeout > 0 else None)
        try:
            async with timer:
                entry.result = await self._perform(entry)
        except BaseException as exc:  # CancelledError included: a cancel, a timeout or the stop deadline
            entry.failure = exc
        if entry.failure is not None and entry.stop_reason is None and timer.expired():
            entry.stop_reason = "timeout"
        with self._lock:
            if entry.state is not RUNNING:
                return  # taken (stop deadline, or it would not stop): whoever took it records it
            entry.state = FINISHED
        self._finished.put(entry)
        if entry.failure is not None and entry.stop_reason == "cancel":  # once recorded: a hook that hangs
            await await_on_cancel(entry.instance, self.ctx.config.interrupt_grace)  # cannot bring it back

    async def _perform(self, entry: AsyncEntry) -> Any:
        instance, job = entry.instance, entry.job
        args = job.get("args")
        if type(args) is not list:
            raise BadJob(f"job args must be a JSON array, got {type(args).__name__}")
        chain = self.chain
        if self.ctx.features:
            chain = self.ctx.features.for_run("around_perform_async", instance, job, chain)
        if chain:
            result = await run_async_chain(chain, instance, job, entry.unit.queue,
                                           lambda: instance.perform(*args))
            if isinstance(result, Reschedule):
                raise result
            if inspect.iscoroutine(result):  # `return call_next()` without await: the job never ran
                result.close()
                raise BadJob("an async middleware returned call_next() without awaiting it; the job did not run")
            return result
        return await instance.perform(*args)

    def _record(self) -> None:
        """The recorder thread: record finished jobs in batches (one acknowledgement round trip per batch)."""
        while True:
            batch = [self._finished.get()]
            while not self._finished.empty() and len(batch) < 1000:
                batch.append(self._finished.get())
            entries = [entry for entry in batch if entry is not None]
            for entry in entries:
                self._record_one(entry)
            try:
                self._outcomes.persist(self._acks.send_acks, "acknowledge")
            except BaseException:  # not an outage (persist rides those out): what is unacknowledged stays in its
                # working list and is put back when this process exits; the slots are freed all the same
                log.exception("could not acknowledge %d async job(s)", len(entries))
            for entry in entries:
                self._forget(entry)
            if len(entries) < len(batch):
                return  # close() asked: everything before its marker is recorded

    def _record_one(self, entry: AsyncEntry) -> None:
        """Record one job; one that cannot be recorded as it ended is a failure of its own (retry set), never
        a reason to leave the rest of its batch unacknowledged."""
        try:
            self._outcome(entry)
        except BaseException as exc:
            log.exception("could not record async job %.200s", entry.unit.payload.decode("utf-8", "replace"))
            try:
                self._outcomes.fail(entry.unit, entry.job, exc, entry.started, entry.instance)
            except BaseException:  # it stays in its working list and is put back when this process exits
                log.exception("could not record its failure either")

    def _outcome(self, entry: AsyncEntry) -> Outcome:
        return self._outcomes.ended(entry.unit, entry.job, entry.started, self._acks, entry.instance, entry.result,
                                    entry.failure, entry.stop_reason, entry.timeout)

    def _forget(self, entry: AsyncEntry) -> None:
        self.ctx.work.finish(entry.tid)
        self._entries.pop(entry.tid, None)
        self._slots.release()

    def cancel(self, jid: str) -> bool:
        """Cancel the running async job with this jid; False if none runs here."""
        for entry in list(self._entries.values()):
            if entry.job.get("jid") == jid and entry.state is RUNNING:
                if entry.stop_reason is None:
                    entry.stop_reason, entry.stop_at = "cancel", time.monotonic()
                    entry.instance._sidepunch_cancelled = True
                    self.loop.call_soon_threadsafe(_cancel_task, entry)  # type: ignore[union-attr]
                return True
        return False

    def jids(self) -> list[str]:
        return [e.job.get("jid") for e in list(self._entries.values()) if e.state is RUNNING]

    def units(self) -> list[UnitOfWork]:
        """The jobs out on the loop (their fetchers must not take them back after an outage)."""
        return [e.unit for e in [*self._entries.values(), *self._held.values()]]

    def would_not_stop(self, now: float, grace: float) -> list[Taken]:
        """Take the jobs that ran `grace` seconds past their deadline or their cancel and still run (a loop
        blocked by a sync call, or a task that swallows its cancellation); the caller records them."""
        taken = []
        for entry in list(self._entries.values()):
            since = entry.stop_at if entry.stop_reason == "cancel" else entry.deadline
            if since is not None and now >= since + grace and self._take(entry):
                entry.stop_reason = entry.stop_reason or "timeout"
                self._held[entry.tid] = entry
                self._forget(entry)  # its slot too: the loop may be blocked, the other jobs still need slots
                taken.append(entry.taken())
        return taken

    def _take(self, entry: AsyncEntry) -> bool:
        with self._lock:
            if entry.state is not RUNNING:
                return False
            entry.state = TAKEN
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(_cancel_task, entry)
        return True

    def wait(self, deadline: float) -> None:
        """Until every async job is recorded, or the deadline (monotonic)."""
        while self._entries and time.monotonic() < deadline:
            time.sleep(0.05)

    def take_running(self) -> list[UnitOfWork]:
        """At the stop deadline: take every job still running, to be requeued (the tasks are cancelled)."""
        units = []
        for entry in list(self._entries.values()):
            if self._take(entry):
                units.append(entry.unit)
                self._forget(entry)
        return units

    def close(self, timeout: float) -> None:
        """Record what finished, then end the recorder and the loop."""
        if self.loop is None:
            return
        self._finished.put(None)
        self._threads[1].join(timeout)
        self._closing.set()
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._threads[0].join(1.0)

    def dump(self) -> str:
        """The running async jobs with their task stacks, for the TTIN dump."""
        parts = []
        for entry in list(self._entries.values()):
            payload = entry.unit.payload.decode("utf-8", "replace")[:300]
            head = f"Async job {entry.tid} ({entry.state}) running {payload}"
            try:
                stack = _await_chain(entry.task) if entry.task is not None else "  (not started yet)\n"
            except Exception as exc:  # a task moving on under us: show what can be shown
                stack = f"  (stack unavailable: {exc})\n"
            parts.append(head + "\n" + stack)
        return "\n".join(parts)


def _await_chain(task: asyncio.Task) -> str:
    """Where a task waits: every coroutine of its await chain, outermost first (a task's own stack shows only
    the outermost one)."""
    lines = []
    awaited: Any = task.get_coro()
    while awaited is not None:
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
        if frame is None:
            break
        code = frame.f_code
        lines.append(f'  File "{code.co_filename}", line {frame.f_lineno}, in {code.co_name}\n')
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    return "".join(lines) or "  (finishing)\n"


def _cancel_task(entry: AsyncEntry) -> None:
    if entry.task is not None:
        entry.task.cancel()


__all__ = ["AsyncRunner", "AsyncEntry", "job_log"]
