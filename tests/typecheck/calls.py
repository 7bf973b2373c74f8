"""Calls a type checker must accept, and calls it must flag (each marked `# expect-error` on its line).

Not collected by pytest and never run: tests/test_typing.py runs mypy (and pyright, when it can run) on this
file and checks that exactly the marked lines are reported. One call per line, so a report's line is the call's.
"""
from __future__ import annotations

import datetime as dt

from sidepunch import Job, JobSetter, job


class SendEmail(Job):
    queue = "mail"

    def perform(self, to: str, template_id: int, lang: str = "en") -> None:
        pass


class Fetch(Job):
    async def perform(self, url: str, tries: int = 3) -> None:  # an async job: enqueued like any other
        pass


class Untyped(Job):
    def perform(self, a, b):  # no annotations: the count and the names are still checked
        pass


class Anything(Job):
    def perform(self, *args):
        pass


class NamesLikeTheMethods(Job):
    def perform(self, cls: int, interval: int, when: int) -> None:  # the enqueue methods' own are positional-only
        pass


class Inherits(SendEmail):
    pass


@job
def add(x: int, y: int = 0) -> int:
    return x + y


@job(queue="low", retry=3)
def greet(name: str) -> str:
    return "hi " + name


@job
async def crawl(url: str, depth: int = 1) -> None:
    pass


AT = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)


def good_calls() -> None:
    SendEmail.perform_async("a@b", 3)
    SendEmail.perform_async("a@b", 3, "fr")
    SendEmail.perform_async(to="a@b", template_id=3)
    SendEmail.perform_async("a@b", template_id=3, lang="fr")
    SendEmail.perform_in(60, "a@b", 3)
    SendEmail.perform_in(dt.timedelta(minutes=1), to="a@b", template_id=3)
    SendEmail.perform_at(AT, "a@b", 3)
    SendEmail.perform_at(1_900_000_000.0, "a@b", template_id=3)
    SendEmail.set(queue="urgent", retry=1).perform_async("a@b", 3)
    SendEmail.set(queue="urgent").set(retry=False).perform_in(5, "a@b", 3)
    setter: JobSetter[[str, int, str]] = SendEmail.set(queue="x")
    setter.perform_async("a@b", 3, "fr")  # a JobSetter[...] annotation has no defaults
    SendEmail.perform_bulk([["a@b", 3], ["c@d", "rows are untyped lists"]])
    Fetch.perform_async("https://example.com")
    Fetch.perform_async(url="https://example.com", tries=1)
    Untyped.perform_async(1, "two")
    Untyped.perform_async(a=1, b=2)
    Anything.perform_async()
    Anything.perform_async(1, "x", None)
    NamesLikeTheMethods.perform_async(cls=1, interval=2, when=3)
    NamesLikeTheMethods.perform_in(10, 1, interval=2, when=3)
    NamesLikeTheMethods.perform_at(AT, 1, 2, when=3)
    Inherits.perform_async("a@b", 3)
    add.perform_async(1)
    add.perform_async(x=1, y=2)
    add.perform_in(5, 1, 2)
    add.set(queue="other").perform_async(1, y=2)
    total: int = add(1, 2)
    greet.perform_at(AT, "bob")
    greeting: str = greet("bob")
    crawl.perform_async("https://example.com", depth=2)
    print(total, greeting, add.job_name(), add.job_class.queue)


async def good_async_calls() -> None:
    await SendEmail.aperform_async("a@b", 3)
    await SendEmail.aperform_in(60, "a@b", template_id=3)
    await SendEmail.aperform_at(AT, to="a@b", template_id=3)
    await SendEmail.set(queue="x").aperform_async("a@b", 3)
    await SendEmail.aperform_bulk([["a@b", 3]])
    await Fetch.aperform_async("https://example.com", 2)
    await add.aperform_async(1, 2)
    await crawl.aperform_in(5, "https://example.com")
    await crawl("https://example.com")


def wrong_calls() -> None:
    SendEmail.perform_async(3, 3)  # expect-error
    SendEmail.perform_async("a@b")  # expect-error
    SendEmail.perform_async("a@b", 3, "fr", "extra")  # expect-error
    SendEmail.perform_async("a@b", template=3)  # expect-error
    SendEmail.perform_async(to="a@b", template_id="3")  # expect-error
    SendEmail.perform_in("soon", "a@b", 3)  # expect-error
    SendEmail.perform_in(60, "a@b")  # expect-error
    SendEmail.perform_at(AT, 3, 3)  # expect-error
    SendEmail.set(queue="x").perform_async("a@b", "3")  # expect-error
    SendEmail.set(queue="x").set(retry=1).perform_in(5, to="a@b")  # expect-error
    Fetch.perform_async(42)  # expect-error
    Untyped.perform_async(1)  # expect-error
    Untyped.perform_async(1, 2, 3)  # expect-error
    Untyped.perform_async(a=1, c=2)  # expect-error
    NamesLikeTheMethods.perform_in(10, 1, 2)  # expect-error
    Inherits.perform_async("a@b")  # expect-error
    add.perform_async("1")  # expect-error
    add.perform_async(1, 2, 3)  # expect-error
    add.perform_async(z=1)  # expect-error
    add.perform_in(5, "1")  # expect-error
    add.set(queue="x").perform_async()  # expect-error
    greet.perform_async(name=1)  # expect-error
    crawl.perform_async("https://example.com", depth="2")  # expect-error
    wrong: str = add(1, 2)  # expect-error
    add.perform_asnyc(1)  # expect-error
    print(wrong)


async def wrong_async_calls() -> None:
    await SendEmail.aperform_async("a@b")  # expect-error
    await SendEmail.aperform_in(60, "a@b", 3, 4, 5)  # expect-error
    await SendEmail.aperform_at(AT, "a@b", lang="fr")  # expect-error
    await SendEmail.set(queue="x").aperform_async(3, 3)  # expect-error
    await Fetch.aperform_async(url=1)  # expect-error
    await add.aperform_async("1")  # expect-error
    await crawl.aperform_at(AT, 1)  # expect-error


def wrong_definitions() -> None:
    @job(qeue="low")  # expect-error
    def misspelt_option() -> None:
        pass
