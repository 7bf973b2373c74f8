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
    from sidepunch.core.payload import encode
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


def test_deep_and_recursive_arguments_are_named_not_recursed(fake):
    r, _ = fake
    deep = 1
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(ValueError, match=r"^args\[1\]\[0\]\[0\].* levels deep; a job may nest .* at most 100"):
        Email.perform_async("x", deep)
    loop = []
    loop.append(loop)
    with pytest.raises(ValueError, match=r"args\[0\] contains itself"):
        Email.perform_async(loop, 1)
    assert r.dbsize() == 0


def test_lone_surrogates_are_named_wherever_they_are(fake):
    r, client = fake
    with pytest.raises(ValueError, match=r"^args\[1\]\['k'\] holds a lone surrogate"):
        Email.perform_async("x", {"k": "bad\udcff"})
    with pytest.raises(ValueError, match=r"^custom holds a lone surrogate"):
        client.push({"class": "X", "args": [], "custom": "\ud800"})
    with pytest.raises(ValueError, match=r"^args\[1\]\[0\] holds a lone surrogate"):
        client.push_bulk({"class": "X", "args": [["ok"], ["\ud800"]]})
    with pytest.raises(ValueError, match=r"^push_bulk job 1: jid holds a lone surrogate"):
        client.push_bulk([{"class": "X", "args": []}, {"class": "X", "args": [], "jid": "\ud800"}])
    assert r.dbsize() == 0


def test_huge_ints_are_named(fake):
    r, _ = fake
    with pytest.raises(ValueError, match=r"^args\[0\] is an int of about 5001 digits"):
        Email.perform_async(10 ** 5000, 1)
    Email.perform_async(10 ** 4000, 1)   # Ruby reads it as a Bignum and decode reads it back
    assert json.loads(r.lindex("queue:mail", 0))["args"][0] == 10 ** 4000


def test_a_bad_row_in_any_batch_writes_nothing(fake):
    r, client = fake
    rows = [[i] for i in range(2500)] + [[{1, 2}]]
    with pytest.raises(TypeError, match=r"args\[2500\]\[0\] is a builtins.set"):
        Email.perform_bulk(rows, batch_size=1000)
    with pytest.raises(TypeError, match=r"push_bulk job 2: args\[0\] is a builtins.bytes"):
        client.push_bulk([{"class": "X", "args": [1]}, {"class": "X", "args": [2]}, {"class": "X", "args": [b""]}])
    with pytest.raises(TypeError, match=r"'at'\[1\] must be a number"):
        client.push_bulk({"class": "X", "args": [[1], [2]], "at": [time.time(), "later"]})
    with pytest.raises(TypeError, match=r"args\[1\] is a builtins.tuple"):
        client.push_bulk({"class": "X", "args": [[1], (2,)]})
    with pytest.raises(TypeError, match=r"args_list\[1\] is 'ab'"):
        Email.perform_bulk([["a"], "ab"])
    assert r.dbsize() == 0


def test_perform_bulk_takes_tuples_and_checks_its_batch_size(fake):
    r, _ = fake
    assert len(Email.perform_bulk([("a", 1), ["b", 2]])) == 2 and r.llen("queue:mail") == 2
    for size in (0, -1, 1.5, "10"):
        with pytest.raises(ValueError, match="batch_size"):
            Email.perform_bulk([["a", 1]], batch_size=size)
    with pytest.raises(TypeError, match="list of argument lists, got 5"):
        Email.perform_bulk(5)


def test_bad_queue_names_fail_where_they_are_given(fake):
    r, client = fake
    with pytest.raises(ValueError, match=r"set\(queue=...\) 'a,b' holds a comma"):
        Email.set(queue="a,b")
    with pytest.raises(ValueError, match=r"set\(retry_queue=...\) ' slow' starts or ends with whitespace"):
        Email.set(retry_queue=" slow")
    with pytest.raises(ValueError, match=r"Bad.queue 'x\\x00' holds a control character"):
        class Bad(Job):
            queue = "x\x00"
    with pytest.raises(ValueError, match=r"fn.queue '' is empty"):
        @sidepunch.job(queue="")
        def fn():
            pass
    with pytest.raises(TypeError, match=r"BadTags.tags must be a list"):
        class BadTags(Job):
            tags = "email"
    with pytest.raises(ValueError, match=r"^queue 'a\\nb' holds a control character"):
        client.push({"class": "X", "args": [], "queue": "a\nb"})
    with pytest.raises(TypeError, match=r"push_bulk job 1: queue must be a str, got 7"):
        client.push_bulk([{"class": "X", "args": []}, {"class": "X", "args": [], "queue": 7}])
    assert r.dbsize() == 0


def test_a_null_jid_gets_a_fresh_one_as_in_sidekiq(fake):
    _, client = fake
    jid = client.push({"class": "X", "args": [], "jid": None})
    assert isinstance(jid, str) and len(jid) == 24


@pytest.mark.parametrize("call, kind, words", [
    (lambda: Email.perform_in("soon", 1), TypeError, "perform_in interval must be a number of seconds"),
    (lambda: Email.perform_in(None, 1), TypeError, "got None"),
    (lambda: Email.perform_in(float("nan"), 1), ValueError, "must be finite"),
    (lambda: Email.perform_in(10 ** 400, 1), ValueError, "an int of 1329 bits, too large"),
    (lambda: Email.perform_at(True, 1), TypeError, "perform_at time"),
])
def test_schedule_times_are_checked_by_name(fake, call, kind, words):
    r, _ = fake
    with pytest.raises(kind) as err:
        call()
    assert words in str(err.value) and r.dbsize() == 0


