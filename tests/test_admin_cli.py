"""The `sidepunch` admin CLI, called in-process through `main(argv)` against a real redis-server."""
import json
import logging
import re
import random
import runpy
import sys
from pathlib import Path

import pytest
from conftest import wait_for

from sidepunch import api
from sidepunch.core import keys
from sidepunch.core.connection import Outage
from sidepunch.embedded import free_port
from sidepunch.server.fetch import UnitOfWork
from sidepunch.server.heartbeat import Heartbeat, add_counts
from sidepunch.core.payload import encode
from sidepunch.server.retry import DeadSet as DeadWriter
from sidepunch.server.retry import RetryPolicy
from sidepunch.server.state import ChildContext, LifecycleState

ROOT = Path(__file__).resolve().parent.parent




def failed(r, client, klass="Mailer", args=(1,), queue="default", retry=True, exc=None):
    """Push a job, fetch it and run the real retry logic on it; returns its jid."""
    jid = client.push({"class": klass, "args": list(args), "queue": queue, "retry": retry})
    raw = r.lpop(keys.queue(queue))  # the newest job: the one just pushed
    RetryPolicy(r, DeadWriter(10_000, 180 * 86400.0), 25, ack_into=lambda pipe, unit: None,
                rng=random.Random(3)).handle(UnitOfWork(queue, raw), None, exc or RuntimeError("smtp down"))
    return jid


def beat(r, redis_server, identity, pid, busy=()):
    ctx = ChildContext(redis=r, config=None, identity=identity, state=LifecycleState(),
                       outage=Outage(redis_server.url, logging.getLogger("test")), resolver=None, retry=None)
    for tid, payload in busy:
        ctx.work.start(tid, "default", payload)
    info = {"hostname": identity.split(":")[0], "started_at": 1795380000.0, "pid": pid, "tag": "shop",
            "concurrency": 5, "queues": ["default", "mail"], "labels": [], "identity": identity}
    received = []
    heartbeat = Heartbeat(ctx, info, on_signal=received.append)
    heartbeat.beat()
    return heartbeat, received


def rows(out):
    """Table rows (header first) split on runs of 2+ spaces."""
    return [re.split(r"\s{2,}", line.strip()) for line in out.strip().splitlines()]


# -------------------------------------------------------------------------------------------- reading

def test_stats_table_and_json(cli, r, client):
    client.push_bulk({"class": "A", "args": [[1], [2], [3]]})
    client.push({"class": "B", "args": [], "at": 4_000_000_000})
    failed(r, client)
    pipe = r.pipeline()
    add_counts(pipe, 8, 2, {"expired": 4, "rate_limited": 6})
    pipe.execute()
    status, out, err = cli("stats", "--days", "2")
    assert status == 0 and err == ""
    lines = {k: v.strip() for k, v in (line.split(":", 1) for line in out.split("\n\n")[0].splitlines())}
    latency = lines.pop("Default latency")
    assert lines == {"Processed": "8", "Failed": "2", "Success rate": "75.00%", "Enqueued": "3", "Cancelled": "0",
                     "Expired": "4", "Rate limited": "6",
                     "Scheduled": "1", "Retries": "1", "Dead": "0", "Processes": "0", "Busy": "0"}
    assert latency.endswith("s") and 0 <= float(latency[:-1]) < 60
    history = rows(out.split("\n\n")[1])
    assert history[0] == ["DATE", "PROCESSED", "FAILED"] and history[1][1:] == ["8", "2"] and len(history) == 3
    status, out, _ = cli("--json", "stats")
    data = json.loads(out)
    assert status == 0 and data["processed"] == 8 and data["queues"] == {"default": 3} and "history" not in data
    assert data["success_rate"] == 0.75 and data["retry_size"] == 1


def test_queues_and_jobs(cli, r, client):
    client.push_bulk({"class": "A", "args": [[1], [2], [3]]})
    client.push({"class": "Mail", "args": ["x@y.z"], "queue": "mail"})
    status, out, _ = cli("queues")
    table = rows(out)
    assert status == 0 and table[0] == ["QUEUE", "SIZE", "LATENCY", "PAUSED"]
    assert [row[:2] for row in table[1:]] == [["default", "3"], ["mail", "1"]]
    assert out.splitlines()[0].index("SIZE") == out.splitlines()[1].index("3")  # aligned columns
    status, out, _ = cli("jobs", "default", "--limit", "2")
    table = rows(out.split("\n", 1)[1])
    assert status == 0 and out.startswith("queue default: 3 job(s), newest first")
    assert [row[1] for row in table[1:]] == ["A", "A"] and [row[-1] for row in table[1:]] == ["[3]", "[2]"]
    status, out, _ = cli("jobs", "default", "--oldest-first", "--json")
    assert [job["args"] for job in json.loads(out)] == [[1], [2], [3]]
    assert json.loads(out)[0]["payload"]["class"] == "A"
    status, out, _ = cli("--json", "queues")
    assert json.loads(out)[1]["name"] == "mail" and json.loads(out)[1]["size"] == 1


