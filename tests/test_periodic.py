"""The periodic scheduler (sidepunch/server/periodic.py) with fake clocks on a real Redis: exactly once per tick
across schedulers with skewed clocks, the missed-tick policies, disabled entries, registration, and declaring
entries in code (@sidepunch.periodic) and in the config file."""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest

import sidepunch
from sidepunch.client.periodic import ATTRIBUTE, declared
from sidepunch.core import keys
from sidepunch.core.connection import Outage
from sidepunch.core.periodic import PeriodicEntry
from sidepunch.server.config import build_config
from sidepunch.server.fetch import ReliableFetch
from sidepunch.server.periodic import LOOKBACK, PeriodicScheduler, Scheduled, load_entries
from sidepunch.server.resolver import JobResolver
from sidepunch.server.retry import DeadSet, RetryPolicy
from sidepunch.server.state import ChildContext, LifecycleState

sys.path.insert(0, str(Path(__file__).parent / "apps"))
import periodicjobs  # noqa: E402

T0 = 1_800_000_000  # a whole, even second


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make(r, entries, clock, identity="h:1:a", config_args=()):
    config = build_config(["-r", "periodicjobs", *config_args], {"REDIS_URL": "redis://unused"})
    dead = DeadSet(config.dead_max_jobs, config.dead_timeout)
    ctx = ChildContext(redis=r, config=config, identity=identity, state=LifecycleState(),
                       outage=Outage("redis://x", logging.getLogger("test")), resolver=JobResolver(["periodicjobs"]),
                       retry=RetryPolicy(r, dead, config.max_retries, ReliableFetch.ack_into))
    items = None if entries is None else [Scheduled(e, periodicjobs.Plain) for e in entries]
    return PeriodicScheduler(ctx, clock=clock, client=sidepunch.Client(redis=r), entries=items)


def enqueued(r, queue="default"):
    return [json.loads(raw) for raw in reversed(r.lrange(keys.queue(queue), 0, -1))]


def every2(**kw):
    return PeriodicEntry(**{"name": "every2", "cron": "*/2 * * * * *", "job": "periodicjobs.Plain", **kw})


def test_two_schedulers_with_skewed_clocks_enqueue_every_tick_once(r):
    ahead, behind = Clock(T0), Clock(T0 - 3.5)
    a = make(r, [every2(args=[7])], ahead, "h:1:a")
    b = make(r, [every2(args=[7])], behind, "h:2:b")
    for step in range(120):  # a minute, looked at twice a second, in a random-ish interleaving
        (a if step % 3 else b).look()
        (b if step % 3 else a).look()
        ahead.now += 0.5
        behind.now += 0.5
    jobs = enqueued(r)
    ticks = [j["periodic_tick"] for j in jobs]
    assert len(ticks) == len(set(ticks))  # none doubled
    # none dropped: every tick from the first look's window to the end of the minute, and nothing else
    assert sorted(ticks) == list(range(T0 - 12, T0 + 60, 2))  # the behind clock first looked back to T0-13.5
    assert all(j["periodic_name"] == "every2" and j["args"] == [7] and j["class"] == "periodicjobs.Plain"
               for j in jobs)
    last = json.loads(r.hget(keys.PERIODIC_LAST, "every2"))
    assert last["tick"] == max(ticks) and last["jid"] in {j["jid"] for j in jobs}


def test_a_changed_schedule_claims_its_own_keys(r):
    clock = Clock(T0)
    make(r, [every2()], clock, "h:1:a").look()
    before = len(enqueued(r))
    make(r, [every2(args=["new"])], clock, "h:2:b").look()  # same name and ticks, another fingerprint
    news = [j for j in enqueued(r) if j["args"] == ["new"]]
    assert before > 0 and len(news) == before


