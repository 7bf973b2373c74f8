"""Keyword arguments at enqueue, against a real Redis: bound to positions by perform's signature (the wire
carries positional `args` only), trailing defaults left to perform, and every call perform would refuse raising
TypeError naming the job before anything is written, through each enqueue method, sync and awaited."""
from __future__ import annotations

import asyncio
import datetime as dt
import functools
import importlib.util
import inspect
import json
import random
import re
from pathlib import Path

import pytest

import sidepunch
from sidepunch import Job, job


class SendEmail(Job):
    queue = "mail"

    def perform(self, to, template_id, lang="en", cc=None):
        return (to, template_id, lang, cc)


class Split(Job):
    def perform(self, a, /, b, c=3, *rest):
        return (a, b, c, rest)


class KeywordOnly(Job):
    def perform(self, a, *, flag=False):
        return (a, flag)


class NeedsKeyword(Job):
    def perform(self, a, *, flag):
        return (a, flag)


class TakesKwargs(Job):
    def perform(self, a, **extra):
        return (a, extra)


class NamesLikeTheMethods(Job):
    def perform(self, cls, interval, when, self_=None):
        return (cls, interval, when, self_)


class Unreadable(Job):
    perform = staticmethod(max)  # a builtin whose parameters inspect cannot read


def logged(func):
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        return func(*args, **kwargs)
    return wrapper


class Wrapped(Job):
    @logged
    def perform(self, x, y=2):
        return (x, y)


@job(queue="fns")
def resize(path, width, height=None):
    return (path, width, height)


@job
async def crawl(url, depth=1):
    return (url, depth)


def pushed(r):
    """The args of every job in Redis (queues and schedule), in push order per key."""
    out = []
    for key in sorted(r.keys("queue:*")):
        out += [json.loads(raw)["args"] for raw in reversed(r.lrange(key, 0, -1))]
    out += [json.loads(raw)["args"] for raw in r.zrange("schedule", 0, -1)]
    return out


def test_keywords_are_bound_to_positions_in_perform_order(client, r):
    on = SendEmail.set(client=client)
    on.perform_async(to="a@b", template_id=3)
    on.perform_async(template_id=4, to="c@d")
    on.perform_async("e@f", template_id=5)
    assert pushed(r) == [["a@b", 3], ["c@d", 4], ["e@f", 5]]


def test_a_skipped_default_is_filled_and_trailing_defaults_are_left_to_perform(client, r):
    on = SendEmail.set(client=client)
    on.perform_async("a@b", 1, cc="boss")  # lang sits between: filled with its default, positions have no holes
    on.perform_async("a@b", 2, lang="fr")  # cc after the last given one: not sent, perform's default applies
    assert pushed(r) == [["a@b", 1, "en", "boss"], ["a@b", 2, "fr"]]


def test_every_enqueue_method_binds_the_same_way(client, r, redis_server):
    on = SendEmail.set(client=client, queue="q1")
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
    on.perform_in(3600, to="a", template_id=1)
    on.perform_at(later, "b", template_id=2)
    resize.set(client=client).perform_async("p.png", height=10, width=20)
    aclient = sidepunch.AsyncClient(redis_server.url)

    async def awaited():
        try:
            await SendEmail.set(client=aclient, queue="q2").aperform_async(template_id=3, to="c")
            await SendEmail.set(client=aclient).aperform_in(3600, "d", template_id=4)
            await SendEmail.set(client=aclient).aperform_at(later, to="e", template_id=5)
            await crawl.set(client=aclient).aperform_async(depth=2, url="http://x")
        finally:
            await aclient.aclose()
    asyncio.run(awaited())
    assert sorted(pushed(r)) == sorted([["a", 1], ["b", 2], ["p.png", 20, 10], ["c", 3], ["d", 4], ["e", 5],
                                        ["http://x", 2]])
    assert r.zcard("schedule") == 4


def test_the_default_client_binds_too(redis_server, r):
    sidepunch.configure(redis_server.url)
    try:
        SendEmail.perform_async(to="x", template_id=1)
        resize.perform_in(60, "p", width=1)
        asyncio.run(crawl.aperform_async(url="u"))
    finally:
        sidepunch.configure(redis=r)
    assert sorted(pushed(r)) == [["p", 1], ["u"], ["x", 1]]


def test_a_job_function_binds_by_the_function_and_an_async_one_keeps_its_parameters(client, r):
    resize.set(client=client).perform_async(path="a", width=1)
    crawl.set(client=client).perform_async("b", depth=3)
    with pytest.raises(TypeError, match=r"cannot enqueue .*crawl: got an unexpected keyword argument 'deep'"):
        crawl.set(client=client).perform_async("b", deep=3)
    assert inspect.iscoroutinefunction(crawl.job_class.perform)
    assert sorted(pushed(r)) == [["a", 1], ["b", 3]]


