"""Unique jobs inside batches, against a real redis-server: a unique job pushed inside `with batch:` takes its
lock, and a duplicate the write refused is never counted in the batch (the client reports each write's outcome
to the features through `FeatureSet.after_push`), so the batch completes with exactly the jobs written and its
callbacks run once. Also: the seam is not asked for plain pushes, a push whose write raised stays counted (it
may have landed), and deferred or buffered pushes keep the old rule (no lock inside a batch)."""
import asyncio
import json
import sys

import pytest

import sidepunch
from sidepunch import Outcome
from sidepunch.core import keys
from sidepunch.core.middleware import MiddlewareContext
from sidepunch.features import FeatureSet
from sidepunch.features.batch import BatchFeature
from sidepunch.features.unique import UniqueFeature
from sidepunch.client.unique import Locked
import conftest
from conftest import APPS

sys.path.insert(0, str(APPS))
import batchjobs  # noqa: E402
import uniquejobs  # noqa: E402

IDENTITY = "testhost:4321:0123456789ab"


@pytest.fixture(autouse=True)
def default_client_on_test_redis(r, redis_server, monkeypatch):
    monkeypatch.setenv("REDIS_URL", redis_server.url)  # where the test jobs record their runs
    sidepunch.configure(redis_server.url)  # a URL: the async pushes need one
    yield
    sidepunch.configure(redis=r)


@pytest.fixture
def proc(r):
    context = MiddlewareContext(r)
    proc = conftest.make_processor(r, "uniquejobs", IDENTITY,
                                   features=FeatureSet([BatchFeature(context), UniqueFeature(context)]))
    proc.ctx.resolver.resolve = lambda name: batchjobs.Callback if "Callback" in name else uniquejobs.Unique
    return proc


def locks(r):
    return {k: r.get(k) for k in r.scan_iter(keys.UNIQUE_PREFIX + "*")}


def members(r, bid):
    return {k.decode() for k in r.hkeys(keys.batch_members(bid))}


def total(r, bid):
    return int(r.hget(keys.batch(bid), "total") or 0)


def drain(proc, r):
    outcomes = []
    while any(r.llen(k) for k in r.keys("queue:*")):
        outcomes.append(proc.process(proc.fetcher.fetch()))
        assert len(outcomes) < 1000
    return outcomes


def new_batch():
    return sidepunch.Batch(description="unique", on_success=batchjobs.Callback, on_complete=batchjobs.Callback)


def finished_once(r, batch):
    return [r.lrange(f"batchtest:cb:{event}", 0, -1) for event in ("success", "complete")] == [[batch.bid.encode()]] * 2


def test_a_batch_with_duplicates_completes_with_exactly_the_written_jobs_and_its_callbacks_run_once(r, proc, client):
    batch = new_batch()
    with batch:
        pushed = [uniquejobs.Unique.perform_async(v) for v in ("a", "a", "b")]
        pushed.append(client.push({"class": uniquejobs.Unique, "args": ["b"]}))
        pushed += client.push_bulk([{"class": uniquejobs.Unique, "args": [v]} for v in ("c", "a", "c")])
        pushed.append(batchjobs.Work.perform_async("plain"))  # a plain job of the same batch counts as ever
    written = [jid for jid in pushed if jid]
    assert [jid is None for jid in pushed] == [False, True, False, True, False, True, True, False]
    assert members(r, batch.bid) == set(written) and total(r, batch.bid) == 4 and len(locks(r)) == 3
    assert {json.loads(p)["bid"] for p in r.lrange("queue:default", 0, -1)} == {batch.bid}
    proc.ctx.resolver.resolve = lambda name: {"Callback": batchjobs.Callback, "Work": batchjobs.Work}.get(
        name.rpartition(".")[2], uniquejobs.Unique)
    assert drain(proc, r) == [Outcome.DONE] * 6  # four jobs, then complete and success
    assert finished_once(r, batch) and not locks(r)
    status = json.loads(r.lindex("batchtest:status:success", 0))
    assert (status["total"], status["pending"], status["failures"]) == (4, 0, 0)