@pytest.mark.parametrize("missed, expected", [
    ("skip", []),
    ("latest", [T0 + 600]),
    ("all", [T0 + 60 * k for k in range(6, 11)]),
])
def test_missed_tick_policies(r, missed, expected):
    """Last enqueued at T0; no daemon until T0 + 10 min + 30 s; grace 5 min: ticks in the last 5 minutes count."""
    entry = PeriodicEntry(name="minutely", cron="* * * * *", job="periodicjobs.Plain", missed=missed, grace=300)
    r.hset(keys.PERIODIC_LAST, "minutely", json.dumps({"tick": T0, "jid": "x", "at": T0}))
    clock = Clock(T0 + 600 + 30)
    s = make(r, [entry], clock)
    s.look()
    s.look()  # a second look enqueues nothing more
    assert sorted(j["periodic_tick"] for j in enqueued(r)) == expected
    clock.now = T0 + 660
    s.look()
    assert sorted(j["periodic_tick"] for j in enqueued(r)) == expected + [T0 + 660]


def test_missed_ticks_of_a_restarted_fleet_are_enqueued_once(r):
    entry = PeriodicEntry(name="minutely", cron="* * * * *", job="periodicjobs.Plain", missed="all", grace=3600)
    r.hset(keys.PERIODIC_LAST, "minutely", json.dumps({"tick": T0, "jid": "x", "at": T0}))
    clock = Clock(T0 + 300)
    for n in range(3):  # three daemons start at once
        make(r, [entry], clock, f"h:{n}:x").look()
    assert sorted(j["periodic_tick"] for j in enqueued(r)) == [T0 + 60 * k for k in range(1, 6)]


@pytest.mark.parametrize("raw", [b"nope", b"[]", b'{"tick": "soon"}', b'{"tick": 1e400}', b'{"tick": 1e30}', b'{"tick": -5}', b"\xff"])
def test_a_hostile_last_record_reads_as_none(r, raw):
    entry = PeriodicEntry(name="minutely", cron="* * * * *", job="periodicjobs.Plain", missed="latest", grace=300)
    r.hset(keys.PERIODIC_LAST, "minutely", raw)
    make(r, [entry], Clock(T0 + 90 + LOOKBACK)).look()
    assert enqueued(r) == []  # as if never enqueued: nothing missed (T0 + 60 would be, after a real record)


def test_a_new_entry_does_not_catch_up_its_past(r):
    entry = PeriodicEntry(name="minutely", cron="* * * * *", job="periodicjobs.Plain", missed="all", grace=3600)
    make(r, [entry], Clock(T0 + 30)).look()
    assert enqueued(r) == []


def test_disabled_entries_enqueue_nothing_until_enabled(r):
    clock = Clock(T0)
    s = make(r, [every2()], clock)
    r.sadd(keys.PERIODIC_DISABLED, "every2")
    for _ in range(10):
        s.look()
        clock.now += 1
    assert enqueued(r) == []
    r.srem(keys.PERIODIC_DISABLED, "every2")
    s.look()
    clock.now += 2
    s.look()
    assert [j["periodic_tick"] for j in enqueued(r)] == [T0 + 10, T0 + 12]


def test_entries_are_registered_with_a_lapse_time(r):
    s = make(r, [every2(), every2(name="other", cron="@daily", tz="Europe/Paris")], Clock(T0))
    s.look()
    assert PeriodicEntry.from_json(r.hget(keys.PERIODIC_ENTRIES, "other")) == \
        every2(name="other", cron="@daily", tz="Europe/Paris")
    assert r.zscore(keys.PERIODIC_SEEN, "every2") == T0 + 60


def test_queue_and_push_middleware_apply(r):
    seen = []

    def mw(job, call_next):
        seen.append(job["periodic_tick"])
        return call_next(job)

    s = make(r, [every2(queue="cron")], Clock(T0))
    s._client = sidepunch.Client(redis=r, middleware=[mw])
    s.look()
    assert seen and [j["periodic_tick"] for j in enqueued(r, "cron")] == seen


