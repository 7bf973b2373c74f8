"""A push's own checkout and round trip (client/wire.py), against a real Redis: the connection a push wrote on is
the next one its thread gets from `client.redis` (an app's WAIT after a push), pushes from many threads and from
both sides of a fork all land once, a dropped or timed-out connection never leaves a reply to be read as another
command's, and pools Wire does not know keep redis-py's own checkout."""
import json
import os
import threading

import fakeredis
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

import sidepunch
from sidepunch.client import wire
from sidepunch.embedded import RedisServer


def idle_and_busy(pool):
    return list(pool._available_connections), set(pool._in_use_connections)


def writer_id(r, name):
    """The id of the connection named `name` whose last command was the push's LPUSH."""
    ids = [int(c["id"]) for c in r.client_list() if c["cmd"] == "lpush" and c["name"] == name]
    assert len(ids) == 1, ids
    return ids[0]


def test_the_thread_s_next_command_runs_on_the_connection_the_push_wrote_on(redis_server, r):
    client = sidepunch.Client(redis_server.url + "?client_name=next-command")  # to tell its connections apart
    pool = client.redis.connection_pool
    assert wire.quick_pool(pool)
    held = [pool.get_connection() for _ in range(4)]  # as four threads at once would: four idle ones after
    for conn in held:
        pool.release(conn)
    assert len(idle_and_busy(pool)[0]) == 4
    for i in range(20):
        client.push({"class": "A", "args": [i]})
        pushed_on = writer_id(r, "next-command")
        assert client.redis.client_id() == pushed_on  # as redis-py's own checkout would hand it out
        assert client.redis.execute_command("WAIT", 0, 0) == 0  # WAIT itself runs (no replica here)
    assert r.llen("queue:default") == 20
    assert len(idle_and_busy(pool)[0]) == 4 and not idle_and_busy(pool)[1]  # every connection back


def test_pushes_from_many_threads_all_land_once_and_every_connection_goes_back(redis_server, r):
    client = sidepunch.Client(redis_server.url)
    errors = []

    def produce(n):
        try:
            for i in range(200):
                client.push({"class": "A", "args": [n, i]})
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=produce, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    payloads = r.lrange("queue:default", 0, -1)
    assert len(payloads) == 1600 and len(set(payloads)) == 1600
    idle, busy = idle_and_busy(client.redis.connection_pool)
    assert not busy and 1 <= len(idle) <= 8


def test_a_client_used_before_and_after_a_fork_never_shares_a_socket(redis_server, r):
    client = sidepunch.Client(redis_server.url)
    client.push({"class": "A", "args": ["parent", 0]})
    parent_conn = client.redis.connection_pool._available_connections[-1]
    parent_sock = parent_conn._sock
    pid = os.fork()
    if pid == 0:  # the child: its pushes use a connection of its own; the parent's socket stays untouched
        code = 1
        try:
            for i in range(10):
                client.push({"class": "A", "args": ["child", i]})
            idle, busy = idle_and_busy(client.redis.connection_pool)
            code = 0 if (parent_conn not in idle and not busy and idle[-1]._sock is not parent_sock) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    for i in range(1, 10):
        client.push({"class": "A", "args": ["parent", i]})
    assert client.redis.connection_pool._available_connections[-1] is parent_conn and parent_conn._sock is parent_sock
    assert r.llen("queue:default") == 20


def test_a_connection_killed_between_pushes_is_replaced_and_the_push_lands_once(redis_server, r):
    client = sidepunch.Client(redis_server.url)
    for i in range(5):
        client.push({"class": "A", "args": [i]})
        assert r.client_kill_filter(_id=client.redis.client_id()) == 1  # the one the next push takes
    assert r.llen("queue:default") == 5


def test_a_push_that_times_out_drops_its_connection_so_no_reply_is_read_out_of_step(redis_server, r):
    app = redis.Redis.from_url(redis_server.url, socket_timeout=0.3, retry=Retry(NoBackoff(), 0))
    client = sidepunch.Client(redis=app)
    assert wire.quick_pool(app.connection_pool)
    client.push({"class": "A", "args": [0]})
    r.execute_command("CLIENT", "PAUSE", 1000, "WRITE")
    with pytest.raises(redis.TimeoutError):
        client.push({"class": "A", "args": [1]})
    idle, busy = idle_and_busy(app.connection_pool)
    assert not busy and all(conn._sock is None for conn in idle)  # dropped, not handed out with a reply pending
    r.set("k", "v")  # waits for the pause to end
    assert app.get("k") == b"v" and app.ping() is True
    client.push({"class": "A", "args": [2]})
    assert app.incr("n") == 1 and app.get("k") == b"v"


def test_pools_wire_does_not_know_keep_redis_py_s_checkout(redis_server, r):
    url = redis_server.url
    blocking = redis.Redis(connection_pool=redis.BlockingConnectionPool.from_url(url))
    resp3 = redis.Redis.from_url(url, protocol=3)
    fake = fakeredis.FakeRedis()
    for other in (blocking, resp3, fake):
        assert not wire.quick_pool(other.connection_pool)
        client = sidepunch.Client(redis=other)
        assert client.push({"class": "A", "args": [1]}) is not None
        with pytest.raises(redis.ResponseError):  # an error reply still raises, through the public path too
            other.set("queue:odd", "a string")
            client.push({"class": "A", "args": [1], "queue": "odd"})
        assert other.llen("queue:default") >= 1
    assert r.llen("queue:default") == 2 and fake.llen("queue:default") == 1


