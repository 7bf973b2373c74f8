"""Enqueueing when the database transaction commits: `on_commit(MyJob).perform_async(order.pk)`.

A job pushed inside `transaction.atomic()` may run before the transaction commits (the worker then does not
find the row) or even when it rolls back. `on_commit(job)` gives the job's usual JobSetter with a stand-in
client, `CommitClient`, that splits a push in two:

- at the call, the job is validated, passed through the client middleware and encoded, exactly as a push
  would be (so a bad argument raises there, inside the transaction, and rolls it back), and its jid returned;
- at the commit, those exact bytes are written through the real client's write seam (or to the testing mode
  active then), with Django's `transaction.on_commit`. A rolled back transaction, or savepoint, writes nothing.
  Outside any atomic block (autocommit) the write happens at once and its errors reach the caller; under
  manual transaction management (set_autocommit(False)) Django refuses it.

After the commit nothing can be rolled back any more: if the write fails (Redis unreachable past the client's
retries), the error and the payloads that were not written are logged at ERROR on the "sidepunch.django" logger,
and the other on-commit callbacks still run. Timestamps (`created_at`, `enqueued_at`, `perform_in`'s due time)
are those of the call.

Imports django and sidepunch's client.
"""
from __future__ import annotations

import functools
import logging
from typing import Any, Iterable, Mapping, ParamSpec, Sequence, overload

from django.db import transaction

from ...client import modes
from ...client.job import JobFunction, JobSetter, _Performs
from ...client.push import Client, Entry, default_client

P = ParamSpec("P")
log = logging.getLogger("sidepunch.django")


# Typed as Job.set is, so that `on_commit(MyJob).perform_async(...)` is checked against MyJob.perform.
@overload
def on_commit(job: type[_Performs[P]], /, *, using: str | None = None,
              client: Client | None = None) -> JobSetter[P]: ...
@overload
def on_commit(job: JobSetter[P] | JobFunction[P, Any], /, *, using: str | None = None,
              client: Client | None = None) -> JobSetter[P]: ...


def on_commit(job: Any, /, *, using: str | None = None, client: Client | None = None) -> JobSetter[Any]:
    """`job` (a Job class, a @job function or a `Job.set(...)`) pushed when the transaction on database
    `using` commits: `on_commit(SendReceipt).perform_async(order.pk)`, also perform_in / perform_at /
    perform_bulk. `client`: the sync Client to write through (default: the one sidepunch.configure set)."""
    return job.set(client=CommitClient(client, using))


class CommitClient:
    """A stand-in for a sync `sidepunch.Client` (only for `Job.set(client=...)`): prepares each push at once and
    writes it when the transaction on database `using` commits."""

    def __init__(self, client: Client | None = None, using: str | None = None) -> None:
        self._client = client
        self.using = using

    @property
    def twin(self) -> Any:
        raise TypeError("on_commit pushes are sync (Django's transactions are): call perform_async, not "
                        "aperform_async")

    def push(self, item: Mapping[str, Any]) -> str | None:
        client = default_client() if self._client is None else self._client
        prepared = client.preparer.one(item)
        if prepared is None:  # a client middleware stopped it
            return None
        self._defer(client, [prepared[0]])
        return prepared[1]

    def push_bulk(self, items: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> list[str]:
        return self.push_batches([items])

    def push_batches(self, batches: Iterable[Any]) -> list[str]:
        client = default_client() if self._client is None else self._client
        prepared = client.preparer.batches(batches)
        self._defer(client, [entries for entries, _ in prepared if entries])
        return [jid for _, jids in prepared for jid in jids]

    def _defer(self, client: Client, writes: list[list[Entry]]) -> None:
        """Django runs the callback at the commit, or at once outside an atomic block (then the caller sees
        any error, as with perform_async); it refuses it under manual transaction management."""
        if writes:
            then = _send_after_commit if transaction.get_connection(self.using).in_atomic_block else send
            transaction.on_commit(functools.partial(then, client, writes), using=self.using)


def send(client: Client, writes: Sequence[Sequence[Entry]]) -> None:
    """Write prepared pushes as `Client.push` does: to the testing mode active now, else the client's write seam.
    Each element of `writes` is one atomic push."""
    for entries in writes:
        mode = modes.active
        (client.write if mode is None else mode.write)(entries)


def _send_after_commit(client: Client, writes: Sequence[Sequence[Entry]]) -> None:
    """The writes of a committed transaction; a failure is logged with what was not written, and the other
    on-commit callbacks still run. Under a testing mode, what the mode raises (inline: the job's error) is
    raised, out of the `atomic` block, as a test expects."""
    if modes.active is not None:
        send(client, writes)
        return
    for done, entries in enumerate(writes):
        try:
            send(client, [entries])
        except Exception:
            lost = [(queue, at, payload.decode("utf-8", "replace"))
                    for batch in writes[done:] for queue, at, payload in batch]
            log.exception("sidepunch: %d job(s) could not be enqueued after the transaction committed; "
                          "(queue, at, payload) of each: %r", len(lost), lost)
            return
