"""`sidepunch.Batch`: a group of jobs with callbacks when they are all done (Sidekiq Pro's batches).

    batch = sidepunch.Batch(description="import 42", on_success=Notify, on_complete=Report, on_death=Alert)
    with batch:
        for row in rows:
            ImportRow.perform_async(row)

Every push made inside the block (perform_async, perform_bulk, a Client's push or push_bulk, sync or async) joins
the batch; `batch.bid` names it (sidepunch.api.BatchStatus(bid) reads it). The batch is created in Redis when its
first block opens, inside the innermost block open in this context (if any), which becomes its parent: a parent
completes only after its child. The callbacks run once each, as jobs whose `perform(self, bid, status)` gets the
batch id and a status dict: on_complete once every job ran (some may have failed and wait in retry), on_success
once every job succeeded, on_death when a job of the batch (or of a nested batch) died. The bookkeeping is in
sidepunch.features.batch and core/lua/batch_*.lua; this module only validates and prepares the batch's settings,
including each callback job's JSON, encoded here with markers the Lua script fills in when it pushes it.

Must not import: sidepunch.server, sidepunch.api or sidepunch.admin (core, features and this package only).
"""
from __future__ import annotations

import secrets
import time
from typing import Any

from ..core.payload import encode
from ..features.batch import BatchRef, Store, current_bid
from .validate import describe, normalize

#: The longest description a batch takes (characters).
MAX_DESCRIPTION = 1000
EVENTS = ("success", "complete", "death")
_SIDEKIQ_DEFAULTS = {"retry": True, "queue": "default"}


class Batch(BatchRef):
    """A new batch: `with batch:` adds the pushes made in the block. Thread- and task-safe: each thread or asyncio
    task sees only its own blocks; a block may be opened again later (more jobs join, while the callbacks have
    not fired). `client`: the sync Client whose Redis holds the batch (default: the one `configure()` set)."""

    held = False

    def __init__(self, description: str = "", *, on_success: Any = None, on_complete: Any = None,
                 on_death: Any = None, client: Any = None) -> None:
        if type(description) is not str or len(description) > MAX_DESCRIPTION:
            raise TypeError(f"a batch description must be a str of at most {MAX_DESCRIPTION} characters, got "
                            f"{describe(description)}")
        try:
            description.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("a batch description must be valid text (it holds a lone surrogate)") from None
        self.description = description
        self._client = client
        store = Store(self._redis)
        super().__init__(secrets.token_hex(12), store)
        mark = secrets.token_hex(16)
        self._settings = {"description": description, "mark": mark}
        for event, callback in zip(EVENTS, (on_success, on_complete, on_death)):
            if callback is not None:
                template, queue = callback_template(callback, mark, time.time())
                self._settings[f"cb_{event}"], self._settings[f"cbq_{event}"] = template, queue

    def _redis(self) -> Any:
        if self._client is None:
            from .push import default_client  # the default client of this process, as perform_async uses
            self._client = default_client()
        return self._client.redis

    def _opened(self) -> None:
        """Count the block open; the first one creates the batch, under the batch whose block is open here."""
        parent = current_bid()
        self.store.open(self.bid, True, {**self._settings, "parent": "" if parent in (None, self.bid) else parent})


def callback_template(callback: Any, mark: str, now: float) -> tuple[str, str]:
    """(the callback job's JSON with "args<mark>", "jid<mark>" and "now<mark>" where batch_lib.lua puts the
    arguments, the jid and the time, its queue). `callback`: a Job class, a @job function or a class name."""
    target = getattr(callback, "__sidepunch_job__", None)
    if target is not None and (callback is target or getattr(callback, "job_class", None) is target):
        options, name = target.job_options(), target.job_name()
    elif isinstance(callback, str) and callback:
        options, name = _SIDEKIQ_DEFAULTS, str.__str__(callback)
    else:
        raise TypeError(f"a batch callback must be a Job class, a @job function or a class name, got "
                        f"{describe(callback)}")
    job, odd = normalize({"args": []}, options, name, now)
    job.pop("at", None)
    job.update(args=f"args{mark}", jid=f"jid{mark}", created_at=f"now{mark}", enqueued_at=f"now{mark}")
    try:
        text = encode(job, odd).decode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"batch callback {name!r} is not valid text (it holds a lone surrogate)") from None
    if text.count(f'"args{mark}"') != 1 or text.count(f'"jid{mark}"') != 1 or text.count(f'"now{mark}"') != 2:
        raise ValueError(f"the options of batch callback {name} hold the template's marker")
    return text, job["queue"]


__all__ = ["Batch", "callback_template", "MAX_DESCRIPTION"]
