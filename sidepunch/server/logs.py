"""Logging setup for the daemon: text or JSON lines, to stderr or a file; no timestamps under journald.

In a worker process the per-job lines cost the processor threads only a queue put: a `BackgroundHandler`
hands each record to one writer thread per process, which formats it and writes whatever has piled up with
one write and one flush. The process that set logging up (the master, which must never start a thread) keeps
writing inline. `flush()` waits until everything queued before it is written: the worker calls it before
os._exit, so no line is lost on a clean exit (a SIGKILLed worker may lose the last few milliseconds' lines).

Must not import: sidepunch.api or sidepunch.admin (core and client only).
"""
from __future__ import annotations

import faulthandler
import logging
import os
import queue
import sys
import threading
import time
import weakref
from typing import Any, Callable, Mapping

from .logformats import JournalFormatter, JsonFormatter, TextFormatter, job_texts

#: The logger of the per-job lines (`--log-jobs off` or a level above INFO silences them).
JOB_LOGGER = "sidepunch.job"
#: The writer thread wakes at most this often: each wake-up is one more thread asking for the GIL, so lines
#: are written in batches (and reach the log at most this much later).
WRITE_EVERY = 0.01
#: Longest a flush waits for the writer thread (a stuck stream must not hold a worker's exit for long).
FLUSH_WAIT = 5.0
#: Argument types a record may keep unformatted until the writer thread formats it: immutable, so the line
#: reads as it would have when logged. Anything else is formatted on the logging thread.
_DEFERRABLE = frozenset((str, int, float, bool, bytes, type(None)))


def _deferrable(record: logging.LogRecord) -> bool:
    """True if formatting the record later gives the same line (a dict argument is kept as the dict itself)."""
    args = record.args
    return type(record.msg) is str and (not args or type(args) is tuple and _immutable(args))


def _immutable(args: tuple) -> bool:
    return _DEFERRABLE.issuperset(map(type, args))


class BackgroundHandler(logging.Handler):
    """Writes through `target` (a StreamHandler or FileHandler); off the calling thread in any process but
    the one that built it. Order is kept: one queue and one writer per process."""

    def __init__(self, target: logging.StreamHandler) -> None:
        super().__init__()
        self.target = target
        self._home = os.getpid()
        self._pid = 0                                   # the process whose queue and writer exist
        # That queue while its writer runs in this process, else None: read without a getpid call (a syscall)
        # on every line; a forked child starts with None (the writer thread did not come along).
        self._live: queue.SimpleQueue[Any] | None = None
        os.register_at_fork(after_in_child=_forget_writer(weakref.ref(self)))
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()

    @property
    def stream(self) -> Any:
        """The target's stream (enable_faulthandler dumps stacks there)."""
        return self.target.stream

    def setFormatter(self, fmt: logging.Formatter | None) -> None:
        self.target.setFormatter(fmt)

    def handle(self, record: logging.LogRecord) -> bool:
        # No handler lock around emit: the queue is thread-safe, and the target takes its own lock.
        if not self.filter(record):
            return False
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        pending = self._writer_queue()
        if pending is None:
            self.target.handle(record)
        else:
            pending.put(self._prepared(record))

    def _writer_queue(self) -> queue.SimpleQueue[Any] | None:
        """This process's queue to its writer thread (started on first use); None in the process that set
        logging up (the master), which never starts a thread and writes inline."""
        live = self._live
        if live is not None:
            return live
        pid = os.getpid()
        if pid == self._home:
            return None
        if pid != self._pid:
            self._start_writer(pid)
        return self._queue

    def _prepared(self, record: logging.LogRecord) -> logging.LogRecord:
        """Freeze what could change before the writer formats it: mutable arguments, the traceback."""
        try:
            if not _deferrable(record):
                record.msg, record.args = record.getMessage(), None
            if record.exc_info and not record.exc_text:
                record.exc_text = (self.target.formatter or logging.Formatter()).formatException(record.exc_info)
                record.exc_info = None
        except Exception:
            self.handleError(record)
        return record

    def line(self, name: str, level: int, msg: str, args: tuple) -> None:
        """A per-job line as a plain tuple, its record built by the writer thread (see `job_line`)."""
        pending = self._live
        if pending is None:  # no writer started in this process yet, or this is the master
            pending = self._writer_queue()
        if pending is None:
            self.target.handle(_record(time.time(), name, level, msg, args))
            return
        if not _DEFERRABLE.issuperset(map(type, args)):  # formatted now: the writer must see the values as
            msg, args = msg % args, ()                      # they are at this moment
        pending.put((time.time(), name, level, msg, args))

    def _start_writer(self, pid: int) -> None:
        with self.lock:  # logging re-creates handler locks after a fork
            if self._pid != pid:
                self._queue = queue.SimpleQueue()
                threading.Thread(target=self._write_forever, args=(self._queue,), name="log-writer",
                                 daemon=True).start()
                self._pid = pid
                self._live = self._queue

    def _write_forever(self, pending: queue.SimpleQueue[Any]) -> None:
        while True:
            batch = [pending.get()]
            if not isinstance(batch[0], threading.Event):
                time.sleep(WRITE_EVERY)
            while True:
                try:
                    batch.append(pending.get_nowait())
                except queue.Empty:
                    break
            self._write(batch)

    def _write(self, batch: list[Any]) -> None:
        """Lines up to each flush marker in one write; then the marker's waiter is woken."""
        items: list[Any] = []
        for item in batch:
            if isinstance(item, threading.Event):
                self._write_items(items)
                items = []
                item.set()
            else:
                items.append(item)
        self._write_items(items)

    def _write_items(self, items: list[Any]) -> None:
        """Records and per-job line tuples, formatted and written with one write and one flush."""
        target = self.target
        try:
            text = self._text(items)
            if text:
                with target.lock:
                    target.stream.write(text)
                    target.flush()
        except Exception:  # one bad record (or a failed write): per record, so each gets its usual report
            for item in items:
                target.handle(_record(*item) if type(item) is tuple else item)

    def _text(self, items: list[Any]) -> str:
        target = self.target
        job_text = job_texts(target)
        parts = []
        for item in items:
            if type(item) is tuple:
                if job_text is not None:
                    parts.append(job_text(*item))
                    continue
                item = _record(*item)
            if target.filter(item):
                parts.append(target.format(item) + target.terminator)
        return "".join(parts)

    def flush(self) -> None:
        """Wait until every record queued so far in this process is written."""
        if self._pid == os.getpid():
            done = threading.Event()
            self._queue.put(done)
            done.wait(FLUSH_WAIT)
        self.target.flush()

    def close(self) -> None:
        self.flush()
        self.target.close()
        super().close()


