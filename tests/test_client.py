"""The client API against fakeredis: what lands in Redis and in what shape."""
import datetime as dt
import json
import time

import fakeredis
import pytest

import sidepunch
from sidepunch import Client, Job, job


class Email(Job):
    queue = "mail"
    retry = 5
    tags = ["io"]

    def perform(self, to, n):
        pass


@sidepunch.job(queue="fast", retry=False)
def ping(x):
    return x * 2


@pytest.fixture
def fake():
    r = fakeredis.FakeRedis()
    client = sidepunch.configure(redis=r)
    yield r, client
    sidepunch.configure(redis=fakeredis.FakeRedis())


def only(r, key):
    items = r.lrange(key, 0, -1)
    assert len(items) == 1
    return json.loads(items[0])


def test_perform_async_writes_sidekiq_payload(fake):
    r, _ = fake
    jid = Email.perform_async("a@b.c", 3)
    assert r.smembers("queues") == {b"mail"}
    raw = r.lrange("queue:mail", 0, -1)[0]
    job = json.loads(raw)
    assert list(job) == ["retry", "queue", "tags", "class", "args", "jid", "created_at", "enqueued_at"]
    assert job["class"] == "test_client.Email" and job["args"] == ["a@b.c", 3] and job["jid"] == jid
    assert job["retry"] == 5 and job["tags"] == ["io"]
    assert abs(job["enqueued_at"] - time.time()) < 5 and job["created_at"] <= job["enqueued_at"]


def test_set_overrides_options_for_one_push(fake):
    r, _ = fake
    Email.set(queue="low", retry=False).perform_async("x", 1)
    job = only(r, "queue:low")
    assert job["queue"] == "low" and job["retry"] is False


def test_perform_in_and_at_schedule(fake):
    r, _ = fake
    before = time.time()
    Email.perform_in(60, "x", 1)
    Email.perform_in(dt.timedelta(minutes=2), "y", 2)
    Email.perform_at(dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1), "z", 3)
    entries = r.zrange("schedule", 0, -1, withscores=True)
    assert len(entries) == 3
    for raw, score in entries:
        job = json.loads(raw)
        assert "at" not in job and "enqueued_at" not in job
        assert score > before + 59
    assert r.llen("queue:mail") == 0


def test_perform_in_the_past_enqueues_now(fake):
    r, _ = fake
    Email.perform_in(-5, "x", 1)
    assert r.llen("queue:mail") == 1 and r.zcard("schedule") == 0


def test_perform_at_refuses_naive_datetimes(fake):
    with pytest.raises(ValueError, match="aware"):
        Email.perform_at(dt.datetime.now() + dt.timedelta(hours=1), "x", 1)


def test_non_json_args_raise_type_error_naming_the_argument(fake):
    r, _ = fake
    with pytest.raises(TypeError, match=r"args\[1\] is a datetime.datetime"):
        Email.perform_async("x", dt.datetime.now())
    assert r.llen("queue:mail") == 0


def test_decorated_function_runs_inline_and_enqueues(fake):
    r, _ = fake
    assert ping(21) == 42
    ping.perform_async(1)
    job = only(r, "queue:fast")
    assert job["class"] == "test_client.ping" and job["retry"] is False


def test_decorator_rejects_unknown_options():
    with pytest.raises(TypeError, match="unknown job option"):
        job(qeue="x")(lambda: None)


def test_perform_bulk_batches_and_returns_jids(fake):
    r, _ = fake
    jids = Email.perform_bulk([["a", i] for i in range(2500)], batch_size=1000)
    assert len(set(jids)) == 2500 and r.llen("queue:mail") == 2500
    oldest = json.loads(r.lindex("queue:mail", -1))
    assert oldest["args"] == ["a", 0]


def test_client_push_with_class_name_and_explicit_jid(fake):
    r, client = fake
    jid = client.push({"class": "HardWorker", "args": [1], "jid": "a" * 24, "queue": "ruby"})
    assert jid == "a" * 24
    job = only(r, "queue:ruby")
    assert list(job)[:4] == ["retry", "queue", "class", "args"] and job["retry"] is True


def test_push_bulk_sidekiq_form_with_at_list(fake):
    r, client = fake
    future = time.time() + 100
    jids = client.push_bulk({"class": "X", "args": [[1], [2]], "at": [future, future + 1], "jid": "x" * 24})
    assert len(jids) == 2 and "x" * 24 not in jids
    created = {json.loads(m)["created_at"] for m in r.zrange("schedule", 0, -1)}
    assert len(created) == 1


def test_push_bulk_empty_touches_nothing(fake):
    r, client = fake
    assert client.push_bulk({"class": "X", "args": []}) == []
    assert r.dbsize() == 0


def test_push_bulk_rejects_bad_shapes(fake):
    _, client = fake
    with pytest.raises(TypeError):
        client.push_bulk({"class": "X", "args": [1, 2]})
    with pytest.raises(ValueError):
        client.push_bulk({"class": "X", "args": [[1]], "at": [1, 2]})


def test_push_validates_item(fake):
    _, client = fake
    with pytest.raises(TypeError):
        client.push({"args": []})
    with pytest.raises(TypeError):
        client.push({"class": 42, "args": []})


def test_client_middleware_can_change_or_stop_a_push():
    r = fakeredis.FakeRedis()
    seen = []

    def tag(job, call_next):
        job["tenant"] = "acme"
        seen.append(job["jid"])
        return call_next(job)

    def stop_secret(job, call_next):
        return None if job["args"] == ["secret"] else call_next(job)

    client = Client(redis=r, middleware=[tag, stop_secret])
    assert client.push({"class": "X", "args": ["secret"]}) is None
    jid = client.push({"class": "X", "args": ["ok"]})
    assert jid in seen and r.llen("queue:default") == 1
    assert json.loads(r.lindex("queue:default", 0))["tenant"] == "acme"


def test_client_connects_lazily_from_url():
    client = Client("redis://127.0.0.1:1/0")  # nothing listens there; building must not connect
    assert client.middleware == ()


def test_bulk_template_bytes_equal_whole_job_encoding(fake):
    from sidepunch.payload import encode
    r, client = fake
    rows = [["é/<>", 2 ** 70, 1.5, None, True, {"k": [1, {"x": "\n"}]}], [1e15, -1e-7], []]
    jids = client.push_bulk({"class": Email, "args": rows, "custom": {"kept": 1}, "queue": "bulkq"})
    stored = list(reversed(r.lrange("queue:bulkq", 0, -1)))
    assert len(stored) == 3 and len(set(jids)) == 3
    for raw, args, jid in zip(stored, rows, jids):
        job = json.loads(raw)
        assert job["args"] == args and job["jid"] == jid and job["custom"] == {"kept": 1}
        assert encode(job) == raw  # spliced bytes are exactly what encoding the whole job gives
    assert list(json.loads(stored[0])) == ["retry", "queue", "tags", "class", "custom", "args", "jid",
                                           "created_at", "enqueued_at"]


def test_bulk_rejects_non_json_args_by_position(fake):
    r, client = fake
    with pytest.raises(TypeError, match=r"args\[1\]\[0\] is a builtins.set"):
        client.push_bulk({"class": Email, "args": [["ok"], [{1}]]})
    assert r.llen("queue:mail") == 0
