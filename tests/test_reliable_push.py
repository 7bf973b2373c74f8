"""Reliable push (issue 16 point 6): with `reliable_push=True`, a push that meets a Redis outage is kept in memory
and returns its jid; the buffer is sent in order once Redis answers (none lost, none doubled); past
`reliable_push_limit` a push raises ReliablePushFull; at exit the buffer is sent for a few seconds and what is left
is logged as lost. Against a real redis-server that is stopped and restarted, plus unit tests of the buffer with a
scripted round trip (refused commands, forks)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import redis

import sidepunch
from conftest import wait_for
from sidepunch.client import reliable
from sidepunch.client.reliable import ReliablePush, ReliablePushFull
from sidepunch.core import keys
from sidepunch.embedded import RedisServer

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def server(tmp_path):
    """A redis-server of this test's own, which the test stops and starts again (same port)."""
    (tmp_path / "redis").mkdir()
    s = RedisServer(directory=str(tmp_path / "redis")).start()
    yield s
    s.stop()


def queued(r, queue="default"):
    """The jids in a queue, oldest first (the order they were pushed)."""
    return [json.loads(raw)["jid"] for raw in reversed(r.lrange(keys.queue(queue), 0, -1))]


def push(client, value, **extra):
    return client.push({"class": "Record", "args": [value], **extra})


# -------------------------------------------------------------------------------------------- a real outage

def test_pushes_during_an_outage_return_jids_and_arrive_in_order_once(server, caplog):
    client = sidepunch.Client(server.url, reliable_push=True, reliable_push_limit=100)
    jids = [push(client, "before")]
    server.stop(cleanup=False)
    jids += [push(client, i) for i in range(40)]
    bulk = client.push_bulk({"class": "Record", "args": [[f"bulk{i}"] for i in range(5)]})
    later = client.push({"class": "Record", "args": ["later"], "at": time.time() + 3600})
    assert all(jids) and len(bulk) == 5 and later and client.reliable.buffered == 46
    assert "keeping pushes in memory" in caplog.text
    server.start()  # an empty Redis: the job pushed before the outage went with the old one
    r = redis.Redis.from_url(server.url)
    wait_for(lambda: client.reliable.buffered == 0, 15, message="the buffer to be sent")
    assert queued(r) == jids[1:] + bulk  # in order, none lost, none doubled
    assert [json.loads(raw)["jid"] for raw in r.zrange(keys.SCHEDULE, 0, -1)] == [later]
    after = push(client, "after")  # straight to Redis again
    assert queued(r)[-1] == after and client.reliable.buffered == 0


def test_pushes_made_while_the_buffer_drains_keep_their_place(server):
    client = sidepunch.Client(server.url, reliable_push=True, reliable_push_limit=1000)
    server.stop(cleanup=False)
    jids = [push(client, i) for i in range(300)]
    server.start()
    jids += [push(client, i) for i in range(300, 600)]  # behind the buffered ones, whatever the sender's pace
    r = redis.Redis.from_url(server.url)
    wait_for(lambda: client.reliable.buffered == 0 and r.llen(keys.queue("default")) >= 600, 15,
             message="every push to land")
    assert queued(r) == jids


def test_past_the_limit_a_push_is_refused_not_kept(server, caplog):
    client = sidepunch.Client(server.url, reliable_push=True, reliable_push_limit=10)
    server.stop(cleanup=False)
    kept = [push(client, i) for i in range(8)]
    with pytest.raises(ReliablePushFull):
        client.push_bulk({"class": "Record", "args": [[1], [2], [3]]})  # would make 11: refused whole
    kept += [push(client, 8), push(client, 9)]
    for _ in range(3):
        with pytest.raises(redis.ConnectionError):  # ReliablePushFull is one: outage handlers still catch it
            push(client, "over")
    assert caplog.text.count("the buffer is full") == 1 and client.reliable.buffered == 10
    server.start()
    r = redis.Redis.from_url(server.url)
    wait_for(lambda: client.reliable.buffered == 0, 15, message="the buffer to be sent")
    assert queued(r) == kept


def test_without_reliable_push_an_outage_still_raises(server):
    assert sidepunch.Client(server.url).reliable is None
    client = sidepunch.Client(redis=redis.Redis.from_url(server.url))  # its own retries: a few, quick
    server.stop(cleanup=False)
    with pytest.raises(redis.ConnectionError):
        push(client, "lost to the caller, as before")


# -------------------------------------------------------------------------------------------- at exit

SCRIPT = """
import logging, sys, time
logging.basicConfig(level=logging.INFO, format="%(message)s")
import sidepunch
client = sidepunch.Client(sys.argv[1], reliable_push=True)
jids = [client.push({"class": "Record", "args": [i]}) for i in range(int(sys.argv[2]))]
print(" ".join(jids), flush=True)
"""


