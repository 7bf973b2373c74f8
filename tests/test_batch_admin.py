"""Batches as the admin sees them: sidepunch.api.BatchStatus / BatchSet and the `sidepunch batches` and
`sidepunch batch BID` commands, against a real redis-server; hostile data in the batch keys never raises."""
import json
import sys

import pytest

import sidepunch
from sidepunch.api import BatchSet, BatchStatus
from sidepunch.core import keys
from conftest import APPS

sys.path.insert(0, str(APPS))
import batchjobs  # noqa: E402


@pytest.fixture(autouse=True)
def default_client_on_test_redis(r, redis_server):
    sidepunch.configure(redis_server.url)
    yield
    sidepunch.configure(redis=r)


def make(description="admin test", jobs=3):
    batch = sidepunch.Batch(description=description, on_success=batchjobs.Callback)
    with batch:
        batchjobs.Work.perform_bulk([[i] for i in range(jobs)])
    return batch


def test_status_reads_counts_members_and_times(r):
    batch = make()
    status = BatchStatus(batch.bid)
    assert (status.exists, status.total, status.pending, status.failures) == (True, 3, 3, 0)
    assert status.state == "running" and status.progress == 0.0 and status.callbacks == ["success"]
    assert sorted(status.jids()) == sorted(status.pending_jids()) and len(status.jids()) == 3
    assert status.failed_jids() == [] and status.children() == [] and status.expires_in is None
    assert status.description == "admin test" and status.parent is None and status.created_at > 0
    assert json.dumps(status.to_dict())


def test_unknown_bid_reads_as_not_existing():
    status = BatchStatus("nope")
    assert not status.exists and status.state == "unknown" and status.total == 0


def test_batch_set_lists_newest_first_and_drops_expired_ids(r):
    first, second = make("first"), make("second")
    r.delete(keys.batch(first.bid))  # as if it expired
    assert [b.bid for b in BatchSet().list()] == [second.bid]
    assert r.zscore(keys.BATCHES, first.bid) is None and BatchSet().size() == 1


def test_hostile_batch_data_reads_without_raising(r):
    r.set(keys.batch("stringkey"), "x")
    r.set(keys.batch_members("stringkey"), "y")
    assert not BatchStatus("stringkey").exists and BatchStatus("stringkey").members() == {}
    r.zadd(keys.BATCHES, {"stringkey": 0, "a:b": 0, "../x": 0})
    assert not BatchStatus("a:b").exists and not BatchStatus("../x").exists
    r.hset(keys.batch("evilbatch"), mapping={"total": "lots", "pending": b"\xff", "created_at": "nan?",
                                       "description": b"\xff\xfe<script>"})
    r.hset(keys.batch_members("evilbatch"), mapping={b"\xff": "zz", "b:child": "p"})
    r.zadd(keys.BATCHES, {b"\xff\x00": 1, "evilbatch": 2})
    status = BatchStatus("evilbatch")
    assert status.total == 0 and status.created_at is None and "<script>" in status.description
    assert status.members()["b:child"] == "pending" and status.children() == ["child"]
    assert [b.bid for b in BatchSet().list()] == ["evilbatch"] and BatchSet().size() == 1


def test_cli_lists_batches_and_shows_one(cli, r):
    batch = make("cli batch")
    status, out, _ = cli("batches")
    assert status == 0 and batch.bid in out and "cli batch" in out and "running" in out
    status, out, _ = cli("batch", batch.bid)
    assert status == 0 and "0 of 3 succeeded" in out and "pending:" in out and "callbacks registered: success" in out
    status, out, _ = cli("batch", batch.bid, "--json")
    data = json.loads(out)
    assert data["total"] == 3 and len(data["pending_jids"]) == 3


def test_cli_unknown_batch_exits_1(cli):
    status, out, err = cli("batch", "0123456789abcdef01234567")
    assert status == 1 and "no batch" in out + err
