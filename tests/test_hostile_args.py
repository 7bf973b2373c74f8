"""Property: hostile argument values through every enqueue entry point, against a real Redis.

Each push either writes payloads that `payload.decode` accepts and that encode back to the same bytes, or
raises a plain TypeError or ValueError naming where the value sat, having written nothing. Whether a value is
accepted is checked against an independent statement of the rules (`fits`).
"""
import collections
import datetime as dt
import decimal
import enum
import fractions
import json
import math
import random

import fakeredis
import pytest

import sidepunch
from sidepunch import Job
from sidepunch.core.payload import MAX_DEPTH, decode, encode


class Hard(Job):
    def perform(self, *args):
        pass


class Color(enum.IntEnum):
    RED = 1


class Mood(str, enum.Enum):
    HAPPY = "happy"


class Hostile:
    """Runs no code of ours: its repr, equality and __class__ all blow up."""

    def __repr__(self):
        raise RuntimeError("repr ran")

    def __eq__(self, other):
        raise RuntimeError("eq ran")

    __hash__ = None

    @property
    def __class__(self):
        raise RuntimeError("__class__ ran")


GOOD_ATOMS = [0, -1, 2 ** 63, 10 ** 4300 - 1, -(10 ** 4300 - 1), 1.5, -0.0, 1e15, -2.5e-07, 1e308, 5e-324, "",
              "é/<>&", "🚀", "\u2028", "\\ud800", "\x00", "\ud83d\ude00", True, False, None]


def bad_atom(rng):
    makers = [
        lambda: math.nan, lambda: math.inf, lambda: -math.inf, lambda: 10 ** 4300, lambda: -(10 ** 5000),
        lambda: "\ud800", lambda: "ok\udcff", lambda: b"x", lambda: bytearray(b"x"), lambda: {1, 2},
        lambda: frozenset(), lambda: (1, 2), lambda: (), lambda: object(), Hostile, lambda: dt.datetime.now(),
        lambda: decimal.Decimal("1.5"), lambda: fractions.Fraction(1, 3), lambda: 1 + 2j, lambda: Color.RED,
        lambda: Mood.HAPPY, lambda: collections.OrderedDict(a=1), lambda: range(3), lambda: len, lambda: Hard,
    ]
    return rng.choice(makers)()


BAD_KEYS = [1, None, 1.5, (1,), "\udc80", True, frozenset(), Mood.HAPPY]


def nest(levels, leaf):
    for _ in range(levels):
        leaf = [leaf]
    return leaf


def recursive(rng, inner):
    """A list or dict that contains itself, somewhere below a few honest levels."""
    top = [] if rng.random() < 0.5 else {}
    holder = top
    for _ in range(rng.randrange(3)):
        child = [inner]
        holder.append(child) if type(holder) is list else holder.__setitem__("k", child)
        holder = child
    holder.append(top) if type(holder) is list else holder.__setitem__("self", top)
    return top


def value(rng, budget=4):
    roll = rng.random()
    if budget <= 0 or roll < 0.35:
        return rng.choice(GOOD_ATOMS)
    if roll < 0.5:
        return bad_atom(rng)
    if roll < 0.68:
        return [value(rng, budget - 1) for _ in range(rng.randrange(4))]
    if roll < 0.84:
        keys = [rng.choice(BAD_KEYS) if rng.random() < 0.1 else rng.choice(["a", "b", "é", "x y", ""])
                for _ in range(rng.randrange(4))]
        return {k: value(rng, budget - 1) for k in keys}
    if roll < 0.95:
        levels = rng.choice([90, 96, 97, 98, 99, 100, 101, 102, 150, 1000, 100_000])
        return nest(levels, value(rng, 0))
    return recursive(rng, value(rng, 0))


def fits(v, level):
    """Can a job carry `v` at nesting `level` (the job is 1)? Written apart from the code under test."""
    kind = type(v)
    if kind is bool or v is None:
        return True
    if kind is str:
        try:
            v.encode("utf-8")
            return True
        except UnicodeEncodeError:
            return False
    if kind is int:
        try:
            str(v)
            return True
        except ValueError:
            return False
    if kind is float:
        return math.isfinite(v)
    if kind is list or kind is dict:
        if level > MAX_DEPTH:
            return False
        if kind is dict:
            if not all(type(k) is str and fits(k, level) for k in v):
                return False
            v = v.values()
        return all(fits(child, level + 1) for child in v)
    return False