def test_jobs_of_an_unknown_queue_is_an_error(cli):
    status, out, err = cli("jobs", "nope")
    assert status == 1 and out == "" and err.strip() == "no queue named 'nope' (see `sidepunch queues`)"


def test_listing_sets_shows_errors_and_unparseable_entries(cli, r, client):
    jid = failed(r, client, "Mailer", ("a@b.c",), exc=ValueError("bad\naddress\x1b[31m"))
    dead_jid = failed(r, client, "Doomed", (), retry=0)
    r.zadd(keys.DEAD, {b"\x00garbage": 1})
    later = client.push({"class": "Later", "args": [9], "at": 4_000_000_000})
    status, out, _ = cli("retries")
    table = rows(out.split("\n", 1)[1])
    assert status == 0 and out.startswith("retry: 1 job(s), showing 1-1")
    assert table[0] == ["JID", "CLASS", "QUEUE", "RETRIES", "NEXT RETRY", "ERROR", "ARGS"]
    assert table[1][:4] == [jid, "Mailer", "default", "0"]
    assert table[1][5] == "ValueError: bad\\x0aaddress\\x1b[31m"  # control characters never reach the tty
    assert "\x1b" not in out
    status, out, _ = cli("dead")
    table = rows(out.split("\n", 1)[1])
    assert [row[1] for row in table[1:]] == ["Doomed", "<unparseable>"]  # most recent death first
    assert table[1][0] == dead_jid and table[2][-1] == "\\x00garbage"
    assert table[2][0] == api.DeadSet(r).page()[1].raw_id  # an entry without a jid is named by its bytes
    status, out, _ = cli("scheduled", "--json")
    [entry] = json.loads(out)
    assert entry["jid"] == later and entry["set"] == "schedule" and entry["score"] == 4_000_000_000
    status, out, _ = cli("dead", "--json")
    assert json.loads(out)[1]["raw"] == "\x00garbage"
    assert cli("dead", "--page", "5")[1].strip() == "no entries on page 5"
    r.delete(keys.SCHEDULE)
    assert cli("scheduled")[1].strip() == "schedule set is empty"


# ------------------------------------------------------------------------------------------- changing

def test_retry_by_jid_from_the_retry_or_dead_set(cli, r, client):
    jid = failed(r, client, queue="mail")
    dead_jid = failed(r, client, "Doomed", retry=0)
    status, out, _ = cli("retry", jid)
    assert status == 0 and out.strip() == f"enqueued {jid} on queue mail (from the retry set)"
    assert r.zcard(keys.RETRY) == 0 and json.loads(r.lindex("queue:mail", 0))["jid"] == jid
    status, out, _ = cli("retry", dead_jid, "--json")
    assert status == 0 and json.loads(out) == {"retried": 1, "jid": dead_jid, "from": "dead", "queue": "default"}
    assert r.zcard(keys.DEAD) == 0 and json.loads(r.lindex("queue:default", 0))["jid"] == dead_jid
    status, out, err = cli("retry", jid)
    assert status == 1 and out == "" and err.strip() == f"no job with jid '{jid}' in the retry or dead set"


def test_retry_all_and_its_usage_errors(cli, r, client):
    for i in range(3):
        failed(r, client, args=(i,))
    status, out, _ = cli("retry", "--all")
    assert status == 0 and out.strip() == "enqueued 3 job(s) from the retry set" and r.llen("queue:default") == 3
    for argv in (("retry",), ("retry", "abc", "--all")):
        status, out, err = cli(*argv)
        assert status == 2 and out == "" and err.strip() == "sidepunch retry: give JID or --all (one of them)"


def test_delete_and_kill(cli, r, client):
    retry_jid = failed(r, client)
    later = client.push({"class": "Later", "args": [], "at": 4_000_000_000})
    status, out, _ = cli("kill", later)
    assert status == 0 and out.strip() == f"moved {later} from the schedule set to the dead set"
    assert r.zcard(keys.SCHEDULE) == 0 and json.loads(r.zrange(keys.DEAD, 0, -1)[0])["jid"] == later
    status, out, _ = cli("delete", later, "--json")
    assert status == 0 and json.loads(out) == {"deleted": 1, "jid": later, "from": ["dead"]}
    assert r.zcard(keys.DEAD) == 0
    status, _, err = cli("kill", later)
    assert status == 1 and err.strip() == f"no job with jid '{later}' in the retry or scheduled set"
    status, out, _ = cli("delete", retry_jid)
    assert status == 0 and out.strip() == f"deleted {retry_jid} from the retry set" and r.zcard(keys.RETRY) == 0
    status, _, err = cli("delete", retry_jid)
    assert status == 1 and err.strip() == f"no job with jid '{retry_jid}' in the retry or scheduled or dead set"


