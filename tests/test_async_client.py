"""The async client (`AsyncClient`, `await Job.aperform_async(...)` and friends) against a real redis-server.

What it writes is byte for byte what the sync client writes for the same job, jid and clock; bad input raises
the sync client's errors and writes nothing; client middleware runs (and can stop a push); the async half of
the write seam captures every async push; a push rides out a Redis restart; and one client serves several
event loops. Each test drives its coroutines with asyncio.run.
"""
import asyncio
import collections
import datetime as dt
import gc
import json
import random
import threading
import time

import fakeredis
import pytest
import redis
import redis.asyncio

import sidepunch
from sidepunch import AsyncClient, Client, Middleware, MiddlewareContext
from sidepunch.client import aio
from sidepunch.core.payload import decode, encode
from sidepunch.embedded import RedisServer, free_port
from conftest import wait_for
from test_client import Capturing, Email, ping
from test_hostile_args import Hard, value

NOW = 1_700_000_000.25


@sidepunch.job
async def aping(x):
    return x


@pytest.fixture
def default(redis_server, r):
    """The default clients, configured with the test server's URL (so the async twin can connect)."""
    client = sidepunch.configure(redis_server.url)
    yield client
    sidepunch.configure(redis=fakeredis.FakeRedis())


def fix(preparer, seed):
    """Make a preparer's pushes reproducible: a fixed clock and seeded jids."""
    preparer.clock = lambda: NOW
    preparer.random_bytes = random.Random(seed).randbytes


def snapshot(r):
    """Everything in Redis, exactly: lists and sorted sets in order, with scores."""
    out = {}
    for key in sorted(r.keys("*")):
        kind = r.type(key)
        if kind == b"list":
            out[key] = r.lrange(key, 0, -1)
        elif kind == b"zset":
            out[key] = r.zrange(key, 0, -1, withscores=True)
        else:
            out[key] = sorted(r.smembers(key))
    return out


def sync_and_async(client, aclient):
    """The same pushes through the sync API and through the awaited one: (name, sync call, coroutine maker)."""
    at = NOW + 3600
    return [
        ("perform_async", lambda: Email.perform_async("a@b.c", 3), lambda: Email.aperform_async("a@b.c", 3)),
        ("set", lambda: Email.set(queue="low", retry=False, custom={"k": [1.5, 1e15]}).perform_async("x", 1),
         lambda: Email.set(queue="low", retry=False, custom={"k": [1.5, 1e15]}).aperform_async("x", 1)),
        ("perform_at", lambda: Email.perform_at(at, "z", 3), lambda: Email.aperform_at(at, "z", 3)),
        ("perform_at datetime", lambda: Email.perform_at(dt.datetime.fromtimestamp(at, dt.timezone.utc), "d", 4),
         lambda: Email.aperform_at(dt.datetime.fromtimestamp(at, dt.timezone.utc), "d", 4)),
        ("job function", lambda: ping.perform_async(21), lambda: ping.aperform_async(21)),
        ("async job function", lambda: aping.set(queue="aq").perform_async(1),
         lambda: aping.set(queue="aq").aperform_async(1)),
        ("perform_bulk", lambda: Email.perform_bulk([["a", i] for i in range(25)], batch_size=10),
         lambda: Email.aperform_bulk([["a", i] for i in range(25)], batch_size=10)),
        ("push", lambda: client.push({"class": "HardWorker", "args": [1, "é"], "queue": "ruby"}),
         lambda: aclient.push({"class": "HardWorker", "args": [1, "é"], "queue": "ruby"})),
        ("push_bulk sidekiq form", lambda: client.push_bulk({"class": Email, "args": [[1], [2]], "at": [at, at + 1]}),
         lambda: aclient.push_bulk({"class": Email, "args": [[1], [2]], "at": [at, at + 1]})),
        ("push_bulk items", lambda: client.push_bulk([{"class": "X", "args": [5]}, {"class": "Y", "args": [6],
                                                                                     "at": at}]),
         lambda: aclient.push_bulk([{"class": "X", "args": [5]}, {"class": "Y", "args": [6], "at": at}])),
        ("push_batches", lambda: client.push_batches([{"class": "X", "args": [[7]]}, [{"class": "X", "args": [8]}]]),
         lambda: aclient.push_batches([{"class": "X", "args": [[7]]}, [{"class": "X", "args": [8]}]])),
    ]


