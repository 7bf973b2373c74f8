"""`--error-handler PATH` (hooks.py): called with (exception, job) after every failure of sync and async jobs;
a handler that raises is logged once per failure and never fatal; a path that does not load exits 2."""
from __future__ import annotations

import json
import logging

from conftest import wait_for
from sidepunch.server.hooks import call_error_handlers, failure_hook, load_error_handlers

import pytest


def test_every_failure_reaches_the_handlers_sync_and_async(daemon, r, client):
    d = daemon("-r", "metricsjobs", "-w", "1", "-c", "2", "--error-handler", "metricsjobs.report",
               "--error-handler", "metricsjobs.broken")
    client.push_bulk({"class": "metricsjobs.SyncFail", "args": [["s1"], ["s2"]]})
    client.push_bulk({"class": "metricsjobs.AsyncFail", "args": [["a1"]]})
    reported = wait_for(lambda: len(got := r.lrange("reported", 0, -1)) == 3 and got, timeout=30,
                        message="three reports")
    seen = sorted((e["class"], e["error"], e["message"]) for e in map(json.loads, reported))
    assert seen == [("metricsjobs.AsyncFail", "ValueError", "async failure a1"),
                    ("metricsjobs.SyncFail", "ValueError", "sync failure s1"),
                    ("metricsjobs.SyncFail", "ValueError", "sync failure s2")]
    assert wait_for(lambda: r.zcard("retry") == 3, message="every failure in the retry set")
    lines = wait_for(lambda: len(found := [line for line in d.log().splitlines()
                                           if "error handler(s) raised" in line]) == 3 and found)
    assert all("metricsjobs.broken: RuntimeError: the error handler itself is broken" in line for line in lines)
    assert "Traceback" not in d.log()
    client.push({"class": "metricsjobs.Counted", "args": []})
    wait_for(lambda: r.get("runs") == b"1", message="the daemon keeps running jobs")
    assert d.proc.poll() is None


def test_a_path_that_does_not_load_exits_2(daemon):
    d = daemon("-r", "metricsjobs", "-w", "1", "--error-handler", "metricsjobs.no_such_function")
    assert d.wait(30) == 2
    errors = [line for line in d.log().splitlines() if "--error-handler" in line]
    assert len(errors) == 1 and "metricsjobs.no_such_function" in errors[0], d.log()
    assert "Traceback" not in d.log()


@pytest.mark.parametrize("path", ["nodots", "no_such_module_xyz.fn", "json.no_such_name", "json.__doc__"])
def test_load_error_handlers_refuses_in_one_line(path):
    with pytest.raises(ValueError) as info:
        load_error_handlers((path,))
    assert "\n" not in str(info.value) and "--error-handler" in str(info.value)


def test_a_raising_handler_is_logged_in_one_line_and_never_propagates(caplog):
    calls = []

    def good(exc, job):
        calls.append((exc, job))

    def bad(exc, job):
        raise SystemExit("a handler that exits")

    exc, job = ValueError("boom"), {"class": "X", "jid": "j1"}
    with caplog.at_level(logging.WARNING, logger="sidepunch.hooks"):
        call_error_handlers((("m.bad", bad), ("m.good", good), ("m.bad2", bad)), exc, job)
    assert calls == [(exc, job)]
    assert len(caplog.records) == 1 and "m.bad: SystemExit" in caplog.text and "m.bad2" in caplog.text


def test_no_hook_without_handlers_or_metrics():
    """Without --error-handler and --metrics-port a failure pays nothing more (ctx.on_failure stays None)."""
    from sidepunch.server.stats import Counters
    assert failure_hook((), Counters()) is None