def test_clear_queues_and_sets(cli, r, client):
    client.push_bulk({"class": "A", "args": [[1], [2]]})
    client.push({"class": "A", "args": [], "queue": "retry"})  # a queue that happens to be called retry
    failed(r, client)
    status, out, _ = cli("clear", "default")
    assert status == 0 and out.strip() == "removed 2 job(s) from queue default"
    assert not r.exists("queue:default") and r.smembers("queues") == {b"retry"}
    status, out, _ = cli("clear", "retry")
    assert status == 0 and out.strip() == "removed 1 job(s) from the retry set" and r.llen("queue:retry") == 1
    status, out, _ = cli("clear", "queue:retry", "--json")
    assert status == 0 and json.loads(out) == {"cleared": "queue retry", "removed": 1}
    assert cli("clear", "dead")[1].strip() == "removed 0 job(s) from the dead set"
    status, out, err = cli("clear", "missing")
    assert status == 1 and "no queue named 'missing'" in err and out == ""


def test_enqueue(cli, r):
    status, out, _ = cli("enqueue", "HardWorker", '[1, "two", {"k": null}]', "--queue", "critical")
    job = json.loads(r.lindex("queue:critical", 0))
    assert status == 0 and out.strip() == f"enqueued HardWorker as {job['jid']} on queue critical"
    assert (job["class"], job["args"], job["retry"]) == ("HardWorker", [1, "two", {"k": None}], True)
    assert list(job)[:2] == ["retry", "queue"] and r.smembers("queues") == {b"critical"}
    status, out, _ = cli("enqueue", "Plain", "--json")
    data = json.loads(out)
    assert status == 0 and data["queue"] == "default"
    plain = json.loads(r.lindex("queue:default", 0))
    assert (plain["jid"], plain["class"], plain["args"]) == (data["jid"], "Plain", [])
    status, out, err = cli("enqueue", "X", "[1,")
    assert status == 2 and out == "" and err.startswith("sidepunch enqueue: ARGS_JSON is not valid JSON (")
    status, _, err = cli("enqueue", "X", '{"a": 1}')
    assert status == 2 and err.strip() == "sidepunch enqueue: ARGS_JSON must be a JSON array, like '[1, \"two\"]'"
    status, _, err = cli("enqueue", "X", "[]", "--queue", "")
    assert status == 2 and err.strip() == "sidepunch enqueue: queue '' is empty"
    assert r.llen("queue:default") == 1


# ------------------------------------------------------------------------------------------- processes

def test_processes_workers_and_remote_signals(cli, r, client, redis_server):
    client.push({"class": "Slow", "args": [5]})
    running = r.rpop("queue:default")
    web, web_signals = beat(r, redis_server, "web:100:aaaaaaaaaaaa", 100, busy=[("t1", running)])
    bg, bg_signals = beat(r, redis_server, "bg:200:bbbbbbbbbbbb", 200)
    status, out, _ = cli("processes")
    table = rows(out)
    assert status == 0 and table[0] == ["IDENTITY", "TAG", "BUSY", "QUEUES", "STARTED", "BEAT", "RSS", "STATE"]
    assert [row[:4] for row in table[1:]] == [["bg:200:bbbbbbbbbbbb", "shop", "0/5", "default,mail"],
                                              ["web:100:aaaaaaaaaaaa", "shop", "1/5", "default,mail"]]
    assert table[1][-1] == "running"
    status, out, _ = cli("workers", "--json")
    [work] = json.loads(out)
    assert (work["identity"], work["tid"], work["job"]["class"]) == ("web:100:aaaaaaaaaaaa", "t1", "Slow")

    status, out, _ = cli("quiet", "web")
    assert status == 0 and out.strip() == "asked web:100:aaaaaaaaaaaa to quiet (at its next heartbeat)"
    status, out, _ = cli("stop", "200", "--json")
    assert json.loads(out) == {"signal": "stop", "processes": ["bg:200:bbbbbbbbbbbb"]}
    web.beat()
    bg.beat()
    assert (web_signals, bg_signals) == (["TSTP"], ["TERM"])
    status, out, _ = cli("quiet", "--all")
    assert status == 0 and len(out.strip().splitlines()) == 2
    web.ctx.state.go_quiet()
    web.beat()
    bg.beat()
    assert (web_signals, bg_signals) == (["TSTP", "TSTP"], ["TERM", "TSTP"])
    assert rows(cli("processes")[1])[2][-1] == "quiet"