def test_positional_only_variadic_and_wrapped_performs(client, r):
    Split.set(client=client).perform_async(1, b=2)
    Split.set(client=client).perform_async(1, 2, 3, 4, 5)  # *rest: any number
    Wrapped.set(client=client).perform_async(y=5, x=4)  # functools.wraps: the wrapped function's parameters
    NamesLikeTheMethods.set(client=client).perform_in(0, 1, interval=2, when=3, self_=4)
    assert pushed(r) == [[1, 2], [1, 2, 3, 4, 5], [4, 5], [1, 2, 3, 4]]


BAD_CALLS = [
    ("unknown keyword", SendEmail, (), {"to": "a", "template_id": 1, "bcc": "x"},
     r"got an unexpected keyword argument 'bcc'"),
    ("too many", SendEmail, ("a", 1, "en", None, "extra"), {}, r"too many positional arguments"),
    ("too few", SendEmail, ("a",), {}, r"missing a required argument: 'template_id'"),
    ("too few, by keyword", SendEmail, (), {"template_id": 1}, r"missing a required argument: 'to'"),
    ("twice", SendEmail, ("a", 1), {"to": "b"}, r"multiple values for argument 'to'"),
    ("positional-only by keyword", Split, (), {"a": 1, "b": 2}, r"'a' parameter is positional only"),
    ("keyword-only", KeywordOnly, (1,), {"flag": True}, r"positional args only.*'flag'"),
    ("keyword-only with a falsy value", KeywordOnly, (1,), {"flag": 0}, r"positional args only.*'flag'"),
    ("required keyword-only", NeedsKeyword, (1,), {}, r"missing a required argument: 'flag'"),
    ("into **kwargs", TakesKwargs, (1,), {"x": 1, "y": 2}, r"positional args only.*'x', 'y'"),
    ("keywords, unreadable perform", Unreadable, (), {"x": 1}, r"parameters cannot be read"),
    ("function, too many", resize.job_class, ("p", 1, 2, 3), {}, r"too many positional arguments"),
]


