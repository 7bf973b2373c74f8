"""Unique jobs against a real redis-server: a duplicate push is refused while the first job holds its lock, the
lock is taken in the push's own round trip (sync and async, one job out of concurrent pushes from threads and
processes), and the worker's UniqueFeature releases it by its own jid only. The daemon tests are in
test_unique_daemon.py."""
import asyncio
import logging
import subprocess
import sys
import threading
import time

import pytest

import sidepunch
from sidepunch import Outcome
from sidepunch.core import keys
from sidepunch.core.middleware import MiddlewareContext, Reschedule
from sidepunch.core.unique import digest, held_lock
from sidepunch.features import build_features
from sidepunch.features.unique import UniqueFeature
import conftest
from conftest import APPS, ROOT

sys.path.insert(0, str(APPS))
import uniquejobs  # noqa: E402

IDENTITY = "testhost:4321:0123456789ab"


@pytest.fixture(autouse=True)
def default_client_on_test_redis(r):
    sidepunch.configure(redis=r)
    yield
    sidepunch.configure(redis=r)


def locks(r):
    return {k: r.get(k) for k in r.scan_iter(keys.UNIQUE_PREFIX + "*")}


def processor(r):
    features = build_features(MiddlewareContext(r))
    return conftest.make_processor(r, "uniquejobs", IDENTITY, features=features)


def run_next(proc):
    unit = proc.fetcher.fetch()
    assert unit is not None
    return proc.process(unit)


def test_a_duplicate_push_is_refused_while_the_first_is_queued_and_logged_at_debug(r, client, caplog):
    caplog.set_level(logging.DEBUG, "sidepunch.unique")
    first = client.push({"class": uniquejobs.Unique, "args": [1]})
    assert first is not None
    assert client.push({"class": uniquejobs.Unique, "args": [1]}) is None
    other = client.push({"class": uniquejobs.Unique, "args": [2]})
    elsewhere = client.push({"class": uniquejobs.Unique, "args": [1], "queue": "other"})
    assert other and elsewhere and r.llen("queue:default") == 2 and r.llen("queue:other") == 1
    assert "refused a duplicate push of a unique job" in caplog.text
    [(key, value)] = [(k, v) for k, v in locks(r).items() if first.encode() in v]
    assert value == f'["{first}","uniquejobs.Unique"]'.encode() and 59_000 < r.pttl(key) <= 60_000


def test_plain_jobs_take_no_lock_and_write_what_they_always_wrote(r, client):
    assert client.push({"class": "Plain", "args": [1]}) and client.push({"class": "Plain", "args": [1]})
    assert r.llen("queue:default") == 2 and not locks(r) and b"unique" not in r.lindex("queue:default", 0)


def test_a_scheduled_job_holds_its_lock_for_its_wait_plus_the_window(r, client):
    jid = uniquejobs.Unique.set(client=client).perform_in(300, "s")
    assert jid and uniquejobs.Unique.set(client=client).perform_async("s") is None
    [key] = locks(r)
    assert 359_000 < r.pttl(key) <= 360_000 and r.zcard("schedule") == 1 and r.llen("queue:default") == 0


def test_expires_in_shortens_the_lock_so_an_expired_job_does_not_keep_it(r, client):
    client.push({"class": uniquejobs.Unique, "args": [1], "expires_in": 5})
    [key] = locks(r)
    assert 4_000 < r.pttl(key) <= 5_000


def test_a_push_retried_after_its_first_attempt_landed_is_written_once(r, client):
    entries, jid = client.preparer.one({"class": uniquejobs.Unique, "args": ["again"]})
    assert len(sidepunch.client.prepare.commands(entries)) == 1  # one script: lock and job together
    client.write(entries)
    client.write(entries)  # as a retry through an outage would send it again
    assert not entries.refused and r.llen("queue:default") == 1
    assert client.push({"class": uniquejobs.Unique, "args": ["again"]}) is None


