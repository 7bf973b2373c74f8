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