def test_an_error_reply_raises_after_every_reply_was_read(redis_server, r):
    client = sidepunch.Client(redis_server.url)
    r.set("queue:odd", "a string")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        client.push({"class": "A", "args": [1], "queue": "odd"})
    assert client.redis.ping() is True and client.redis.get("queue:odd") == b"a string"  # still in step
    assert r.sismember("queues", "odd")  # the SADD before it was written


@pytest.mark.parametrize("failures, retries", [(0, 2), (1, 2), (2, 2), (3, 2), (5, 0)])
def test_the_first_attempt_outside_the_retry_retries_exactly_as_the_retry_alone(failures, retries):
    def run(call):
        attempts, failed = [], []

        def do():
            attempts.append(1)
            if len(attempts) <= failures:
                raise redis.ConnectionError(f"attempt {len(attempts)}")
            return "ok"

        try:
            outcome = call(Retry(NoBackoff(), retries), do, failed.append)
        except redis.ConnectionError as exc:
            outcome = str(exc)
        return outcome, len(attempts), [str(e) for e in failed]

    assert run(wire._retried) == run(lambda retry, do, fail: retry.call_with_retry(do, fail))


def test_a_unix_socket_client_pushes_through_the_quick_path(tmp_path):
    path = tmp_path / "redis.sock"
    server = RedisServer(extra=["--unixsocket", str(path), "--unixsocketperm", "700"]).start()
    try:
        client = sidepunch.Client(f"unix://{path}?db=0")
        assert wire.quick_pool(client.redis.connection_pool)
        jids = [client.push({"class": "A", "args": [i]}) for i in range(3)]
        assert [json.loads(p)["jid"] for p in reversed(client.redis.lrange("queue:default", 0, -1))] == jids
    finally:
        server.stop()


def test_without_hiredis_the_pure_python_packer_and_parser_give_the_same_writes(redis_server, r):
    from redis._parsers import _RESP2Parser
    from redis.connection import PythonRespSerializer
    cmds = [("SADD", "queues", "dé"), ("LPUSH", "queue:dé", b'{"a":1}', b"x" * 100_000), ("ZADD", "schedule", 1.5, b"y")]
    hiredis_conn = redis.Connection()
    plain = redis.Connection(parser_class=_RESP2Parser)
    plain._command_packer = PythonRespSerializer(plain._buffer_cutoff, plain.encoder.encode)  # as without hiredis
    assert wire.pack(plain, cmds) == wire.pack(hiredis_conn, cmds) == b"".join(hiredis_conn.pack_commands(cmds))
    app = redis.Redis.from_url(redis_server.url, parser_class=_RESP2Parser)
    for conn in [app.connection_pool.get_connection() for _ in range(2)]:  # the pushes use these two
        conn._command_packer = PythonRespSerializer(conn._buffer_cutoff, conn.encoder.encode)
        app.connection_pool.release(conn)
    client = sidepunch.Client(redis=app)
    assert wire.quick_pool(app.connection_pool)
    jids = [client.push({"class": "A", "args": ["dé", i]}) for i in range(3)]
    assert [json.loads(p)["jid"] for p in reversed(r.lrange("queue:default", 0, -1))] == jids
    r.set("queue:odd", "a string")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        client.push({"class": "A", "args": [1], "queue": "odd"})
    assert app.ping() is True and app.get("queue:odd") == b"a string"
    assert all(type(c._command_packer) is PythonRespSerializer for c in app.connection_pool._available_connections)


@pytest.mark.parametrize("queue", ["default", "dé", "日本", "q" * 500, "a%sb%dc", "tab\tin"])
def test_one_job_due_now_is_packed_as_hiredis_packs_its_commands(queue):
    from sidepunch.client.prepare import commands
    payload = '{"args":["é",1.5]}'.encode() + bytes(range(256))
    assert wire.pack_one(queue, payload) == wire.pack(redis.Connection(), commands([(queue, None, payload)]))


def test_a_connection_idle_past_the_health_check_interval_is_pinged_before_the_push(redis_server, r):
    client = sidepunch.Client(redis_server.url)
    client.push({"class": "A", "args": [0]})
    conn = client.redis.connection_pool._available_connections[-1]
    assert conn.health_check_interval > 0
    pings = r.info("commandstats").get("cmdstat_ping", {}).get("calls", 0)
    client.push({"class": "A", "args": [1]})  # just used: no PING
    assert r.info("commandstats").get("cmdstat_ping", {}).get("calls", 0) == pings
    conn.next_health_check = 0  # as after health_check_interval seconds of idleness
    client.push({"class": "A", "args": [2]})
    assert r.info("commandstats")["cmdstat_ping"]["calls"] == pings + 1
    assert conn.next_health_check > 0 and r.llen("queue:default") == 3