def test_unique_args_says_what_a_duplicate_is(r, client):
    setter = uniquejobs.ByKey.set(client=client)
    assert setter.perform_async("k", 1) and setter.perform_async("k", 2) is None and setter.perform_async("j", 1)
    assert r.llen("queue:default") == 2


def test_set_unique_for_makes_one_push_unique_and_bad_options_are_refused(r, client):
    class Plain(sidepunch.Job):
        def perform(self, x):
            pass

    assert Plain.set(client=client, unique_for=30).perform_async(1)
    assert Plain.set(client=client, unique_for=30).perform_async(1) is None
    assert Plain.set(client=client).perform_async(1)  # not unique: no lock asked
    for bad in ({"unique_for": "soon"}, {"unique_for": -1}, {"unique_for": float("nan")},
                {"unique_for": 5, "unique_until": "end"}):
        with pytest.raises((TypeError, ValueError)):
            client.push({"class": "Named", "args": [], **bad})
    class Odd(Plain):
        unique_for = 30

        def unique_args(self, x):
            return {x}

    with pytest.raises(TypeError, match="JSON values"):
        Odd.set(client=client).perform_async(1)
    assert r.llen("queue:default") == 2


def test_perform_bulk_gives_none_in_place_of_each_refused_duplicate(r, client):
    held = uniquejobs.Unique.set(client=client).perform_async(3)
    jids = uniquejobs.Unique.set(client=client).perform_bulk([[1], [2], [1], [3], [4]], batch_size=2)
    assert [j is None for j in jids] == [False, False, True, True, False] and held
    assert r.llen("queue:default") == 4 and len(set(filter(None, jids))) == 3


def test_push_bulk_keeps_the_positions_of_jobs_a_middleware_stopped(r):
    def stop_odd(job, call_next):
        return None if job["args"][0] % 2 else call_next(job)

    for c in (sidepunch.Client(redis=r, middleware=[stop_odd]),):
        jids = c.push_bulk([{"class": "Plain", "args": [i]} for i in range(5)])
        assert [j is None for j in jids] == [False, True, False, True, False]
        jids = c.push_bulk({"class": "Plain", "args": [[i] for i in range(4)]})
        assert [j is None for j in jids] == [False, True, False, True]
    assert r.llen("queue:default") == 5


def test_async_pushes_keep_positions_and_refuse_duplicates_without_a_sync_redis(redis_server, r):
    def stop_odd(job, call_next):
        return None if job["args"][0] % 2 else call_next(job)

    async def pushes():
        async with sidepunch.AsyncClient(redis_server.url, middleware=[stop_odd]) as ac:
            single = await asyncio.gather(*[ac.push({"class": uniquejobs.Unique, "args": [2]}) for _ in range(20)])
            bulk = await ac.push_bulk({"class": uniquejobs.Unique, "args": [[0], [1], [2], [4], [4]]})
            return ac, single, bulk

    ac, single, bulk = asyncio.run(pushes())
    assert len([j for j in single if j]) == 1
    assert [j is None for j in bulk] == [False, True, True, False, True]  # 1: stopped; 2: held; 4: twice
    assert callable(ac.preparer.features.features[0].context._redis)  # the sync client was never made
    assert r.llen("queue:default") == 3


def test_ruby_style_payloads_without_a_digest_run_and_share_the_default_digest(r, client):
    ruby = b'{"class":"uniquejobs.Unique","args":["rb"],"queue":"default","jid":"a1b2c3","unique_for":60,' \
           b'"retry":true,"created_at":1.0,"enqueued_at":1.0}'
    r.lpush("queue:default", ruby)
    r.sadd("queues", "default")
    held = client.push({"class": "uniquejobs.Unique", "args": ["rb"], "queue": "default", "unique_for": 60})
    [key] = locks(r)
    assert key == keys.unique_lock(digest("uniquejobs.Unique", "default", ["rb"]).encode().decode()).encode()
    proc = processor(r)
    assert run_next(proc) is Outcome.DONE  # the Ruby job: its release compares its own jid, so ours stays
    assert locks(r) and run_next(proc) is Outcome.DONE and not locks(r) and held


