"""Rate limits (sidepunch.limits) against a real redis-server: the three kinds' scripts on Redis's clock, all or
none, leases that run out and are renewed, acquire() in sync and async code, the API's view and reset, and
hostile definitions refused when a job class is defined."""
import asyncio
import math
import threading
import time

import pytest

import sidepunch
from sidepunch.api import LimitSet
from sidepunch.core import keys, limiting
from sidepunch.limits import Bucket, Concurrent, OverLimit, Window, check_limits
from sidepunch.core.middleware import RateLimited


@pytest.fixture(autouse=True)
def default_client_on_test_redis(r):
    sidepunch.configure(redis=r)
    yield
    sidepunch.configure(redis=r)


def take(r, limiters, token, who=None):
    import random
    return limiting.take(r, limiting.Scripts().acquire, limiters, token, who or token, random.Random(1))[0]


def sliding_max(times, span):
    """The most of `times` inside any half-open interval [t, t + span)."""
    times = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while times[lo] <= t - span:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


# --- hostile definitions ----------------------------------------------------------------------------------------

BAD_NAMES = ["", " x", "x y", "a\nb", "a\x00", "é", "x" * 101, "-lead", "a/b", "a*", 5, None, b"bytes", ["a"]]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_hostile_names_are_refused(name):
    for make in (lambda: Concurrent(name, 1), lambda: Window(name, 1, per=1), lambda: Bucket(name, 1, 1)):
        with pytest.raises((TypeError, ValueError)):
            make()


BAD_VALUES = [0, -1, 1.5, True, math.nan, math.inf, "3", None, 10 ** 7, [1]]


@pytest.mark.parametrize("value", BAD_VALUES, ids=repr)
def test_hostile_values_are_refused(value):
    makers = [lambda: Concurrent("n", value), lambda: Concurrent("n", 1, lease=value),
              lambda: Window("n", value, per=1), lambda: Window("n", 1, per=value),
              lambda: Bucket("n", value, 1), lambda: Bucket("n", 1, value)]
    refused = 0
    for make in makers:
        try:
            make()
        except (TypeError, ValueError):
            refused += 1
    # 1.5 is a fine lease, per and rate, and True/1.5 no count; every other value is refused everywhere
    expected = 3 if type(value) is float and value == 1.5 else 6
    assert refused == expected


def test_a_short_lease_is_refused_and_limiters_are_immutable():
    with pytest.raises(TypeError):
        Concurrent("n", 1, lease=0.5)
    limiter = Window("n", 2, per=1)
    with pytest.raises(AttributeError):
        limiter.name = "other"
    assert limiter == Window("n", 2, per=1.0) and hash(limiter) == hash(Window("n", 2, per=1))


@pytest.mark.parametrize("limits", ["api", [1], [Concurrent], ["a"], {"a": 1}, [Window("a", 1), Bucket("a", 1, 1)],
                                    [Window(f"w{i}", 1) for i in range(17)], Concurrent("x", 1)], ids=repr)
def test_hostile_limits_are_refused_at_class_definition(limits):
    with pytest.raises((TypeError, ValueError)):
        type("Hostile", (sidepunch.Job,), {"limits": limits, "perform": lambda self: None})
    with pytest.raises((TypeError, ValueError)):
        sidepunch.job(limits=limits)(lambda: None)


def test_good_limits_are_accepted_as_list_or_tuple():
    for limits in ([Concurrent("a", 2)], (Window("w", 10, per=1), Bucket("b", 2.5, 5))):
        cls = type("Fine", (sidepunch.Job,), {"limits": limits, "perform": lambda self: None})
        assert check_limits(cls.limits, "Fine") == tuple(limits)


# --- the scripts ------------------------------------------------------------------------------------------------

def test_concurrent_admits_limit_holders_and_a_release_frees_one(r):
    limiter = Concurrent("c", 2, lease=30)
    assert take(r, [limiter], "t1") is None and take(r, [limiter], "t2") is None
    refusal = take(r, [limiter], "t3")
    assert refusal.limiter == "c" and refusal.delay > 0 and refusal.waiting == 1
    assert limiting.give_back(r, limiting.Scripts().release, [limiter], "t1", 0.5) == [1]
    assert take(r, [limiter], "t3") is None
    assert r.zcard(keys.limit_waiting("c")) == 0  # a slot taken: no longer waiting


def test_a_lease_nobody_renews_runs_out(r):
    limiter = Concurrent("lease", 1, lease=1)
    assert take(r, [limiter], "vanished") is None  # its holder never renews nor releases it
    assert take(r, [limiter], "next") is not None
    time.sleep(1.1)
    assert take(r, [limiter], "next") is None