@pytest.mark.parametrize("name, job_class, args, kwargs, message", BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_a_bad_call_raises_naming_the_job_and_writes_nothing(client, r, redis_server, name, job_class, args,
                                                              kwargs, message):
    pattern = rf"cannot enqueue {job_class.job_name()}.*{message}"
    on = job_class.set(client=client)
    for call in (lambda: on.perform_async(*args, **kwargs), lambda: on.perform_in(60, *args, **kwargs),
                 lambda: on.perform_at(2_000_000_000, *args, **kwargs),
                 lambda: job_class.set(client=client).set(queue="x").perform_async(*args, **kwargs)):
        with pytest.raises(TypeError, match=pattern):
            call()
    aclient = sidepunch.AsyncClient(redis_server.url)

    async def awaited():
        try:
            for method in ("aperform_async", "aperform_in", "aperform_at"):
                lead = () if method == "aperform_async" else (60,)
                with pytest.raises(TypeError, match=pattern):
                    await getattr(job_class.set(client=aclient), method)(*lead, *args, **kwargs)
        finally:
            await aclient.aclose()
    asyncio.run(awaited())
    assert r.dbsize() == 0


def test_the_class_methods_and_job_functions_raise_the_same(redis_server, r):
    sidepunch.configure(redis_server.url)
    try:
        with pytest.raises(TypeError, match=r"cannot enqueue test_job_kwargs.SendEmail: too many"):
            SendEmail.perform_async("a", 1, "en", None, 5)
        with pytest.raises(TypeError, match=r"cannot enqueue test_job_kwargs.resize: .*'depth'"):
            resize.perform_in(5, "p", 1, depth=2)
        with pytest.raises(TypeError, match=r"cannot enqueue test_job_kwargs.crawl: missing .*'url'"):
            asyncio.run(crawl.aperform_async(depth=2))
    finally:
        sidepunch.configure(redis=r)
    assert r.dbsize() == 0


def test_a_perform_that_takes_anything_or_cannot_be_read_takes_any_positional_call(client, r):
    class Anything(Job):
        def perform(self, *args):
            pass
    Anything.set(client=client).perform_async()
    Anything.set(client=client).perform_async(1, "two", [3])
    Unreadable.set(client=client).perform_async("any", "count")
    assert pushed(r) == [[], [1, "two", [3]], ["any", "count"]]


def test_a_replaced_perform_is_read_again(client, r):
    class Changing(Job):
        def perform(self, a):
            pass
    Changing.set(client=client).perform_async(a=1)
    Changing.perform = lambda self, a, b: None
    Changing.set(client=client).perform_async(1, b=2)
    with pytest.raises(TypeError, match="missing a required argument: 'b'"):
        Changing.set(client=client).perform_async(1)

    class Child(Changing):  # its own shape, read from the perform it inherits
        pass
    Child.set(client=client).perform_async(b=4, a=3)
    assert pushed(r) == [[1], [1, 2], [3, 4]]


def test_perform_bulk_rows_are_not_bound_or_counted(client, r):
    """Rows are plain lists (untyped): written as given; a wrong row fails when the job runs, as in Sidekiq."""
    SendEmail.set(client=client).perform_bulk([["a", 1], ["only one"], ["a", 1, "en", None, "extra"]])
    assert pushed(r) == [["a", 1], ["only one"], ["a", 1, "en", None, "extra"]]


#: Each job class with the callable whose parameters perform has (a @job function's own, for its class).
SIGNATURES = [(SendEmail, functools.partial(SendEmail.perform, None)), (Split, functools.partial(Split.perform, None)),
              (Wrapped, functools.partial(Wrapped.perform, None)),
              (NamesLikeTheMethods, functools.partial(NamesLikeTheMethods.perform, None)),
              (KeywordOnly, functools.partial(KeywordOnly.perform, None)),
              (resize.job_class, resize.__wrapped__), (crawl.job_class, crawl.__wrapped__)]


def call_of(signature, rng):
    """A random call: the first n parameters by position (sometimes one too many), a random subset of the rest
    by keyword in a random order; valid or not."""
    params = [p for p in signature.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    n = rng.randint(0, len(params))
    args = [rng.randint(0, 99) for _ in range(n + (rng.random() < 0.15))]
    kwargs = {p.name: rng.randint(0, 99) for p in params[n:] if rng.random() < 0.6}
    names = list(kwargs)
    rng.shuffle(names)
    return args, {name: kwargs[name] for name in names}


def received(signature, args, kwargs):
    """What perform receives when called with (args, kwargs) directly, every default applied."""
    bound = signature.bind(*args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def test_property_the_wire_args_give_perform_what_the_call_gave(client, r):
    """Many generated calls, valid and not: a call perform would refuse is refused at enqueue; for the others,
    the wire's args (after the JSON round trip through Redis) give perform exactly what calling it with the
    original positional and keyword arguments would."""
    rng = random.Random(1313)
    written, refused = [], 0
    for _ in range(400):
        job_class, target = rng.choice(SIGNATURES)
        signature = inspect.signature(target)
        args, kwargs = call_of(signature, rng)
        try:
            expected = received(signature, args, kwargs)
        except TypeError:
            with pytest.raises(TypeError, match=f"cannot enqueue {job_class.job_name()}"):
                job_class.set(client=client).perform_async(*args, **kwargs)
            refused += 1
            continue
        job_class.set(client=client, queue=f"p{len(written)}").perform_async(*args, **kwargs)
        written.append((signature, expected))
    assert len(written) > 150 and refused > 50
    for i, (signature, expected) in enumerate(written):
        (raw,) = r.lrange(f"queue:p{i}", 0, -1)
        assert received(signature, json.loads(raw)["args"], {}) == expected
    assert r.dbsize() == len(written) + 1  # one list per push, and the queues set: nothing else was written


def test_the_calls_type_checkers_accept_are_accepted_at_run_time(redis_server, r):
    """tests/typecheck/calls.py's correct calls (which mypy and pyright accept, see test_typing.py) all push."""
    spec = importlib.util.spec_from_file_location("typecheck_calls", Path(__file__).parent / "typecheck" / "calls.py")
    calls = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(calls)
    sidepunch.configure(redis_server.url)
    try:
        calls.good_calls()
        asyncio.run(calls.good_async_calls())
    finally:
        sidepunch.configure(redis=r)
    source = inspect.getsource(calls.good_calls) + inspect.getsource(calls.good_async_calls)
    pushes = len(re.findall(r"\.a?perform_(?:async|in|at)\(", source))
    bulk_rows = 2 + 1
    assert sum(r.llen(k) for k in r.keys("queue:*")) + r.zcard("schedule") == pushes + bulk_rows


def test_the_message_names_perform_s_parameters_without_showing_defaults(client, r):
    class Unprintable:
        def __repr__(self):
            raise RuntimeError("no repr")

    class Odd(Job):
        def perform(self, a, b=Unprintable(), *rest, c=[0] * 10_000, **extra):
            pass
    shown = "perform(a, b=..., *rest, c=..., **extra)"
    with pytest.raises(TypeError) as caught:
        Odd.set(client=client).perform_async()
    assert str(caught.value).endswith(f"missing a required argument: 'a' ({shown})")
    with pytest.raises(TypeError, match=r"argument\(s\) 'd', keyword-only or \*\*kwargs in perform\(a, b=\.\.\."):
        Odd.set(client=client).perform_async(1, d=2)
    assert r.dbsize() == 0