def _forget_writer(handler: weakref.ref[BackgroundHandler]) -> Callable[[], None]:
    """Run in a forked child: its handler's writer thread stayed in the parent, so the child starts its own."""
    def forget() -> None:
        live = handler()
        if live is not None:
            live._live = None
    return forget


def _record(created: float, name: str, level: int, msg: str, args: tuple) -> logging.LogRecord:
    """The record of a per-job line, as `Logger.info` would have made it at `created`."""
    record = logging.LogRecord(name, level, "", 0, msg, args or None, None)
    record.created, record.msecs = created, (created - int(created)) * 1000
    record.relativeCreated = (created - logging._startTime) * 1000  # type: ignore[attr-defined]
    return record


def job_line(logger: logging.Logger, level: int, msg: str, *args: Any) -> None:
    """Log one per-job line ("start ...", "done ..."), the two lines a worker writes per job at INFO.

    In a daemon worker, where the daemon's BackgroundHandler (its `sidepunch_sink`, set by setup_logging) is still
    the only handler and the logger has none of its own, the line leaves the job's thread as a tuple and its
    record is built by the writer thread: a third of what a line cost the job's thread. Anywhere else (the
    embedded Manager, an app that reconfigured logging) it is logged as any line."""
    if not logger.isEnabledFor(level):
        return
    sink = getattr(logger, "sidepunch_sink", None)
    handlers = logging.root.handlers
    if sink is not None and len(handlers) == 1 and handlers[0] is sink and not logger.handlers \
            and not logger.filters:
        sink.line(logger.name, level, msg, args)
    else:
        logger.log(level, msg, *args)


def enable_faulthandler() -> None:
    """Dump every thread's stack to the log's stream on SIGABRT, SIGSEGV and the like."""
    stream = next((h.stream for h in logging.getLogger().handlers if hasattr(h, "stream")), sys.stderr)
    try:
        faulthandler.enable(file=stream, all_threads=True)
    except (ValueError, OSError, AttributeError):
        faulthandler.enable(all_threads=True)


def setup_logging(config: Any, environ: Mapping[str, str]) -> None:
    """Log to the configured file or stderr; ValueError (one line, naming --logfile) if the file cannot be
    opened for appending, so the daemon stops at start instead of with a traceback."""
    target = _file_handler(config.logfile) if config.logfile else logging.StreamHandler(sys.stderr)
    if config.log_format == "json":
        target.setFormatter(JsonFormatter())
    elif environ.get("JOURNAL_STREAM") and not config.logfile:
        target.setFormatter(JournalFormatter())
    else:
        target.setFormatter(TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [BackgroundHandler(target)]
    logging.getLogger(JOB_LOGGER).sidepunch_sink = root.handlers[0]  # type: ignore[attr-defined]
    root.setLevel(logging.DEBUG if config.verbose else getattr(logging, config.log_level.upper()))
    _skip_unused_record_fields()


def _skip_unused_record_fields() -> None:
    """The logging HOWTO's "Optimization" switches for what the daemon's formats never show: the caller's
    file, line and function (a walk up the stack for every line), the thread name and the multiprocessing
    process name. At INFO a worker logs two lines per job, and these were a tenth of their cost. Only the daemon
    sets them, when it sets up its own logging; the embedded Manager leaves the host application's logging
    alone."""
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logMultiprocessing = False


def _file_handler(path: str) -> logging.StreamHandler:
    try:
        # Job data may hold lone surrogates (JSON "\\ud800"); a strict encoder would turn each such line into
        # a "--- Logging error ---" traceback.
        return logging.FileHandler(path, encoding="utf-8", errors="backslashreplace")
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise ValueError(f"--logfile: cannot write {path!r}: {getattr(exc, 'strerror', None) or exc}") from None