def outcome(call):
    """("returned", value) or ("raised", the exception's type, its message)."""
    try:
        return "returned", call()
    except Exception as exc:  # noqa: BLE001 - the point is to compare whatever it was
        return "raised", type(exc), str(exc)


def both_ways(r, seed, sync_call, async_call, preparers):
    """The push through the sync API, then the same push awaited, each on an empty Redis with the same clock
    and jids: [(outcome, everything written)] for each."""
    runs = []
    for call, preparer in ((sync_call, preparers[0]), (lambda: asyncio.run(async_call()), preparers[1])):
        r.flushall()
        fix(preparer, seed)
        runs.append((outcome(call), snapshot(r)))
    return runs


def test_async_pushes_write_the_bytes_the_sync_client_writes(default, r):
    """Same job, same jid, same clock: the same bytes, in the same keys, at the same scores."""
    aclient = aio.twin_of(default)
    assert aclient.preparer is default.preparer
    for seed, (name, sync_call, async_call) in enumerate(sync_and_async(default, aclient)):
        (did, written), again = both_ways(r, seed, sync_call, async_call, [default.preparer] * 2)
        assert did[0] == "returned" and written and again == (did, written), name
        for raw in (m for key, v in written.items() if key != b"queues" for m in v):
            raw = raw[0] if isinstance(raw, tuple) else raw
            assert encode(decode(raw)) == raw, name


def test_a_standalone_async_client_writes_what_a_client_with_the_same_middleware_writes(redis_server, r):
    def tag(job, call_next):
        job["tenant"] = "acme"
        return call_next(job)

    client, aclient = Client(redis_server.url, middleware=[tag]), AsyncClient(redis_server.url, middleware=[tag])
    pushes = [p for p in sync_and_async(client, aclient) if p[0].startswith("push")]
    for seed, (name, sync_call, async_call) in enumerate(pushes):
        (did, written), again = both_ways(r, seed, sync_call, async_call, [client.preparer, aclient.preparer])
        assert did[0] == "returned" and written and again == (did, written), name
        assert all(json.loads(p)["tenant"] == "acme" for p in written.get(b"queue:default", [])), name


def test_single_scheduled_and_bulk_pushes_land_where_they_should(default, r, redis_server):
    async def pushes():
        before = time.time()
        jid = await Email.aperform_async("a@b.c", 3)
        later = await Email.aperform_in(60, "x", 1)
        delta = await ping.aperform_in(dt.timedelta(minutes=2), 2)
        past = await Email.aperform_in(-5, "now", 1)  # in the past: enqueued now, as perform_in does
        at = await Email.aperform_at(dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1), "z", 3)
        bulk = await Email.aperform_bulk([("b", i) for i in range(2500)], batch_size=1000)
        async with AsyncClient(redis_server.url) as own:
            mine = await Email.set(client=own, queue="own").aperform_async("o", 1)
        return before, jid, later, delta, past, at, bulk, mine

    before, jid, later, delta, past, at, bulk, mine = asyncio.run(pushes())
    mail = [json.loads(raw) for raw in r.lrange("queue:mail", 0, -1)]
    assert len(mail) == 2502 and {jid, past} <= {job["jid"] for job in mail}
    assert len(set(bulk)) == 2500 and mail[-1]["jid"] == jid and mail[-3]["args"] == ["b", 0]
    scheduled = {json.loads(m)["jid"]: score for m, score in r.zrange("schedule", 0, -1, withscores=True)}
    assert set(scheduled) == {later, delta, at}
    assert before + 59 < scheduled[later] < time.time() + 61 and scheduled[delta] > before + 119
    assert scheduled[at] > before + 3599
    assert json.loads(r.lindex("queue:own", 0))["jid"] == mine
    assert r.smembers("queues") == {b"mail", b"own"}