def test_process_lookup_errors(cli, r, redis_server):
    beat(r, redis_server, "web:100:aaaaaaaaaaaa", 100)
    beat(r, redis_server, "web:101:bbbbbbbbbbbb", 101)
    status, out, err = cli("stop", "web")
    assert status == 1 and out == "" and "'web' matches 2 processes" in err
    status, _, err = cli("quiet", "worker-9")
    assert status == 1 and err.strip() == "sidepunch quiet: no live process matches 'worker-9'"
    assert not r.exists("web:100:aaaaaaaaaaaa-signals", "web:101:bbbbbbbbbbbb-signals")  # nothing was sent
    r.delete("web:100:aaaaaaaaaaaa", "web:101:bbbbbbbbbbbb")  # both expired
    status, _, err = cli("stop", "--all")
    assert status == 1 and err.strip() == "sidepunch stop: no live processes"
    assert cli("processes")[1].strip() == "no live processes" and r.scard(keys.PROCESSES) == 0


# ------------------------------------------------------------------------------------ usage, connection

@pytest.mark.parametrize("argv, message", [
    ((), "sidepunch: the following arguments are required: COMMAND (see --help)"),
    (("frobnicate",), "sidepunch: argument COMMAND: invalid choice: 'frobnicate'"),
    (("retries", "--limit", "0"), "sidepunch retries: argument --limit: '0' must be at least 1 (see --help)"),
    (("jobs",), "sidepunch jobs: the following arguments are required: QUEUE (see --help)"),
    (("quiet",), "sidepunch quiet: give ID or --all (one of them)"),
])
def test_bad_usage_is_one_line_and_status_2(cli, argv, message):
    status, out, err = cli(*argv)
    assert status == 2 and out == "" and len(err.strip().splitlines()) == 1 and err.startswith(message)


def test_help_exits_0(cli, capsys):
    status, out, _ = cli("--help", url=None)
    assert status == 0 and "retries" in out and "--redis-url" in out


def test_unreachable_redis_names_the_masked_url(cli):
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    status, out, err = cli("stats", url=url)
    assert status == 3 and out == ""
    assert err.startswith(f"sidepunch: cannot reach Redis at redis://:***@127.0.0.1:{url.split(':')[3]}")
    assert "hunter2" not in err and len(err.strip().splitlines()) == 1


def test_bad_redis_url_is_a_usage_error(cli):
    status, _, err = cli("stats", url="http://example.com")
    assert status == 2 and err.startswith("sidepunch: bad Redis URL http://example.com")


def test_url_comes_from_redis_provider_or_redis_url(cli, r, client, redis_server, monkeypatch):
    client.push({"class": "A", "args": []})
    monkeypatch.setenv("MY_REDIS", redis_server.url)
    monkeypatch.setenv("REDIS_PROVIDER", "MY_REDIS")
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")  # the provider wins
    status, out, _ = cli("--json", "queues", url=None)
    assert status == 0 and [(q["name"], q["size"]) for q in json.loads(out)] == [("default", 1)]
    monkeypatch.delenv("REDIS_PROVIDER")
    assert cli("queues", url=None)[0] == 3  # now REDIS_URL, where nothing listens
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    assert cli("queues", url=None)[0] == 0


def test_redis_refusing_a_command_is_one_line(cli, r):
    r.set(keys.RETRY, "not a zset")
    status, out, err = cli("retries")
    assert status == 1 and out == "" and err.startswith("sidepunch retries: Redis refused: WRONGTYPE")


def test_bin_sidepunch_runs_the_cli(redis_server, r, capsys, monkeypatch):
    r.zadd(keys.DEAD, {encode({"class": "A", "args": [], "jid": "f" * 24}): 1})
    monkeypatch.setattr(sys, "argv", ["sidepunch", "--redis-url", redis_server.url, "--json", "dead"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(ROOT / "bin" / "sidepunch"), run_name="__main__")
    assert exit_info.value.code == 0 and json.loads(capsys.readouterr().out)[0]["jid"] == "f" * 24


def test_quiet_and_stop_a_running_daemon(cli, daemon, r):
    """End to end: the signals the CLI leaves in Redis are acted on by a real sidepunchd."""
    def processes():
        status, out, _ = cli("--json", "processes")
        assert status == 0
        return json.loads(out)

    d = daemon("--workers", "1", "--threads", "2", "-r", "testjobs", "--timeout", "2")
    [process] = wait_for(processes, timeout=20, message="the daemon's first heartbeat")
    child = d.children()[0].pid
    assert process["pid"] == child and process["concurrency"] == 2 and not process["quiet"]
    assert cli("quiet", str(child))[0] == 0
    d.wait_log("quiet", timeout=20)
    wait_for(lambda: processes()[0]["quiet"], timeout=20, message="quiet=true in the process record")
    assert cli("stop", "--all")[0] == 0
    assert d.wait(timeout=40) == 0
    assert cli("processes")[1].strip() == "no live processes"
