"""The daemon's log handler: inline in the process that set it up (the master: no thread), through one writer
thread per forked process (workers), with nothing lost or reordered once flushed."""
from __future__ import annotations

import json
import logging
import os
import threading

import pytest

from sidepunch.server.config import build_config
from sidepunch.server.logs import BackgroundHandler, setup_logging


@pytest.fixture
def logfile(tmp_path):
    """setup_logging to a file (text or JSON); the root logger is put back afterwards."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    path = tmp_path / "sidepunchd.log"

    def setup(*flags: str):
        setup_logging(build_config(["--logfile", str(path), *flags], {}), {})
        return path
    yield setup
    for handler in root.handlers:
        handler.close()
    root.handlers[:], root.level = saved


def in_child(body) -> int:
    """Run body() in a forked child that leaves with os._exit, as a worker does; its exit status."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            body()
            code = 0
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def flush_all() -> None:
    for handler in logging.getLogger().handlers:
        handler.flush()


def test_the_process_that_set_logging_up_writes_inline_and_starts_no_thread(logfile):
    path = logfile()
    assert isinstance(logging.getLogger().handlers[0], BackgroundHandler)
    before = threading.active_count()
    logging.getLogger("sidepunch.test").warning("master line %d", 1)
    assert threading.active_count() == before
    assert "WARNING sidepunch.test: master line 1" in path.read_text()  # written without a flush


def test_a_forked_worker_loses_no_line_and_keeps_each_threads_order(logfile):
    path = logfile()
    threads, lines = 8, 500

    def body():
        log = logging.getLogger("sidepunch.job")

        def work(t: int) -> None:
            for i in range(lines):
                log.info("start t%d n%d", t, i)
        workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        flush_all()

    assert in_child(body) == 0
    written = [line.split()[-2:] for line in path.read_text().splitlines() if " start t" in line]
    assert len(written) == threads * lines
    for t in range(threads):
        mine = [int(n[1:]) for tag, n in written if tag == f"t{t}"]
        assert mine == list(range(lines))


def test_mutable_arguments_are_read_when_logged_not_when_written(logfile):
    path = logfile()

    def body():
        args = {"state": "before"}
        logging.getLogger("sidepunch.test").warning("args %s", args)
        args["state"] = "after"
        flush_all()

    assert in_child(body) == 0
    text = path.read_text()
    assert "'before'" in text and "'after'" not in text


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_traceback_logged_in_a_worker_is_written_whole(logfile, log_format):
    path = logfile("--log-format", log_format)

    def body():
        try:
            raise ValueError("boom \ud800")
        except ValueError:
            logging.getLogger("sidepunch.test").exception("job failed")
        flush_all()

    assert in_child(body) == 0
    text = path.read_text()
    assert "job failed" in text and "ValueError: boom" in text and "Logging error" not in text
    if log_format == "json":
        entry = json.loads(text.splitlines()[-1])
        assert "ValueError" in entry["exc"]


def test_a_grandchild_gets_its_own_writer(logfile):
    path = logfile()

    def body():
        logging.getLogger("sidepunch.test").warning("child line")
        assert in_child(lambda: (logging.getLogger("sidepunch.test").warning("grandchild line"), flush_all())) == 0
        flush_all()

    assert in_child(body) == 0
    text = path.read_text()
    assert "child line" in text and "grandchild line" in text


def test_a_per_job_line_reads_the_same_through_the_fast_path(tmp_path, monkeypatch):
    """job_line hands the worker's per-job lines to the writer thread as tuples; the text is what Logger.info
    writes, argument types that could change later are formatted at once, and a reconfigured logging (an app
    that replaced the root handlers) gets the line as any other."""
    import logging
    import os
    from types import SimpleNamespace

    from sidepunch.server import logs

    path = tmp_path / "daemon.log"
    config = SimpleNamespace(logfile=str(path), log_format="text", verbose=False, log_level="info")
    saved = logging.root.handlers[:], logging.root.level
    switches = logging._srcfile, logging.logThreads, logging.logMultiprocessing
    try:
        logs.setup_logging(config, {})
        sink = logging.root.handlers[0]
        sink._home = os.getpid() + 1  # act as a forked worker: lines go through the writer thread
        job = logging.getLogger(logs.JOB_LOGGER)
        mutable = {"jid": ["a", "list"]}
        logs.job_line(job, logging.INFO, "done %.200s jid=%.100s queue=%s %.3fs", "C", "abc", "default", 0.25)
        logs.job_line(job, logging.INFO, "start %.200s jid=%.100s queue=%s", "C", mutable["jid"], "q")
        mutable["jid"].append("changed")
        job.info("done %.200s jid=%.100s queue=%s %.3fs", "C", "abc", "default", 0.25)
        sink.flush()
        lines = path.read_text().splitlines()
        assert [line.split(" ", 3)[3] for line in lines] == [
            "INFO sidepunch.job: done C jid=abc queue=default 0.250s",
            "INFO sidepunch.job: start C jid=['a', 'list'] queue=q",
            "INFO sidepunch.job: done C jid=abc queue=default 0.250s"]
        assert all(line.split(" ", 3)[2] == str(os.getpid()) for line in lines)
        captured = []
        other = logging.Handler()
        other.emit = captured.append
        logging.root.handlers[:] = [other]  # an app reconfigured logging: the fast path steps aside
        logs.job_line(job, logging.INFO, "start %s", "X")
        assert [r.getMessage() for r in captured] == ["start X"]
    finally:
        logging.root.handlers[:], level = saved
        logging.root.setLevel(level)
        logging._srcfile, logging.logThreads, logging.logMultiprocessing = switches