def test_the_worker_releases_on_success_and_never_another_jobs_lock(r, client):
    jid = client.push({"class": uniquejobs.Unique, "args": [1]})
    [key] = locks(r)
    r.set(key, '["someone-else","uniquejobs.Unique"]', px=60_000)  # as if our lock lapsed and another took it
    proc = processor(r)
    assert run_next(proc) is Outcome.DONE and locks(r) == {key: b'["someone-else","uniquejobs.Unique"]'}
    r.delete(key)
    assert client.push({"class": uniquejobs.Unique, "args": [1]}) != jid
    assert run_next(proc) is Outcome.DONE and not locks(r)
    assert client.push({"class": uniquejobs.Unique, "args": [1]})


def test_a_failed_job_keeps_its_lock_in_the_retry_set_and_a_dead_one_releases_it(r, client):
    in_retry = client.push({"class": uniquejobs.FailingUnique, "args": [1]})
    proc = processor(r)
    assert run_next(proc) is Outcome.RETRY and r.zcard("retry") == 1 and len(locks(r)) == 1
    assert client.push({"class": uniquejobs.FailingUnique, "args": [1]}) is None
    assert client.push({"class": uniquejobs.DyingUnique, "args": [1]})
    assert run_next(proc) is Outcome.DEAD and r.zcard("dead") == 1 and len(locks(r)) == 1
    assert client.push({"class": uniquejobs.DyingUnique, "args": [1]})
    assert client.push({"class": uniquejobs.FailingUnique, "args": [2], "retry": False})
    assert run_next(proc) is Outcome.DEAD  # the DyingUnique pushed just now
    assert run_next(proc) is Outcome.DISCARDED
    assert list(locks(r).values()) == [f'["{in_retry}","uniquejobs.FailingUnique"]'.encode()]
    assert client.push({"class": uniquejobs.FailingUnique, "args": [2], "retry": False})  # discarded: released


def test_until_start_releases_before_perform_and_reschedule_keeps_the_lock(r, client, monkeypatch):
    feature = UniqueFeature(MiddlewareContext(r))
    seen = []
    assert client.push({"class": uniquejobs.UniqueUntilStart, "args": ["s", 0]})
    proc = processor(r)
    monkeypatch.setattr(uniquejobs.UniqueUntilStart, "perform", lambda self, *a: seen.append(len(locks(r))))
    assert run_next(proc) is Outcome.DONE and seen == [0]
    client.push({"class": uniquejobs.Unique, "args": ["r"]})
    payload = sidepunch.core.payload.decode(r.lindex("queue:default", 0))
    with pytest.raises(Reschedule):
        feature.around_perform(uniquejobs.Unique(), payload, "default", lambda: (_ for _ in ()).throw(Reschedule(5)))
    assert feature.around_perform(uniquejobs.Unique(), payload, "default", lambda: Reschedule(5))
    assert len(locks(r)) == 1  # raised or returned, a Reschedule keeps the lock: the job waits in the schedule


def test_a_cancelled_job_releases_its_lock_and_an_interrupted_one_keeps_it(r, client):
    feature = UniqueFeature(MiddlewareContext(r))
    client.push({"class": uniquejobs.Unique, "args": ["c"]})
    payload = sidepunch.core.payload.decode(r.lindex("queue:default", 0))
    instance = uniquejobs.Unique()

    def interrupted():
        raise KeyboardInterrupt("stop")

    with pytest.raises(KeyboardInterrupt):  # shutdown or timeout: the job goes back or to retry, lock kept
        feature.around_perform(instance, payload, "default", interrupted)
    assert len(locks(r)) == 1
    instance._sidepunch_cancelled = True
    with pytest.raises(KeyboardInterrupt):
        feature.around_perform(instance, payload, "default", interrupted)
    assert not locks(r)