def failing_calls(client, aclient):
    """(name, sync call, coroutine maker) pairs that must both refuse, with the same error."""
    bad_rows = [[i] for i in range(2500)] + [[{1, 2}]]
    deep = 1
    for _ in range(200):
        deep = [deep]
    return [
        ("datetime arg", lambda: Email.perform_async("x", dt.datetime.now()),
         lambda: Email.aperform_async("x", dt.datetime.now())),
        ("deep", lambda: Email.perform_async("x", deep), lambda: Email.aperform_async("x", deep)),
        ("lone surrogate", lambda: client.push({"class": "X", "args": [], "custom": "\ud800"}),
         lambda: aclient.push({"class": "X", "args": [], "custom": "\ud800"})),
        ("no args", lambda: client.push({"class": "X"}), lambda: aclient.push({"class": "X"})),
        ("not a job", lambda: client.push({"class": int, "args": []}), lambda: aclient.push({"class": int, "args": []})),
        ("bad queue", lambda: client.push({"class": "X", "args": [], "queue": "a\nb"}),
         lambda: aclient.push({"class": "X", "args": [], "queue": "a\nb"})),
        ("bad set", lambda: Email.set(queue="a,b").perform_async(1), lambda: Email.set(queue="a,b").aperform_async(1)),
        ("bad interval", lambda: Email.perform_in("soon", 1), lambda: Email.aperform_in("soon", 1)),
        ("nan interval", lambda: Email.perform_in(float("nan"), 1), lambda: Email.aperform_in(float("nan"), 1)),
        ("naive datetime", lambda: Email.perform_at(dt.datetime.now(), 1), lambda: Email.aperform_at(dt.datetime.now(), 1)),
        ("bad row in a later batch", lambda: Email.perform_bulk(bad_rows, batch_size=1000),
         lambda: Email.aperform_bulk(bad_rows, batch_size=1000)),
        ("bad batch size", lambda: Email.perform_bulk([[1]], batch_size=0), lambda: Email.aperform_bulk([[1]], batch_size=0)),
        ("bad bulk shape", lambda: client.push_bulk({"class": "X", "args": [1, 2]}),
         lambda: aclient.push_bulk({"class": "X", "args": [1, 2]})),
        ("at count", lambda: client.push_bulk({"class": "X", "args": [[1]], "at": [1, 2]}),
         lambda: aclient.push_bulk({"class": "X", "args": [[1]], "at": [1, 2]})),
        ("bad item in a list", lambda: client.push_bulk([{"class": "X", "args": [1]}, {"class": "X", "args": [b""]}]),
         lambda: aclient.push_bulk([{"class": "X", "args": [1]}, {"class": "X", "args": [b""]}])),
        ("not a bulk", lambda: client.push_bulk(42), lambda: aclient.push_bulk(42)),
    ]


def test_bad_input_raises_what_the_sync_client_raises_and_writes_nothing(default, r):
    aclient = aio.twin_of(default)
    for name, sync_call, async_call in failing_calls(default, aclient):
        (did, written), again = both_ways(r, 0, sync_call, async_call, [default.preparer] * 2)
        assert did[0] == "raised" and did[1] in (TypeError, ValueError) and not written, name
        assert again == (did, written), name


class Counted(Middleware):
    """A class middleware that writes through its context's (sync) Redis client, from the event loop."""

    def around_push(self, job, call_next):
        self.context.redis.incr("pushes-seen")
        job["counted"] = True
        return call_next(job)


