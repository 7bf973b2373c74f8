"""The batch state machine (core/lua/batch_*.lua) under many generated orders of events: registrations before
or after the jobs' endings, endings reported twice (a job rerun after a crash), failures then successes,
deaths. Whatever the order, each callback is pushed at most once, exactly when the batch's final state calls for
it, and the counters match the jobs' final states. Against a real redis-server."""
import json
import random

import pytest

from sidepunch.core import keys
from sidepunch.features.batch import Store

EVENTS = ("success", "failure", "death")


def lives(rng, n):
    """Each jid's reported endings, in its order (a failure or death may precede a success; any may repeat)."""
    out = {}
    for i in range(n):
        life = [rng.choice(EVENTS) for _ in range(rng.randrange(0, 4))]
        if rng.random() < 0.3 and life:
            life.append(life[-1])  # reported twice
        out[f"jid{i:03}"] = life
    return out


def callbacks(r):
    pushed = [json.loads(p) for p in r.lrange("queue:cb", 0, -1)]
    return sorted(p["args"][1]["event"] for p in pushed)


def settings():
    mark = "m" * 8
    template = json.dumps({"class": "CB", "queue": "cb", "args": f"args{mark}", "jid": f"jid{mark}",
                           "created_at": f"now{mark}", "enqueued_at": f"now{mark}"})
    out = {"description": "states", "mark": mark, "parent": ""}
    for event in ("success", "complete", "death"):
        out[f"cb_{event}"], out[f"cbq_{event}"] = template, "cb"
    return out


@pytest.mark.parametrize("seed", range(60))
def test_any_order_of_events_pushes_each_callback_once_when_due(r, seed):
    rng = random.Random(seed)
    store, bid = Store(r), f"batch{seed:04}xx"
    jobs = lives(rng, rng.randrange(0, 6))
    steps = [(jid, event) for jid, life in jobs.items() for event in life]
    rng.shuffle(steps)
    steps = _keep_each_jobs_order(steps, jobs)  # the jobs interleave; each one's endings stay in its order
    close_at = rng.randrange(0, len(steps) + 1)
    store.open(bid, True, settings())
    for i, (jid, event) in enumerate(steps):
        if i == close_at:
            store.close(bid, "close", list(jobs))
        store.mark(bid, jid, event)
    if close_at == len(steps):
        store.close(bid, "close", list(jobs))
    ended = [jid for jid, life in jobs.items() if life]
    succeeded = [jid for jid, life in jobs.items() if "success" in life]
    failing = [jid for jid, life in jobs.items() if life and "success" not in life]
    expected = (["complete"] if len(ended) == len(jobs) else []) + \
               (["death"] if any("death" in life for life in jobs.values()) else []) + \
               (["success"] if len(succeeded) == len(jobs) else [])
    assert callbacks(r) == sorted(expected), (jobs, close_at)
    meta = {k.decode(): v.decode() for k, v in r.hgetall(keys.batch(bid)).items()}
    assert int(meta["total"]) == len(jobs) and int(meta["pending"]) == len(jobs) - len(succeeded)
    assert int(meta["failures"]) == len(failing) and int(meta["finished"]) == len(ended)
    jids = {json.loads(p)["jid"] for p in r.lrange("queue:cb", 0, -1)}
    assert len(jids) == len(expected)  # one jid per event, never the same twice


def _keep_each_jobs_order(steps, jobs):
    """The shuffled steps with each job's endings put back in that job's own order."""
    queues = {jid: list(life) for jid, life in jobs.items()}
    return [(jid, queues[jid].pop(0)) for jid, _ in steps]
