"""Periodic jobs across real daemons: three sidepunchd on one Redis run `*/2 * * * * *` for about 20 s, one is
SIGKILLed and another restarted meanwhile, and every tick is enqueued exactly once (one jid per tick, no gap).
Prints the tick-to-enqueue delay (enqueued_at minus the tick), p50 and p99."""
from __future__ import annotations

import json
import signal
import time

from conftest import wait_for

ARGS = ("--workers", "2", "--threads", "2", "-r", "periodicjobs", "--middleware", "periodicjobs.record_tick",
        "--timeout", "2")


def runs(r):
    """tick -> set of jids, and jid -> delay, from what the jobs recorded."""
    jids: dict[int, set[str]] = {}
    delays: dict[str, float] = {}
    for raw in r.lrange("periodic-runs", 0, -1):
        name, tick, enqueued_at, jid, _pid = json.loads(raw)
        if name == "every2":
            jids.setdefault(tick, set()).add(jid)
            delays.setdefault(jid, enqueued_at - tick)
    return jids, delays


def test_three_daemons_enqueue_every_tick_exactly_once_through_a_kill_and_a_restart(daemon, r):
    started = time.time()
    daemons = [daemon(*ARGS) for _ in range(3)]
    for d in daemons:
        d.wait_children(2)
    booted = time.time() + 1
    time.sleep(6)
    daemons[0].kill_group()  # SIGKILL, master and workers, by the master's pid
    time.sleep(4)
    daemons[1].signal(signal.SIGTERM)
    assert daemons[1].wait() == 0
    restarted = daemon(*ARGS)
    restarted.wait_children(2)
    time.sleep(20 - (time.time() - started))
    end = int(time.time()) - 3  # ticks up to here have had time to be enqueued and run
    wait_for(lambda: max(runs(r)[0], default=0) >= end, 15, message="the last ticks to run")
    jids, delays = runs(r)
    ticks = sorted(t for t in jids if t <= end)
    assert all(len(jids[t]) == 1 for t in ticks), {t: jids[t] for t in ticks if len(jids[t]) > 1}
    assert ticks == list(range(ticks[0], ticks[-1] + 2, 2))  # no tick missing, none doubled
    assert ticks[0] <= started + 2 and ticks[-1] >= end - 2 and len(ticks) >= 10
    assert all(delay >= 0 for delay in delays.values())  # never enqueued before its tick
    # the delay once the first daemon runs (ticks of the 10 s before it are caught up late, on purpose)
    values = sorted(delays[next(iter(jids[t]))] for t in ticks if t > booted)
    p50, p99 = values[len(values) // 2], values[min(len(values) - 1, int(len(values) * 0.99))]
    print(f"periodic tick-to-enqueue delay over {len(values)} ticks: p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms")


BAD_ENTRIES = {
    "bad expression": ('[[periodic]]\nname = "n1"\ncron = "61 * * * *"\njob = "periodicjobs.Plain"\n', "'n1'"),
    "unknown zone": ('[[periodic]]\nname = "n2"\ncron = "@daily"\njob = "periodicjobs.Plain"\ntz = "Mars/Base"\n',
                     "'n2'"),
    "bad policy": ('[[periodic]]\nname = "n3"\ncron = "@daily"\njob = "periodicjobs.Plain"\nmissed = "twice"\n',
                   "entry 1 key missed"),
    "duplicate names": ('[[periodic]]\nname = "n4"\ncron = "@daily"\njob = "periodicjobs.Plain"\n' * 2, "'n4'"),
    "unknown key": ('[[periodic]]\nname = "n5"\ncron = "@daily"\njob = "x.Y"\nevery = 3\n', "'every'"),
}


def test_bad_entries_stop_the_daemon_with_status_2_and_one_line(daemon, tmp_path):
    for case, (text, named) in BAD_ENTRIES.items():
        path = tmp_path / f"{case.replace(' ', '-')}.toml"
        path.write_text(text)
        d = daemon("-C", str(path), "-r", "periodicjobs")
        assert d.wait() == 2, case
        lines = d.log().strip().splitlines()
        assert len(lines) == 1 and "periodic" in lines[0] and named in lines[0], (case, lines)


#: Entries only the imported app can refuse: the worker says why in one line, the master stops with status 2.
APP_REFUSED = {
    "unknown job": ('[[periodic]]\nname = "n6"\ncron = "@daily"\njob = "periodicjobs.Nowhere"\n',
                    "'n6': its job 'periodicjobs.Nowhere' cannot be found"),
    "a name the code declares": ('[[periodic]]\nname = "every2"\ncron = "@daily"\njob = "periodicjobs.Plain"\n',
                                 "'every2' is declared twice"),
}


def test_entries_the_app_refuses_stop_the_daemon_with_status_2(daemon, tmp_path):
    for case, (text, named) in APP_REFUSED.items():
        path = tmp_path / f"{case.replace(' ', '-')}.toml"
        path.write_text(text)
        d = daemon("-C", str(path), "-r", "periodicjobs", "--workers", "1")
        assert d.wait() == 2, case
        errors = [line for line in d.log().splitlines() if " ERROR " in line]
        assert any(named in line for line in errors), (case, errors)
        assert "Traceback" not in d.log()