def test_client_middleware_runs_and_can_stop_an_async_push(redis_server, r):
    seen = []

    def stop_secret(job, call_next):
        seen.append(job["jid"])
        return None if job["args"] == ["secret"] else call_next(job)

    aclient = AsyncClient(redis_server.url, middleware=[Counted, stop_secret])

    async def pushes():
        stopped = await aclient.push({"class": "X", "args": ["secret"]})
        kept = await Email.set(client=aclient).aperform_async("ok", 1)
        bulk = await aclient.push_bulk({"class": "X", "args": [["secret"], ["fine"]]})
        return stopped, kept, bulk

    stopped, kept, bulk = asyncio.run(pushes())
    assert stopped is None and kept in seen and bulk[0] is None and len(bulk) == 2 and len(seen) == 4
    assert r.get("pushes-seen") == b"4"
    assert json.loads(r.lindex("queue:mail", 0))["counted"] is True
    assert [json.loads(p)["args"] for p in r.lrange("queue:default", 0, -1)] == [["fine"]]

    def sneaky(job, call_next):
        job["when"] = dt.datetime.now()
        return call_next(job)
    with pytest.raises(TypeError, match=r"^when is a datetime.datetime"):
        asyncio.run(AsyncClient(redis_server.url, middleware=[sneaky]).push({"class": "X", "args": []}))
    assert r.llen("queue:default") == 1


def test_configured_and_installed_middleware_wrap_async_pushes_too(redis_server, r):
    marks = []

    def configured(job, call_next):
        marks.append("configured")
        return call_next(job)

    client = sidepunch.configure(redis_server.url, middleware=[configured])
    try:
        client.install([Counted(MiddlewareContext(lambda: r))])  # what a worker does with the daemon's middleware
        jid = asyncio.run(Email.aperform_async("a", 1))
    finally:
        sidepunch.configure(redis=fakeredis.FakeRedis())
    job = json.loads(r.lindex("queue:mail", 0))
    assert job["jid"] == jid and job["counted"] is True and marks == ["configured"]


def every_kind_of_async_push(aclient):
    """One async push of each kind; returns the jids they gave, in a coroutine."""
    async def pushes():
        now = time.time()
        return [await aclient.push({"class": Email, "args": ["a", 1]}),
                await aclient.push({"class": "X", "args": [], "at": now + 60}),
                *await aclient.push_bulk({"class": "X", "args": [[1], [2]]}),
                *await aclient.push_bulk({"class": "X", "args": [[3], [4]], "at": [now + 1, now + 2]}),
                *await aclient.push_bulk([{"class": "X", "args": [5]}, {"class": "X", "args": [6], "at": now + 3}]),
                *await aclient.push_batches([{"class": "X", "args": [[7]]}, [{"class": "X", "args": [8]}]]),
                await Email.set(client=aclient).aperform_async("b", 2),
                await Email.set(client=aclient).aperform_in(30, "c", 3),
                *await Email.set(client=aclient).aperform_bulk([["d", 4], ["e", 5]], batch_size=1)]
    return pushes()


class AsyncCapturing(AsyncClient):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.written = []

    async def write(self, entries):
        self.written.append(list(entries))


@pytest.mark.parametrize("how", ["subclass", "async writer", "plain writer", "sync subclass's twin",
                                 "configured writer"])
def test_every_async_push_passes_the_async_write_seam_and_nothing_else_writes(how, r):
    written = []

    async def capture(entries):
        await asyncio.sleep(0)
        written.append(list(entries))
    unreachable = "redis://127.0.0.1:1/0"  # nothing listens there: a write that escaped the seam would fail
    if how == "subclass":
        aclient = AsyncCapturing(unreachable)
        written = aclient.written
    elif how == "async writer":
        aclient = AsyncClient(unreachable, writer=capture)
    elif how == "plain writer":
        aclient = AsyncClient(unreachable, writer=written.append)
    elif how == "sync subclass's twin":
        client = Capturing(unreachable)
        aclient, written = aio.twin_of(client), client.written
    else:
        sidepunch.configure(unreachable, writer=written.append)
        aclient = sidepunch.default_async_client()
    try:
        jids = asyncio.run(every_kind_of_async_push(aclient))
    finally:
        sidepunch.configure(redis=fakeredis.FakeRedis())
    entries = [e for call in written for e in call]
    assert sorted(json.loads(payload)["jid"] for _, _, payload in entries) == sorted(jids) and len(jids) == 14
    assert len([p for _, at, p in entries if at is not None]) == 5
    assert len(written) == 11 and r.dbsize() == 0  # one call per atomic push, as in the sync client