JOB_LINE_CASES = [
    ("start %.200s jid=%.100s queue=%s", ("IncrJob", "c5d6c0f051bd2778cd2f5279", "default")),
    ("done %.200s jid=%.100s queue=%s %.3fs", ("IncrJob", "c5d6", "default", 0.0004999)),
    ("done %.200s jid=%.100s queue=%s %.3fs", ("Ünïcødé 日本 \u2028 \x00 \x7f", None, "q:\"'\\", 1e9)),
    ("start %.200s jid=%.100s queue=%s", ("lone \ud800 surrogate \udfff", "\udcff", "default")),
    ("start %.200s jid=%.100s queue=%s", ("A" * 5000, "j" * 500, "x" * 300)),
    ("start %.200s jid=%.100s queue=%s", ("multi\nline\r\nclass\n", "%s %d %%", "tab\there")),
    ("done %.200s jid=%.100s queue=%s %.3fs", ("emoji \U0001F600", True, "default", -0.0)),
    ("rate limited %.200s jid=%.100s queue=%s by %.200s, again in %.3fs", ("C", 7, "q", b"bytes\xff", 3.25)),
    ("preformatted 100% {not} %s-free", ()),
]
JOB_LINE_TIMES = [1796163265.0, 1796163265.9999999, 1796163265.123456789, 0.0005, 4102444800.5]


@pytest.mark.parametrize("formatter", ["text", "json", "journal"])
def test_a_per_job_line_made_without_its_record_reads_byte_for_byte_as_through_the_record(formatter):
    """The writer thread formats a per-job line tuple straight to text when the target has one of the daemon's
    formatters and no filters; the text is the one the LogRecord path gives, for odd characters, lone
    surrogates, newlines, long class names, any level and any moment of a second."""
    from sidepunch.server import logformats, logs

    target = logging.StreamHandler()
    target.setFormatter({"text": logs.TextFormatter, "json": logs.JsonFormatter,
                         "journal": logs.JournalFormatter}[formatter]())
    fast = logformats.job_texts(target)
    assert fast is not None
    compared = 0
    for created in JOB_LINE_TIMES:
        for level in (logging.INFO, logging.WARNING, logging.DEBUG, logging.ERROR, 25):
            for msg, args in JOB_LINE_CASES:
                item = (created, "sidepunch.job", level, msg, args)
                by_record = target.format(logs._record(*item)) + target.terminator
                assert fast(*item) == by_record
                compared += 1
    assert compared == len(JOB_LINE_TIMES) * 5 * len(JOB_LINE_CASES)


def test_the_record_is_still_built_where_something_else_looks_at_it():
    """A filter on the target, a formatter that is not one of ours (even a subclass), a handler class of its
    own, or records without the process id: no text without the record."""
    from sidepunch.server import logformats, logs

    class Mine(logs.TextFormatter):
        def format(self, record):
            return "mine " + super().format(record)

    class OwnHandler(logging.StreamHandler):
        pass

    filtered = logging.StreamHandler()
    filtered.setFormatter(logs.TextFormatter())
    filtered.addFilter(lambda record: True)
    subclassed = logging.StreamHandler()
    subclassed.setFormatter(Mine())
    plain = logging.StreamHandler()
    plain.setFormatter(logging.Formatter())
    own = OwnHandler()
    own.setFormatter(logs.JsonFormatter())
    for target in (filtered, subclassed, plain, own, logging.StreamHandler()):
        assert logformats.job_texts(target) is None
    journal = logging.StreamHandler()
    journal.setFormatter(logs.JournalFormatter())
    assert logformats.job_texts(journal) is not None
    saved = logging.logProcesses
    try:
        logging.logProcesses = False
        assert logformats.job_texts(journal) is None
    finally:
        logging.logProcesses = saved


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_worker_writes_the_same_bytes_with_and_without_records(tmp_path, log_format):
    """End to end through the writer thread: the same per-job lines (and an ordinary record between them)
    written by a handler whose target takes the text path, and by one whose target has a filter (which lets
    everything through, and makes the writer build each record), give the same file, but for the pid."""
    from types import SimpleNamespace

    from sidepunch.server import logformats, logs

    saved = logging.root.handlers[:], logging.root.level
    switches = logging._srcfile, logging.logThreads, logging.logMultiprocessing
    texts = []
    try:
        for filtered in (False, True):
            path = tmp_path / f"daemon-{filtered}.log"
            config = SimpleNamespace(logfile=str(path), log_format=log_format, verbose=False, log_level="info")
            logs.setup_logging(config, {})
            sink = logging.root.handlers[0]
            if filtered:
                sink.target.addFilter(lambda record: True)
            sink._home = os.getpid() + 1  # act as a forked worker: lines go through the writer thread
            job = logging.getLogger(logs.JOB_LOGGER)
            for created in JOB_LINE_TIMES:
                for msg, args in JOB_LINE_CASES:
                    sink._writer_queue().put((created, job.name, logging.INFO, msg, args))
                record = job.makeRecord(job.name, logging.WARNING, "", 0, "plain %s", ("Ünï \ud800",), None)
                record.created, record.msecs = created, 500.0
                sink.handle(record)
            sink.flush()
            sink.close()
            texts.append(path.read_bytes())
        assert texts[0] == texts[1]
        assert texts[0].count(b"\n") >= len(JOB_LINE_TIMES) * (len(JOB_LINE_CASES) + 1)
        assert b"\\ud800" in texts[0]  # the file's errors="backslashreplace", not a logging error
    finally:
        logging.root.handlers[:], level = saved
        logging.root.setLevel(level)
        logging._srcfile, logging.logThreads, logging.logMultiprocessing = switches