def through_middleware(job, call_next):
    return call_next(job)


def entry_points(client, mw_client):
    """(name, how to push v, where an error must point, the nesting level v sits at)."""
    return [
        ("perform_async", lambda v: Hard.perform_async("a", v), "args[1]", 3),
        ("set().perform_async", lambda v: Hard.set(client=client, extra=v).perform_async(1), "extra", 2),
        ("push args", lambda v: client.push({"class": "X", "args": [v], "at": 2e9}), "args[0]", 3),
        ("push field", lambda v: mw_client.push({"class": "X", "args": [], "custom": v}), "custom", 2),
        ("push_bulk rows", lambda v: client.push_bulk({"class": Hard, "args": [["a"], [v], ["b"]]}),
         "args[1][0]", 3),
        ("push_bulk items",
         lambda v: mw_client.push_bulk([{"class": "X", "args": [1]}, {"class": "X", "args": [v]}]),
         "push_bulk job 1: args[0]", 3),
        ("perform_bulk", lambda v: Hard.set(client=client).perform_bulk([["a"], ["b"], [v]], batch_size=1),
         "args[2][0]", 3),
    ]


def stored(r):
    raws = [raw for q in r.smembers("queues") for raw in r.lrange(b"queue:" + q, 0, -1)]
    return raws + r.zrange("schedule", 0, -1)


@pytest.fixture
def clients(r):
    default = sidepunch.configure(redis=r)
    yield default, sidepunch.Client(redis=r, middleware=[through_middleware])
    sidepunch.configure(redis=fakeredis.FakeRedis())


def test_hostile_values_are_enqueued_whole_or_refused_by_name(r, clients):
    rng = random.Random(20240901)
    points = entry_points(*clients)
    outcomes = collections.Counter()
    for _ in range(350):
        v = value(rng)
        for name, push, where, level in points:
            r.flushall()
            try:
                push(v)
            except (TypeError, ValueError) as exc:
                assert type(exc) in (TypeError, ValueError), (name, exc)   # no json or codec errors leak
                assert where in str(exc), (name, str(exc)[:300])
                assert not fits(v, level), (name, str(exc)[:300])
                assert r.dbsize() == 0, name                                 # nothing written, not even part
                outcomes["refused"] += 1
                continue
            assert fits(v, level), name
            raws = stored(r)
            assert raws, name
            for raw in raws:
                assert encode(decode(raw)) == raw
            outcomes["enqueued"] += 1
    assert outcomes["refused"] > 500 and outcomes["enqueued"] > 300, outcomes


def test_values_at_the_nesting_limit(r, clients):
    """The limit itself, through every entry point: MAX_DEPTH levels pass and decode; one more is refused."""
    for name, push, where, level in entry_points(*clients):
        limit = MAX_DEPTH - level + 1       # lists around a scalar that put its innermost list at MAX_DEPTH
        for levels in (limit - 1, limit, limit + 1):
            r.flushall()
            v = nest(levels, "leaf")
            if levels <= limit:
                push(v)
                jobs = [decode(raw) for raw in stored(r)]
                assert jobs and all(encode(job) for job in jobs), name
            else:
                with pytest.raises(ValueError, match=rf"levels deep; a job may nest lists and dicts at most "
                                                     rf"{MAX_DEPTH}"):
                    push(v)
                assert r.dbsize() == 0


def test_accepted_arguments_arrive_as_given(r, clients):
    args = ["é", 10 ** 4300 - 1, -2.5e-07, 1e15, {"k": [None, True, "\u2028"]}, nest(97, 0)]
    jid = Hard.perform_async(*args)
    job = decode(r.lindex("queue:default", 0))
    assert job["jid"] == jid and job["args"] == json.loads(json.dumps(args)) == args