def test_an_async_writer_is_refused_by_the_sync_client():
    async def capture(entries):
        pass
    with pytest.raises(TypeError, match="an async writer belongs to an AsyncClient"):
        Client("redis://127.0.0.1:1/0", writer=capture)
    with pytest.raises(TypeError, match="an async writer belongs to an AsyncClient"):
        sidepunch.configure(writer=capture)


def test_the_async_seam_is_not_reached_by_bad_input_or_stopped_pushes():
    written = []
    aclient = AsyncClient("redis://127.0.0.1:1/0", writer=written.append,
                          middleware=[lambda job, call_next: None if job["args"] == ["stop"] else call_next(job)])

    async def pushes():
        assert await aclient.push({"class": "X", "args": ["stop"]}) is None
        with pytest.raises(TypeError):
            await aclient.push_bulk([{"class": "X", "args": [1]}, {"class": "X", "args": "nope"}])
        assert await aclient.push_bulk({"class": "X", "args": [["stop"]]}) == [None]  # its place kept
    asyncio.run(pushes())
    assert written == []


def test_building_connects_nothing_and_each_api_refuses_the_other_kind_of_client(r):
    aclient = AsyncClient("redis://127.0.0.1:1/0")  # nothing listens there: building must not connect
    assert aclient.middleware == () and aclient._links == {}
    with pytest.raises(TypeError, match="AsyncClient pushes from coroutines: await aperform_async"):
        Email.set(client=aclient).perform_async(1)
    with pytest.raises(TypeError, match="await aperform_async"):
        Email.set(client=aclient, queue="x").set(retry=1).perform_bulk([[1]])
    with pytest.raises(TypeError, match=r"takes a redis.asyncio client, got Redis; a sync redis client belongs"):
        AsyncClient(redis=r)
    twin = aio.twin_of(Client(redis=r))  # a Client given only a sync redis client has no URL to connect with
    with pytest.raises(RuntimeError, match="built with a redis client, which async pushes cannot use"):
        asyncio.run(Email.set(client=twin).aperform_async("a@b", 1))
    assert r.dbsize() == 0