def test_a_held_lease_is_renewed_past_its_length(r):
    limiter = Concurrent("renewed", 1, lease=1)
    with limiter.acquire(wait=0):
        for _ in range(5):
            time.sleep(0.5)
            with pytest.raises(OverLimit):
                with limiter.acquire(wait=0):
                    pass
    with limiter.acquire(wait=0):  # given back at the end of the block
        pass


def test_window_slides_on_redis_time(r):
    limiter = Window("w", 3, per=0.5)
    assert all(take(r, [limiter], f"t{i}") is None for i in range(3))
    refusal = take(r, [limiter], "t3")
    assert refusal is not None and 0 < refusal.delay <= 0.5 + 0.5 * 1 / 3 * 3
    time.sleep(0.55)
    assert take(r, [limiter], "t4") is None


def test_window_never_admits_more_than_limit_in_any_span_under_contention(r, redis_server):
    """Eight threads hammer a 10-per-0.5s window for 1.6 s; the admission times the script wrote (read from the
    window's log before they leave it) hold at most 10 in any half-open 0.5 s span."""
    import redis as redis_lib
    limiter = Window("hammer", 10, per=0.5)
    seen, stop = {}, threading.Event()

    def watch():
        watcher = redis_lib.Redis.from_url(redis_server.url)
        while not stop.is_set():
            seen.update(watcher.zrange(limiter.state_key, 0, -1, withscores=True))
            time.sleep(0.05)

    def hammer(n):
        client = redis_lib.Redis.from_url(redis_server.url)
        end = time.monotonic() + 1.6
        while time.monotonic() < end:
            take(client, [limiter], f"{n}-{time.monotonic_ns()}")
            time.sleep(0.002)

    threads = [threading.Thread(target=watch)] + [threading.Thread(target=hammer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads[1:]:
        t.join()
    time.sleep(0.1)
    stop.set()
    threads[0].join()
    assert len(seen) >= 30  # about 10 per half second were admitted
    assert sliding_max(seen.values(), 0.5) == 10


def test_bucket_gives_its_burst_then_its_rate(r):
    limiter = Bucket("b", 2, 5)
    granted = [take(r, [limiter], f"t{i}") is None for i in range(8)]
    assert granted == [True] * 5 + [False] * 3  # the burst at once, then empty
    refusal = take(r, [limiter], "x")
    assert 0 < refusal.delay
    time.sleep(1.75)  # 3.5 tokens refilled at 2/s
    granted = [take(r, [limiter], f"u{i}") is None for i in range(5)]
    assert granted == [True] * 3 + [False] * 2


def test_bucket_never_passes_burst_plus_rate(r):
    limiter = Bucket("rate", 20, 2)
    count, start = 0, time.monotonic()
    while time.monotonic() < start + 1.0:
        count += take(r, [limiter], f"t{time.monotonic_ns()}") is None
        time.sleep(0.002)
    elapsed = time.monotonic() - start
    assert 10 <= count <= 2 + 20 * elapsed + 1  # at most burst + rate x time; about that when polled often


def test_several_limiters_are_taken_all_or_none(r):
    free, full = Concurrent("free", 1), Window("full", 1, per=30)
    assert take(r, [full], "first") is None
    refusal = take(r, [free, full], "job")
    assert refusal.limiter == "full"
    assert r.zcard(free.state_key) == 0  # the free one was not taken either
    assert take(r, [free], "other") is None


def test_conflicting_definitions_share_the_state_and_are_reported(r):
    assert take(r, [Window("shared", 1, per=30)], "a") is None
    import random
    refusal, conflicts = limiting.take(r, limiting.Scripts().acquire, [Window("shared", 2, per=30)], "b", "b",
                                       random.Random())
    assert refusal is None and conflicts == ["shared"]  # the second definition allows 2: one more
    assert LimitSet(r).get("shared").definition == {"limit": 2, "per": 30.0}


# --- acquire() ----------------------------------------------------------------------------------------------------

def test_acquire_waits_then_raises_over_limit_with_a_reschedule(r):
    limiter = Concurrent("busy", 1)
    with limiter.acquire():
        started = time.monotonic()
        with pytest.raises(OverLimit) as caught:
            with limiter.acquire(wait=0.4):
                pass
        assert 0.35 <= time.monotonic() - started < 3
    assert caught.value.limiter == "busy" and caught.value.retry_in > 0
    resched = caught.value.reschedule()
    assert isinstance(resched, RateLimited) and resched.limiter == "busy"
    assert r.zcard(keys.limit_waiting("busy")) == 0  # it gave up: not waiting any more


def test_acquire_waits_for_a_window_slot(r):
    limiter = Window("wait", 2, per=0.5)
    times = []
    for _ in range(5):
        with limiter.acquire(wait=5):
            times.append(time.monotonic())
    assert times[-1] - times[0] >= 0.9  # 5 admissions at 2 per 0.5 s need two full windows


def test_async_acquire_holds_a_slot(r):
    limiter = Concurrent("async", 1)

    async def main():
        async with limiter.acquire(wait=0):
            with pytest.raises(OverLimit):
                async with limiter.acquire(wait=0.2):
                    pass
        async with limiter.acquire(wait=0):
            return LimitSet(r).get("async").in_use

    assert asyncio.run(main()) == 1
    assert LimitSet(r).get("async").in_use == 0


# --- the API ------------------------------------------------------------------------------------------------------

def test_limit_set_shows_state_and_reset_clears_it(r):
    c, w, b = Concurrent("api-c", 3), Window("api-w", 5, per=10), Bucket("api-b", 1, 4)
    for i in range(2):
        assert take(r, [c, w, b], f"t{i}") is None
    assert take(r, [Concurrent("api-c", 3)], "t2") is None
    take(r, [Window("api-full", 1, per=30)], "x")
    take(r, [Window("api-full", 1, per=30)], "jid-1")
    rows = {info.name: info for info in LimitSet(r)}
    assert set(rows) == {"api-c", "api-w", "api-b", "api-full"}
    assert (rows["api-c"].in_use, rows["api-c"].available) == (3, 0)
    assert (rows["api-w"].in_use, rows["api-w"].available) == (2, 3)
    assert rows["api-b"].in_use == 2 and 2 <= rows["api-b"].available < 2.2
    assert rows["api-full"].waiting == 1 and rows["api-full"].describe() == "1 per 30s"
    assert LimitSet(r).reset("api-c") and LimitSet(r).get("api-c").in_use == 0
    assert LimitSet(r).reset("api-full", forget=True) and LimitSet(r).get("api-full") is None


def test_limit_set_lists_unreadable_registrations_without_raising(r):
    r.hset(keys.LIMITS, mapping={"junk": b"\xff{", "nokind": '{"kind":"x"}', "nonum": '{"kind":"window"}',
                                 b"\xfe": '{"kind":"window","limit":1,"per":1}'})
    r.set(keys.limit_state("window", "typed"), "a string")
    r.hset(keys.LIMITS, "typed", '{"kind":"window","limit":1,"per":1}')
    rows = {info.name: info for info in LimitSet(r)}
    assert all(rows[n].problem for n in ("junk", "nokind", "nonum", "typed"))
    assert rows["\ufffd"].problem == "" and rows["\ufffd"].kind == "window"


def test_acquire_leaves_no_thread_behind(r):
    limiter = Concurrent("threads", 1, lease=30)
    before = threading.active_count()
    for _ in range(20):
        with limiter.acquire(wait=0):
            pass
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() == before


def test_the_renewal_thread_lingers_then_ends_and_comes_back(r):
    limiter = Concurrent("linger", 1, lease=1)
    leases = limiting.Leases(lambda: r, limiting.Scripts().release, linger=0.3)
    before = threading.active_count()
    for round_ in range(2):
        assert take(r, [limiter], f"t{round_}") is None
        leases.hold(f"t{round_}", [limiter])
        time.sleep(1.5)  # past the lease: renewed, so still held
        assert take(r, [limiter], "other") is not None
        assert leases.drop(f"t{round_}") and not leases.drop(f"t{round_}")
        limiting.give_back(r, limiting.Scripts().release, [limiter], f"t{round_}", 1.5)
        time.sleep(0.6)
        assert threading.active_count() == before  # lingered 0.3 s, then ended


def test_a_reset_while_held_is_logged_once_and_the_block_still_ends_cleanly(r, caplog):
    limiter = Concurrent("reset-held", 1, lease=1)
    with limiter.acquire(wait=0):
        LimitSet(r).reset("reset-held")
        with limiter.acquire(wait=0):  # the reset freed the slot: another holder gets it
            time.sleep(1.2)  # three renewals of each
    lost = [rec for rec in caplog.records if "lost its concurrency slot" in rec.getMessage()]
    assert len(lost) == 1
    assert LimitSet(r).get("reset-held").in_use == 0


def test_names_idle_for_the_registry_ttl_leave_it(r):
    for i in range(12):
        assert take(r, [Window(f"tenant-{i}", 5, per=1)], f"t{i}") is None
    r.zadd(keys.LIMITS_SEEN, {f"tenant-{i}": 1000.0 for i in range(12)})  # last used long ago
    assert take(r, [Window("fresh", 5, per=1)], "x") is None
    assert len(LimitSet(r).names()) == 3  # ten dropped per take: two old ones and the fresh one are left
    assert take(r, [Window("fresh", 5, per=1)], "y") is None
    assert LimitSet(r).names() == ["fresh"] and r.zrange(keys.LIMITS_SEEN, 0, -1) == [b"fresh"]