def test_middleware_output_is_checked_like_input():
    r = fakeredis.FakeRedis()

    def sneaky(job, call_next):
        job["when"] = dt.datetime.now()
        return call_next(job)

    with pytest.raises(TypeError, match=r"^when is a datetime.datetime"):
        Client(redis=r, middleware=[sneaky]).push({"class": "X", "args": []})
    with pytest.raises(TypeError, match="middleware returned 'ok' instead of the job dict"):
        Client(redis=r, middleware=[lambda job, call_next: "ok"]).push({"class": "X", "args": []})
    with pytest.raises(TypeError, match=r"push_bulk job 0: when is a datetime"):
        Client(redis=r, middleware=[sneaky]).push_bulk({"class": "X", "args": [[1]]})
    assert r.dbsize() == 0


def test_bad_items_say_what_is_wrong(fake):
    _, client = fake
    with pytest.raises(TypeError, match="it has no 'args'"):
        client.push({"class": "X"})
    with pytest.raises(TypeError, match="got the class builtins.int, which is not a sidepunch.Job"):
        client.push({"class": int, "args": []})
    with pytest.raises(TypeError, match="push_bulk takes Sidekiq's bulk item"):
        client.push_bulk(42)


class Capturing(Client):
    """A testing mode in miniature: replaces the write seam and nothing else."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.written = []

    def write(self, entries):
        self.written.append(list(entries))


def every_kind_of_push(client):
    """One push of each kind; returns the jids they gave."""
    now = time.time()
    jids = [client.push({"class": Email, "args": ["a", 1]}),
            client.push({"class": "X", "args": [], "at": now + 60}),
            *client.push_bulk({"class": "X", "args": [[1], [2]]}),
            *client.push_bulk({"class": "X", "args": [[3], [4]], "at": [now + 1, now + 2]}),
            *client.push_bulk([{"class": "X", "args": [5]}, {"class": "X", "args": [6], "at": now + 3}]),
            *client.push_batches([{"class": "X", "args": [[7]]}, [{"class": "X", "args": [8]}]]),
            Email.set(client=client).perform_async("b", 2),
            Email.set(client=client).perform_in(30, "c", 3),
            *Email.set(client=client).perform_bulk([["d", 4], ["e", 5]], batch_size=1)]
    return jids


@pytest.mark.parametrize("how", ["subclass", "writer"])
def test_every_push_passes_the_write_seam_and_nothing_else_writes(how):
    r = fakeredis.FakeRedis()
    written = []
    if how == "subclass":
        client = Capturing(redis=r)
        written = client.written
    else:
        client = Client(redis=r, writer=lambda entries: written.append(list(entries)))
    jids = every_kind_of_push(client)
    assert r.keys("*") == []  # nothing reached Redis
    entries = [e for call in written for e in call]
    assert sorted(json.loads(payload)["jid"] for _, _, payload in entries) == sorted(jids) and len(jids) == 14
    scheduled = [payload for _, at, payload in entries if at is not None]
    assert len(scheduled) == 5 and all("enqueued_at" not in json.loads(p) for p in scheduled)
    assert all("enqueued_at" in json.loads(payload) for _, at, payload in entries if at is None)
    assert {queue for queue, _, payload in entries} == {"mail", "default"}
    assert all(json.loads(payload)["queue"] == queue for queue, _, payload in entries)
    assert len(written) == 11  # one call per atomic push: each push, each bulk batch


def test_the_seam_writes_what_a_plain_client_writes():
    """Wrapping the seam sees exactly the payloads that land in Redis, scheduled and queued."""
    r = fakeredis.FakeRedis()

    class Recording(Client):
        seen = []

        def write(self, entries):
            self.seen.extend(entries)
            return super().write(entries)
    client = Recording(redis=r)
    every_kind_of_push(client)
    queued = {p for key in r.keys("queue:*") for p in r.lrange(key, 0, -1)}
    assert queued == {payload for _, at, payload in client.seen if at is None} and len(queued) == 9
    assert dict(r.zrange("schedule", 0, -1, withscores=True)) == {p: at for _, at, p in client.seen if at}
    assert r.smembers("queues") == {b"mail", b"default"}


def test_the_seam_is_not_reached_by_bad_input_or_stopped_pushes():
    written = []
    client = Client(redis=fakeredis.FakeRedis(), writer=written.append,
                    middleware=[lambda job, call_next: None if job["args"] == ["stop"] else call_next(job)])
    assert client.push({"class": "X", "args": ["stop"]}) is None
    with pytest.raises(TypeError):
        client.push_bulk([{"class": "X", "args": [1]}, {"class": "X", "args": "nope"}])
    assert client.push_bulk({"class": "X", "args": [["stop"]]}) == [None] and written == []  # its place kept


def test_configure_takes_a_writer_for_the_default_client(fake):
    written = []
    sidepunch.configure(writer=written.extend)
    try:
        jid = Email.perform_async("a", 1)
        ping.perform_in(60, 3)
    finally:
        sidepunch.configure(redis=fake[0])
    assert [json.loads(p)["jid"] for _, _, p in written][:1] == [jid] and len(written) == 2
    assert written[1][0] == "fast" and written[1][1] is not None and fake[0].keys("*") == []