def test_one_client_serves_many_event_loops(redis_server, r):
    aclient = AsyncClient(redis_server.url + "?client_name=loops")

    async def push_and_look(i):
        await aclient.push({"class": "X", "args": [i]})
        return [c for c in r.client_list() if c["name"] == "loops"]
    for i in range(3):
        assert len(asyncio.run(push_and_look(i))) == 1  # one connection, for this loop only
    loop = asyncio.new_event_loop()  # a loop closed without shutting down its async generators
    loop.run_until_complete(aclient.push({"class": "X", "args": ["manual"]}))
    loop.close()
    threads = [threading.Thread(target=asyncio.run, args=(aclient.push({"class": "X", "args": [f"t{n}"]}),))
               for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    asyncio.run(aclient.push({"class": "X", "args": ["last"]}))
    assert r.llen("queue:default") == 9
    assert len(aclient._links) <= 1  # the pools of closed loops are not kept
    gc.collect()  # the manually closed loop's socket closes as it is collected; asyncio.run closed the others
    wait_for(lambda: not [c for c in r.client_list() if c["name"] == "loops"], 10, message="every pool closed")


def test_a_given_redis_asyncio_client_is_refused_on_a_second_loop(redis_server, r):
    aclient = AsyncClient(redis=redis.asyncio.Redis.from_url(redis_server.url))

    async def push_and_close(close):
        jid = await aclient.push({"class": "X", "args": [1]})
        if close:
            await aclient._given.aclose()
        return jid
    assert asyncio.run(push_and_close(True))
    with pytest.raises(RuntimeError, match="first used on another event loop"):
        asyncio.run(push_and_close(False))
    assert r.llen("queue:default") == 1


def test_a_cancelled_push_leaves_no_connection_out_of_step(redis_server, r):
    aclient = AsyncClient(redis_server.url)

    async def cancel_some():
        tasks = [asyncio.create_task(aclient.push({"class": "X", "args": [i]})) for i in range(200)]
        for _ in range(3):
            await asyncio.sleep(0)
        for task in tasks[::2]:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        after = [await aclient.push({"class": "Y", "args": [i]}) for i in range(50)]
        return results, after

    results, after = asyncio.run(cancel_some())
    landed = {json.loads(raw)["jid"] for raw in r.lrange("queue:default", 0, -1)}
    pushed = [jid for jid in results if isinstance(jid, str)]
    assert set(pushed) <= landed and len(pushed) >= 100  # every push that returned a jid landed
    assert all(isinstance(x, (str, asyncio.CancelledError)) for x in results)
    assert set(after) <= landed and len(set(after)) == 50  # replies still match their commands


# --- outages ------------------------------------------------------------------------------------------------------

@pytest.fixture
def restartable(tmp_path):
    servers = [RedisServer(port=free_port(), directory=str(tmp_path)).start()]
    yield servers
    for server in servers:
        server.stop(cleanup=server.directory != str(tmp_path))


def test_pushes_ride_out_a_redis_restart(restartable):
    server = restartable[0]
    aclient = AsyncClient(server.url)

    async def scenario():
        assert await aclient.push({"class": "X", "args": ["before"]})  # the link has a connection now
        server.stop(cleanup=False)
        pending = asyncio.gather(*(aclient.push({"class": "X", "args": [i]}) for i in range(50)))
        await asyncio.sleep(1.0)
        assert not pending.done()  # retrying with backoff
        restartable.append(RedisServer(port=server.port, directory=server.directory).start())
        return await asyncio.wait_for(pending, 15)

    jids = asyncio.run(scenario())
    payloads = redis.Redis.from_url(server.url).lrange("queue:default", 0, -1)
    # The new server is empty but for the retried pushes: each once, in the order they were made.
    assert [json.loads(p)["jid"] for p in reversed(payloads)] == jids


def test_a_push_waits_out_a_failover_to_a_replica_that_is_promoted(restartable):
    """A server turned replica refuses writes (READONLY); the push retries until it is a primary again."""
    server = restartable[0]
    other = RedisServer(port=free_port()).start()  # its own temporary directory, removed when it stops
    restartable.append(other)
    r = redis.Redis.from_url(server.url)
    aclient = AsyncClient(server.url)

    async def scenario():
        assert await aclient.push({"class": "X", "args": ["before"]})
        r.replicaof("127.0.0.1", other.port)
        wait_for(lambda: r.info("replication")["master_link_status"] == "up", 10, message="replication")
        pending = asyncio.create_task(aclient.push({"class": "X", "args": ["during"]}))
        await asyncio.sleep(1.0)
        assert not pending.done()
        r.replicaof("NO", "ONE")
        return await asyncio.wait_for(pending, 15)

    jid = asyncio.run(scenario())
    assert [json.loads(p)["jid"] for p in r.lrange("queue:default", 0, -1)] == [jid]  # the replica synced: empty


def test_concurrent_pushes_share_round_trips_and_keep_their_order_and_their_errors(redis_server, r):
    """Pushes awaited together go out merged; each queue gets its jobs in the order they were pushed, and an
    error reply reaches only the pushes whose commands it carried, as the sync client would raise it."""
    r.set("queue:broken", "not a list")
    r.config_resetstat()
    aclient = AsyncClient(redis_server.url)
    queues = ["a", "b", "broken", "a"] * 50
    at = time.time() + 600

    async def pushes():
        return await asyncio.gather(*(aclient.push({"class": "X", "args": [i], "queue": q, **({"at": at + i} if i % 7
                                                   == 0 else {})}) for i, q in enumerate(queues)),
                                    return_exceptions=True)
    results = asyncio.run(pushes())
    assert r.info("commandstats")["cmdstat_lpush"]["calls"] <= 12  # 200 pushes: the first, then merged by queue
    for i, (queue, result) in enumerate(zip(queues, results)):
        if queue == "broken" and i % 7:
            assert isinstance(result, redis.ResponseError) and "WRONGTYPE" in str(result), (i, result)
        else:
            assert isinstance(result, str), (i, result)
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        Client(redis=r).push({"class": "X", "args": [], "queue": "broken"})
    for queue in ("a", "b"):
        expected = [j for i, (q, j) in enumerate(zip(queues, results)) if q == queue and i % 7]
        assert [json.loads(p)["jid"] for p in reversed(r.lrange(f"queue:{queue}", 0, -1))] == expected
    scheduled = [json.loads(m)["jid"] for m in r.zrange("schedule", 0, -1)]
    assert scheduled == [j for i, j in enumerate(results) if i % 7 == 0]
    assert r.smembers("queues") == {b"a", b"b", b"broken"}


def test_a_push_gives_up_after_retry_for_and_never_retries_a_refused_password(monkeypatch, r, redis_server):
    from sidepunch.client import push
    monkeypatch.setattr(aio, "RETRY_FOR", 3.0)
    monkeypatch.setattr(push, "RETRY_FOR", 3.0)
    nobody = f"redis://127.0.0.1:{free_port()}/0"
    start = time.monotonic()
    with pytest.raises(redis.ConnectionError):
        Client(nobody).push({"class": "X", "args": []})
    sync_took, start = time.monotonic() - start, time.monotonic()
    with pytest.raises(redis.ConnectionError):
        asyncio.run(AsyncClient(nobody).push({"class": "X", "args": []}))
    async_took = time.monotonic() - start
    assert 1.5 < sync_took < 8 and abs(async_took - sync_took) < 1.0, (sync_took, async_took)  # the same schedule
    r.config_set("requirepass", "right")
    try:
        admin = redis.Redis.from_url(redis_server.url, password="right")
        admin.execute_command("ACL", "LOG", "RESET")
        with pytest.raises(redis.AuthenticationError):
            asyncio.run(AsyncClient(redis_server.url.replace("redis://", "redis://:nope@"))
                        .push({"class": "X", "args": []}))
        failures = sum(int(e[b"count"]) for e in admin.execute_command("ACL", "LOG") if e[b"reason"] == b"auth")
        assert failures == 1 and admin.llen("queue:default") == 0  # one attempt: retrying cannot fix a setting
    finally:
        admin.config_set("requirepass", "")
        admin.close()


# --- hostile input ------------------------------------------------------------------------------------------------

def entry_pairs(client, aclient):
    """(name, sync push of v, async push of v) through each entry point."""
    return [
        ("perform_async", lambda v: Hard.perform_async("a", v), lambda v: Hard.aperform_async("a", v)),
        ("set", lambda v: Hard.set(extra=v).perform_async(1), lambda v: Hard.set(extra=v).aperform_async(1)),
        ("push", lambda v: client.push({"class": "X", "args": [v], "at": 2e9}),
         lambda v: aclient.push({"class": "X", "args": [v], "at": 2e9})),
        ("push_bulk rows", lambda v: client.push_bulk({"class": Hard, "args": [["a"], [v]]}),
         lambda v: aclient.push_bulk({"class": Hard, "args": [["a"], [v]]})),
        ("push_bulk items", lambda v: client.push_bulk([{"class": "X", "args": [1]}, {"class": "X", "custom": v,
                                                                                     "args": []}]),
         lambda v: aclient.push_bulk([{"class": "X", "args": [1]}, {"class": "X", "custom": v, "args": []}])),
        ("perform_bulk", lambda v: Hard.perform_bulk([["a"], [v]], batch_size=1),
         lambda v: Hard.aperform_bulk([["a"], [v]], batch_size=1)),
    ]


def test_hostile_values_get_the_sync_clients_answer_byte_for_byte(default, r):
    """Generated hostile values through each entry point: the async push refuses exactly what the sync push
    refuses, with the same error, and otherwise writes the same bytes."""
    rng = random.Random(20261201)
    aclient = aio.twin_of(default)
    counts = collections.Counter()
    for n in range(120):
        v = value(rng)
        for name, sync_push, async_push in entry_pairs(default, aclient):
            (did, written), again = both_ways(r, n, lambda: sync_push(v), lambda: async_push(v),
                                              [default.preparer] * 2)
            assert again == (did, written), name
            assert did[0] == "returned" or did[1] in (TypeError, ValueError) and not written, name
            counts[did[0]] += 1
    assert counts["raised"] > 150 and counts["returned"] > 150, counts
