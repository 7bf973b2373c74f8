"""Operating periodic entries: sidepunch.api.PeriodicSet and `sidepunch periodic` over what schedulers registered:
listing (next run, last run and jid, enabled), lapsed registrations disappearing, enable/disable honoured by the
scheduler, run now, and hostile registrations."""
from __future__ import annotations

import json

import pytest

from sidepunch import api
from sidepunch.core import keys
from sidepunch.core.periodic import PeriodicEntry
from test_periodic import T0, Clock, enqueued, every2, make


def registered(r, clock, entries=None):
    s = make(r, entries or [every2(args=[3]), PeriodicEntry(name="nightly", cron="0 3 * * *",
                                                             job="periodicjobs.Plain", tz="Europe/Paris")], clock)
    s.look()
    return s


def test_list_shows_schedule_zone_next_and_last_run(r):
    clock = Clock(T0)
    registered(r, clock)
    infos = {i.name: i for i in api.PeriodicSet(r, clock=clock)}
    assert set(infos) == {"every2", "nightly"}
    e2 = infos["every2"]
    assert e2.entry.cron == "*/2 * * * * *" and e2.enabled and e2.next_run == T0 + 2
    assert e2.last_run == T0 and e2.last_jid == enqueued(r)[-1]["jid"]
    night = infos["nightly"]
    assert night.entry.tz == "Europe/Paris" and night.last_run is None and night.next_run > T0
    assert night.to_dict()["cron"] == "0 3 * * *"


def test_entries_no_daemon_renews_disappear(r):
    clock = Clock(T0)
    registered(r, clock)
    assert len(api.PeriodicSet(r, clock=Clock(T0 + 59)).list()) == 2
    assert api.PeriodicSet(r, clock=Clock(T0 + 61)).list() == []


def test_disable_and_enable_are_honoured_by_the_scheduler(r):
    clock = Clock(T0)
    s = registered(r, clock)
    ps = api.PeriodicSet(r, clock=clock)
    assert ps.disable("every2") is True and ps.get("every2").enabled is False
    before = len(enqueued(r))
    clock.now += 4
    s.look()
    assert len(enqueued(r)) == before
    assert ps.enable("every2") is True
    clock.now += 2
    s.look()
    assert len(enqueued(r)) > before
    assert ps.disable("nope") is False and ps.enable("nope") is False
    assert not r.sismember(keys.PERIODIC_DISABLED, "nope")


def test_run_now_pushes_the_job_with_its_options(r):
    clock = Clock(T0)
    registered(r, clock)
    jid = api.PeriodicSet(r, clock=clock).run("nightly")
    job = next(j for j in enqueued(r) if j["jid"] == jid)
    assert job["class"] == "periodicjobs.Plain" and job["periodic_name"] == "nightly" and "periodic_tick" not in job
    assert job["queue"] == "default" and job["retry"] is True
    assert api.PeriodicSet(r, clock=clock).run("nope") is None


@pytest.mark.parametrize("raw", [b"\xff", b"[]", b"{}", b'{"name": "bad", "cron": "99 * * * *", "job": "x"}',
                                 b'{"name": "bad", "cron": "* * * * *", "job": "x", "tz": "Nowhere"}'])
def test_hostile_registrations_list_as_broken(r, raw, cli):
    r.hset(keys.PERIODIC_ENTRIES, "bad", raw)
    r.zadd(keys.PERIODIC_SEEN, {"bad": 10**12})
    r.hset(keys.PERIODIC_LAST, "bad", b'{"tick": 1e999, "jid": 5}')
    (info,) = api.PeriodicSet(r).list()
    assert info.entry is None and info.problem and info.last_run is None and info.last_jid is None
    assert api.PeriodicSet(r).run("bad") is None
    status, out, _ = cli("periodic")
    assert status == 0 and "bad" in out


def test_cli_list_enable_disable_run(r, cli):
    registered(r, Clock(__import__("time").time()))
    status, out, _ = cli("periodic")
    assert status == 0 and "every2" in out and "*/2 * * * * *" in out and "Europe/Paris" in out
    status, out, _ = cli("periodic", "list", "--json")
    rows = {row["name"]: row for row in json.loads(out)}
    assert rows["every2"]["enabled"] is True and rows["every2"]["last_jid"]
    assert cli("periodic", "disable", "every2")[0] == 0 and r.sismember(keys.PERIODIC_DISABLED, "every2")
    assert cli("periodic", "enable", "every2")[0] == 0 and not r.sismember(keys.PERIODIC_DISABLED, "every2")
    status, out, _ = cli("periodic", "run", "nightly")
    assert status == 0 and out.strip() in {j["jid"] for j in enqueued(r)}
    assert cli("periodic", "run", "missing")[0] == 1
    assert cli("periodic", "disable")[0] == 2