def test_declared_in_code_on_classes_and_functions():
    found = {entry.name: (entry, cls) for entry, cls in declared()}
    entry, cls = found["every2"]
    assert cls is periodicjobs.Every2 and entry.cron == "*/2 * * * * *" and entry.job == "periodicjobs.Every2"
    entry, cls = found["daily-function"]
    assert cls is periodicjobs.daily_function.job_class and entry.args == [1, "x"] and entry.missed == "latest"

    class Child(periodicjobs.Every2):  # a subclass does not inherit the schedule
        pass
    assert ATTRIBUTE not in vars(Child)
    assert [e for e, c in declared() if c is Child] == []


def test_declaring_refuses_bad_targets_and_values():
    with pytest.raises(TypeError, match="Job subclass"):
        sidepunch.periodic("* * * * *")(lambda: None)
    with pytest.raises(ValueError, match="unknown time zone"):
        sidepunch.periodic("* * * * *", tz="Nowhere/Land")(periodicjobs.Plain)
    with pytest.raises(ValueError, match="missed"):
        sidepunch.periodic("* * * * *", missed="often")(periodicjobs.Plain)
    with pytest.raises(ValueError, match="bad cron"):
        sidepunch.periodic("99 * * * *")(periodicjobs.Plain)
    assert ATTRIBUTE not in vars(periodicjobs.Plain)


def test_config_entries_resolve_their_jobs_and_unknown_ones_are_logged(tmp_path, caplog):
    path = tmp_path / "sidepunch.toml"
    path.write_text('[[periodic]]\nname = "a"\ncron = "@hourly"\njob = "periodicjobs.Plain"\nargs = [1]\n'
                    '[[periodic]]\nname = "b"\ncron = "@hourly"\njob = "periodicjobs.Missing"\n'
                    '[[periodic]]\nname = "every2"\ncron = "@hourly"\njob = "periodicjobs.Plain"\n')
    config = build_config(["-C", str(path)], {})
    with caplog.at_level(logging.ERROR, "sidepunch.periodic"):
        items = load_entries(config.periodic, JobResolver(["periodicjobs"]).resolve, declared())
    names = {i.entry.name: i for i in items}
    assert names["a"].job is periodicjobs.Plain and names["every2"].job is periodicjobs.Plain  # the file's wins
    assert "b" not in names
    assert "'b' is not scheduled" in caplog.text and "'every2' is declared twice" in caplog.text


def test_a_process_schedules_what_its_require_packages_declare(r):
    ours = {i.entry.name for i in make(r, None, Clock(T0)).entries}
    assert {"every2", "daily-function"} <= ours
    other = make(r, None, Clock(T0), config_args=())
    other.ctx = type(other.ctx)(**{**vars(other.ctx), "config": build_config(["-r", "testjobs"], {})})
    assert other.entries == []
    assert [e.name for e, _ in declared(["testjobs"])] == []


@pytest.mark.parametrize("key", [keys.PERIODIC_DISABLED, keys.PERIODIC_LAST, keys.PERIODIC_ENTRIES,
                                 keys.PERIODIC_SEEN])
def test_keys_of_another_type_do_not_stop_the_schedule(r, key, caplog):
    r.set(key, "not mine")
    clock = Clock(T0)
    entry = every2(missed="all")
    s = make(r, [entry], clock)
    with caplog.at_level(logging.ERROR, "sidepunch.periodic"):
        for _ in range(6):
            s.look()
            clock.now += 1
            s._registered = 0  # register at every look: the complaint still comes once
    ticks = [j["periodic_tick"] for j in enqueued(r)]
    assert ticks == list(range(T0 - LOOKBACK + 2, T0 + 6, 2))
    messages = [rec.getMessage() for rec in caplog.records]
    assert 1 <= len(messages) <= 2 and len(set(messages)) == len(messages)  # once per operation refused
    assert "WRONGTYPE" in caplog.text and "Traceback" not in caplog.text