def test_the_ttl_releases_the_lock_of_a_job_whose_process_vanished(r, client):
    assert client.push({"class": uniquejobs.Unique, "args": [1], "unique_for": 0.3})
    assert client.push({"class": uniquejobs.Unique, "args": [1], "unique_for": 0.3}) is None
    time.sleep(0.4)
    assert client.push({"class": uniquejobs.Unique, "args": [1], "unique_for": 0.3})
    assert r.llen("queue:default") == 2


def test_hostile_unique_fields_and_lock_keys_never_crash_and_never_release_another(r, client):
    proc = processor(r)
    jid = client.push({"class": uniquejobs.Unique, "args": ["x"]})
    [key] = locks(r)
    real = r.rpop("queue:default")  # set aside: the hostile ones run while its lock is held
    for fields in ('"unique_for":"x"', '"unique_for":1e400', '"unique_for":60,"unique_digest":7',
                   '"unique_for":60,"unique_digest":"../../etc"', '"unique_for":60,"unique_until":[]',
                   '"unique_for":60,"unique_digest":"' + key.decode()[-64:] + '"'):
        r.lpush("queue:default", '{"class":"uniquejobs.Unique","args":["h"],"jid":"evil",' + fields + '}')
    outcomes = [run_next(proc) for _ in range(6)]
    assert outcomes.count(Outcome.DONE) == 5 and r.zcard("dead") == 1  # 1e400 cannot be decoded: dead
    assert r.get(key) == f'["{jid}","uniquejobs.Unique"]'.encode()  # even the one naming its digest
    r.lpush("queue:default", real)
    assert run_next(proc) is Outcome.DONE and not locks(r) and r.llen("done") == 6
    r.flushall()
    client.push({"class": uniquejobs.Unique, "args": ["y"]})
    [key] = locks(r)
    r.delete(key)
    r.hset(key, "x", "y")  # a lock key of another type: a push counts it as held, a release leaves it
    assert client.push({"class": uniquejobs.Unique, "args": ["y"]}) is None
    assert run_next(proc) is Outcome.DONE and r.type(key) == b"hash"
    assert held_lock({"unique_for": 5, "class": {"a": 1}, "args": [], "jid": None}) is not None


def hostile_fields(rng):
    """Random unique fields as a hostile payload could carry them (JSON values of every kind)."""
    values = [None, True, False, 0, -1, 1, 0.5, 10 ** 9, 10 ** 30, -1e300, "", "60", "start", "success", [], [60],
              {}, {"a": 60}, "a" * 64, "A" * 64, "0" * 64, "g" * 64, "0" * 63, "\u0000" * 64, "é" * 64]
    fields = {}
    for name in ("unique_for", "unique_until", "unique_digest", "expires_in"):
        if rng.random() < 0.8:
            fields[name] = rng.choice(values)
    fields.setdefault("unique_for", rng.choice(values))
    return fields


def test_generated_hostile_unique_fields_run_once_each_and_keep_others_locks(r, client):
    import json
    import random
    rng = random.Random(16)
    proc = processor(r)
    jid = client.push({"class": uniquejobs.Unique, "args": ["kept"]})
    held = locks(r)
    real = r.rpop("queue:default")
    for i in range(80):
        payload = {"class": "uniquejobs.Unique", "args": [f"h{i}"], "jid": f"evil{i}", "queue": "default",
                   **hostile_fields(rng)}
        r.lpush("queue:default", json.dumps(payload))
    outcomes = [run_next(proc) for _ in range(80)]
    assert outcomes == [Outcome.DONE] * 80 and r.llen("done") == 80 and r.llen("queue:default") == 0
    assert locks(r) == held and r.zcard("retry") == r.zcard("dead") == 0
    r.lpush("queue:default", real)
    assert run_next(proc) is Outcome.DONE and not locks(r) and jid