def test_perform_bulk_inside_a_batch_counts_only_the_jobs_not_refused(r, proc):
    assert uniquejobs.Unique.perform_async(2)  # held outside the batch: its duplicate in the bulk is refused
    batch = new_batch()
    with batch:
        jids = uniquejobs.Unique.perform_bulk([[1], [2], [1], [3], [4], [3]], batch_size=2)
    assert [jid is None for jid in jids] == [False, True, True, False, False, True]
    assert members(r, batch.bid) == {jid for jid in jids if jid} and total(r, batch.bid) == 3
    assert drain(proc, r) == [Outcome.DONE] * 6  # the job outside, three of the batch, two callbacks
    assert finished_once(r, batch)


def test_an_early_registration_never_registers_a_refused_duplicate(r, proc, monkeypatch):
    from sidepunch.features import batch as feature
    monkeypatch.setattr(feature, "FLUSH_EVERY", 2)
    batch = new_batch()
    with batch:
        jids = uniquejobs.Unique.perform_bulk([[1], [1], [1], [2], [2], [3]])
        single = [uniquejobs.Unique.perform_async(v) for v in (3, 4, 4)]
        assert total(r, batch.bid) >= 2 and r.hget(keys.batch(batch.bid), "opens") == b"1"
    written = {jid for jid in jids + single if jid}
    assert len(written) == 4 and members(r, batch.bid) == written
    drain(proc, r)
    assert finished_once(r, batch)


def test_the_async_client_reports_its_refusals_to_the_batch_too(r, proc, redis_server):
    batch = new_batch()
    client = sidepunch.AsyncClient(redis_server.url)

    async def main():
        async with batch:
            one = [await uniquejobs.Unique.aperform_async("x") for _ in range(2)]
            one.append(await client.push({"class": uniquejobs.Unique, "args": ["x"]}))
            bulk = await client.push_bulk({"class": uniquejobs.Unique, "args": [["y"], ["y"], ["z"]]})
            both = await asyncio.gather(*(client.push({"class": uniquejobs.Unique, "args": ["w"]})
                                          for _ in range(4)))  # tasks sharing the block, writes in flight
        await client.aclose()
        return one + bulk + list(both)

    jids = asyncio.run(main())
    written = {jid for jid in jids if jid}
    assert len(written) == 4 and sum(jid is None for jid in jids) == 6
    assert members(r, batch.bid) == written
    assert drain(proc, r) == [Outcome.DONE] * 6
    assert finished_once(r, batch)


def test_a_push_whose_write_raised_stays_counted_as_it_may_have_landed(r):
    class Broken(sidepunch.Client):
        def write(self, entries):
            super().write(entries)
            raise ConnectionError("the reply was lost")

    broken = Broken(redis=r)
    batch = new_batch()
    with batch:
        with pytest.raises(ConnectionError):
            broken.push({"class": uniquejobs.Unique, "args": ["lost"]})
    landed = json.loads(r.lindex("queue:default", 0))["jid"]
    assert members(r, batch.bid) == {landed}  # registered at the block's end, as before


def test_deferred_and_buffered_pushes_inside_a_batch_take_no_lock(r, client):
    buffered = sidepunch.Client(redis=r, reliable_push=True)
    with new_batch():
        entries, _ = client.preparer.one({"class": uniquejobs.Unique, "args": ["d"]})
        assert type(entries) is not Locked  # written later (on_commit): its outcome never reaches the block
        assert buffered.push({"class": uniquejobs.Unique, "args": ["d"]})
        assert buffered.push({"class": uniquejobs.Unique, "args": ["d"]})
    assert r.llen("queue:default") == 2 and not locks(r)
    assert type(client.preparer.one({"class": uniquejobs.Unique, "args": ["d"]})[0]) is Locked  # no batch


def test_only_pushes_a_feature_joined_are_reported(r, client, monkeypatch):
    calls = []
    monkeypatch.setattr(client.preparer.features, "after_push", lambda w, f: calls.append((list(w), list(f))))
    client.push({"class": uniquejobs.Unique, "args": ["plain"]})
    client.push({"class": batchjobs.Work, "args": [1]})
    client.push_bulk({"class": batchjobs.Work, "args": [[1], [2]]})
    assert calls == []  # no feature joined these pushes: the seam is not asked
    with new_batch():
        first = client.push({"class": uniquejobs.Unique, "args": ["plain"]})
        again = client.push_bulk([{"class": uniquejobs.Unique, "args": ["n"]}] * 2)
    assert first is None and calls[0] == ([], [calls[0][1][0]]) and calls[1] == ([again[0]], [calls[1][1][0]])
    assert again[1] is None