def _run_script(server, tmp_path, count):
    script = tmp_path / "pusher.py"
    script.write_text(textwrap.dedent(SCRIPT))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, str(script), server.url, str(count)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_at_exit_what_cannot_be_sent_is_logged_as_lost(server, tmp_path):
    server.stop(cleanup=False)
    proc = _run_script(server, tmp_path, 3)
    try:
        out, err = proc.communicate(timeout=reliable.EXIT_FLUSH + 20)
    finally:
        proc.kill()
    jids = out.split()
    assert proc.returncode == 0 and len(jids) == 3
    assert "3 job(s) lost at exit" in err and all(jid in err for jid in jids) and "Traceback" not in err


def test_at_exit_the_buffer_is_sent_if_redis_comes_back_in_time(server, tmp_path):
    server.stop(cleanup=False)
    proc = _run_script(server, tmp_path, 5)
    try:
        jids = proc.stdout.readline().split()  # pushed and buffered; the process is exiting now
        time.sleep(0.5)
        server.start()
        out, err = proc.communicate(timeout=reliable.EXIT_FLUSH + 20)
    finally:
        proc.kill()
    r = redis.Redis.from_url(server.url)
    assert len(jids) == 5 and queued(r) == jids and "lost" not in err


# -------------------------------------------------------------------------------------------- the buffer alone

class Scripted:
    """A round trip that fails while `down`, refuses the commands in `refuse`, and records what it sent."""

    def __init__(self):
        self.down, self.refuse, self.sent, self.unreachable = False, set(), [], set()

    def __call__(self, cmds):
        if self.down or any(cmd[-1] in self.unreachable for cmd in cmds):
            raise redis.ConnectionError("down")
        replies = []
        for cmd in cmds:
            if cmd[1] in self.refuse:
                replies.append(redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind"))
            else:
                self.sent.append(cmd)
                replies.append(1)
        return replies


def entries(jid):
    return [("default", None, json.dumps({"jid": jid}).encode())]


def test_a_refused_command_is_retried_alone_and_holds_the_ones_behind(caplog):
    send = Scripted()
    buffer = ReliablePush(send, limit=10)
    send.down = True
    buffer.write([("SADD", "queues", "x"), ("LPUSH", "queue:x", b"j1")], entries("j1"))
    buffer.write([("LPUSH", "queue:y", b"j2")], entries("j2"))
    send.refuse, send.down = {"queue:x"}, False
    wait_for(lambda: "Redis refuses a buffered push" in caplog.text, 5, message="the refusal to be logged")
    assert buffer.buffered == 2 and send.sent == [("SADD", "queues", "x")]  # j2 waits behind j1
    send.refuse = set()
    wait_for(lambda: buffer.buffered == 0, 5, message="the buffer to drain")
    assert send.sent == [("SADD", "queues", "x"), ("LPUSH", "queue:x", b"j1"), ("LPUSH", "queue:y", b"j2")]
    assert caplog.text.count("Redis refuses") == 1


def test_a_direct_push_that_redis_refuses_raises_as_before():
    send = Scripted()
    send.refuse = {"queue:x"}
    with pytest.raises(redis.ResponseError):
        ReliablePush(send).write([("LPUSH", "queue:x", b"j")], entries("j"))


def test_a_forked_child_does_not_send_its_parents_buffer(monkeypatch):
    send = Scripted()
    buffer = ReliablePush(send, limit=10)
    send.unreachable = {b"parent"}  # the parent's sender thread (no thread survives a real fork) never gets it out
    buffer.write([("LPUSH", "queue:a", b"parent")], entries("parent"))
    monkeypatch.setattr(reliable.os, "getpid", lambda: -1)  # as in a child after fork
    buffer.write([("LPUSH", "queue:a", b"child")], entries("child"))
    assert buffer.buffered == 0 and buffer.at_exit(0.1) == 0
    assert send.sent == [("LPUSH", "queue:a", b"child")]


@pytest.mark.parametrize("flag,limit,error", [("yes", 10, TypeError), (1, 10, TypeError), (True, 0, ValueError),
                                              (True, True, TypeError), (True, 10 ** 8, ValueError),
                                              (True, 1.5, TypeError)])
def test_bad_settings_are_refused_in_one_line(flag, limit, error):
    with pytest.raises(error, match="reliable_push"):
        sidepunch.Client("redis://localhost", reliable_push=flag, reliable_push_limit=limit)
    with pytest.raises(error, match="reliable_push"):
        sidepunch.configure("redis://localhost", reliable_push=flag, reliable_push_limit=limit)


def test_concurrent_pushes_through_an_outage_all_arrive_once(server):
    client = sidepunch.Client(server.url, reliable_push=True, reliable_push_limit=5000)
    server.stop(cleanup=False)
    jids: list[str] = []
    lock = threading.Lock()

    def pusher(n):
        for i in range(200):
            jid = push(client, f"{n}-{i}")
            with lock:
                jids.append(jid)
    threads = [threading.Thread(target=pusher, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    server.start()
    for t in threads:
        t.join(30)
    r = redis.Redis.from_url(server.url)
    wait_for(lambda: client.reliable.buffered == 0 and r.llen(keys.queue("default")) >= 800, 20,
             message="every push to land")
    landed = queued(r)
    assert sorted(landed) == sorted(jids) and len(set(landed)) == 800