def test_concurrent_pushes_from_threads_write_exactly_one_job(r, redis_server):
    clients = [sidepunch.Client(redis_server.url) for _ in range(4)]
    start = threading.Barrier(16)
    results = []

    def push(c):
        start.wait()
        for _ in range(10):
            results.append(uniquejobs.Unique.set(client=c).perform_async("race"))

    threads = [threading.Thread(target=push, args=(clients[i % 4],)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 160 and len([j for j in results if j]) == 1 and r.llen("queue:default") == 1


PUSHER = """
import sys, time
sys.path.insert(0, {apps!r})
import sidepunch, uniquejobs
client = sidepunch.Client({url!r})
client.redis.ping()
time.sleep(max(0.0, {at!r} - time.time()))
print(sum(1 for _ in range(20) if uniquejobs.Unique.set(client=client).perform_async("race")))
"""


def test_concurrent_pushes_from_processes_write_exactly_one_job(r, redis_server):
    script = PUSHER.format(apps=str(APPS), url=redis_server.url, at=time.time() + 3)
    procs = [subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True)
             for _ in range(6)]
    try:
        written = [int(p.communicate(timeout=60)[0].strip()) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert sum(written) == 1 and r.llen("queue:default") == 1


def test_fake_mode_keeps_uniqueness_in_memory_and_inline_takes_no_lock(monkeypatch):
    """No Redis (nothing listens where the clients point): fake mode refuses a duplicate of a unique job it keeps
    until the first ran (returned or raised) or was cleared; inline mode runs every push."""
    from sidepunch import testing
    client = sidepunch.Client("redis://127.0.0.1:1/0")
    sidepunch.configure("redis://127.0.0.1:1/0")
    ran = []
    monkeypatch.setattr(uniquejobs.Unique, "perform", lambda self, value: ran.append(value))
    with testing.fake() as jobs:
        setter = uniquejobs.Unique.set(client=client)
        assert setter.perform_async(1) and setter.perform_async(1) is None
        assert [j is None for j in setter.perform_bulk([[1], [2], [2]])] == [True, False, True]
        assert [j["args"] for j in jobs.jobs()] == [[1], [2]] and jobs.jobs()[0]["unique_digest"]
        assert jobs.drain() == 2 and ran == [1, 2] and setter.perform_async(1)  # ran: released
        assert jobs.clear() == 1 and setter.perform_async(1)  # cleared: released
    with testing.inline():
        assert uniquejobs.Unique.perform_async(3) and uniquejobs.Unique.perform_async(3) and ran[-2:] == [3, 3]


def test_fake_mode_releases_at_start_or_after_the_run_and_keeps_the_lock_of_a_rescheduled_job(monkeypatch):
    from sidepunch import testing
    sidepunch.configure("redis://127.0.0.1:1/0")
    pushed = []

    def push_again(self, value, seconds):
        if value != "x" or len(pushed) < 2:  # each of the first two runs pushes its own duplicate
            pushed.append(type(self).perform_async(value, seconds))
        if value == "later":
            raise Reschedule(60)
        if value == "boom":
            raise RuntimeError("boom")

    monkeypatch.setattr(uniquejobs.SlowUnique, "perform", push_again)
    with testing.fake() as jobs:
        uniquejobs.SlowUnique.perform_async("x", 0)
        uniquejobs.UniqueUntilStart.perform_async("x", 0)
        assert jobs.drain() == 3  # the until-start job's own duplicate was kept (released at start), and ran
        assert [j is None for j in pushed] == [True, False]  # the other's was refused (held until success)
        pushed.clear()
        uniquejobs.SlowUnique.perform_async("boom", 0)
        with pytest.raises(RuntimeError):
            jobs.drain()
        assert uniquejobs.SlowUnique.perform_async("boom", 0)  # raised: gone from the store, lock released
        jobs.clear()
        uniquejobs.SlowUnique.perform_async("later", 0)
        assert jobs.drain() == 1 and len(jobs) == 1  # rescheduled: still kept, lock still held
        assert uniquejobs.SlowUnique.perform_async("later", 0) is None


def test_unique_jobs_pushed_in_a_batch_take_their_lock_and_the_batch_still_completes(r, redis_server, monkeypatch):
    """A duplicate refused inside `with batch:` is not counted in the batch (the client reports the write's
    outcome to it), so the batch completes with the jobs that were written, its callback once; more cases in
    test_unique_batch.py."""
    import batchjobs
    from sidepunch.features.batch import BatchFeature
    from sidepunch.features import FeatureSet
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    sidepunch.configure(redis_server.url)
    batch = sidepunch.Batch(description="unique inside", on_success=batchjobs.Callback)
    with batch:
        jids = [uniquejobs.Unique.perform_async("b") for _ in range(2)] + uniquejobs.Unique.perform_bulk([["b"]])
    assert jids[0] and jids[1:] == [None, None] and r.llen("queue:default") == 1 and len(locks(r)) == 1
    assert r.hget(keys.batch(batch.bid), "total") == b"1"
    context = MiddlewareContext(r)
    proc = conftest.make_processor(r, "uniquejobs", IDENTITY,
                                   features=FeatureSet([BatchFeature(context), UniqueFeature(context)]))
    proc.ctx.resolver.resolve = lambda name: batchjobs.Callback if "Callback" in name else uniquejobs.Unique
    for _ in range(2):  # the one job, then the success callback
        assert run_next(proc) is Outcome.DONE
    assert r.lrange("batchtest:cb:success", 0, -1) == [batch.bid.encode()] and r.llen("queue:default") == 0
    assert not locks(r) and uniquejobs.Unique.perform_async("b") and uniquejobs.Unique.perform_async("b") is None


def test_a_rate_limited_job_keeps_its_lock_and_an_expired_one_loses_it_at_its_deadline(r, client):
    proc = processor(r)  # every built-in feature: batch, expiry, limits, unique (innermost)
    assert client.push({"class": uniquejobs.LimitedUnique, "args": ["first"]})
    assert client.push({"class": uniquejobs.LimitedUnique, "args": ["second"]})
    assert run_next(proc) is Outcome.DONE and run_next(proc) is Outcome.RATE_LIMITED
    assert r.zcard("schedule") == 1 and len(locks(r)) == 1  # the second waits in the schedule, lock held
    assert client.push({"class": uniquejobs.LimitedUnique, "args": ["second"]}) is None
    assert client.push({"class": uniquejobs.Unique, "args": ["exp"], "expires_in": 0.3, "unique_for": 60})
    time.sleep(0.4)
    assert run_next(proc) is Outcome.EXPIRED and len(locks(r)) == 1  # its lock ended with its deadline
    assert client.push({"class": uniquejobs.Unique, "args": ["exp"], "unique_for": 60})


def test_a_job_crash_recovery_kills_releases_its_lock(r, client):
    """A poison pill (its worker died under it max_interruptions times) goes to the dead set in crash recovery,
    where no on_death hook runs: it dies like any other dead job, so its lock goes (docs/features/unique.md: dead
    -> released) and a duplicate can be pushed again; a lock another job took since is left alone."""
    from sidepunch.server.recovery import RecoveryPolicy, recover_lists
    jid = client.push({"class": uniquejobs.Unique, "args": ["poison"]})
    other = client.push({"class": uniquejobs.Unique, "args": ["other"]})
    assert jid and other and len(locks(r)) == 2
    raws = [r.rpop("queue:default"), r.rpop("queue:default")]
    other_lock = next(k for k, v in locks(r).items() if other.encode() in v)
    r.set(other_lock, b'["someone-else","uniquejobs.Unique"]')  # its lock lapsed and a duplicate took it
    working = b"working:queue:default:host:1:abc.0"
    r.lpush(working, *raws)
    policy = RecoveryPolicy(max_interruptions=1, dead_max_jobs=1000, dead_timeout=1e9)
    found = recover_lists(r, [(b"queue:default", working)], policy, True, "SIGKILL")
    assert found.killed == 2 and r.zcard("dead") == 2
    assert list(locks(r).values()) == [b'["someone-else","uniquejobs.Unique"]']
    assert client.push({"class": uniquejobs.Unique, "args": ["poison"]})
