"""The heartbeat flushes the job counters exactly once, even when the rest of a beat fails (real Redis)."""
import redis

from sidepunch.server.heartbeat import Heartbeat
from conftest import make_pool


def test_counts_that_landed_are_not_given_back_when_the_rest_of_the_beat_fails(r, monkeypatch):
    pool, _ = make_pool(r)
    ctx = pool.ctx
    beat = Heartbeat(ctx, {"hostname": "h"}, on_signal=lambda name: None)
    ctx.counters.record(failed=False)
    ctx.counters.record(failed=True)

    def refused():
        raise redis.ConnectionError("the connection dropped after the counts landed")
    monkeypatch.setattr(ctx.redis, "ping", refused)
    assert beat.beat() is False
    monkeypatch.undo()
    assert beat.beat() is True
    assert int(r.get("stat:processed")) == 2 and int(r.get("stat:failed")) == 1


def test_counts_that_did_not_land_are_flushed_at_the_next_beat(r, monkeypatch):
    pool, _ = make_pool(r)
    ctx = pool.ctx
    beat = Heartbeat(ctx, {"hostname": "h"}, on_signal=lambda name: None)
    ctx.counters.record(failed=False)
    real_pipeline = ctx.redis.pipeline
    monkeypatch.setattr(ctx.redis, "pipeline", lambda *a, **k: (_ for _ in ()).throw(redis.ConnectionError("down")))
    assert beat.beat() is False
    monkeypatch.setattr(ctx.redis, "pipeline", real_pipeline)
    assert beat.beat() is True
    assert int(r.get("stat:processed")) == 1
