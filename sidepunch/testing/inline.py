"""Inline mode: `with sidepunch.testing.inline():` runs each pushed job at once, in this process.

`Inline` is the mode the write seam hands entries to (client/modes.py). A push is validated and passed through
the client middleware as in production and encoded; then each of its jobs runs from those exact bytes decoded
back: the JSON round trip a worker sees. So arguments that would not survive the wire are refused at the push
with the error production gives (nothing runs), and a job gets exactly what a worker would give it. The push
returns once its jobs ran; what a job raises propagates to the pusher (no retries), and the jobs after it in a
bulk push do not run. Scheduled pushes (`perform_in`, `perform_at`) run at once too, as Sidekiq's inline mode
does: there is no later in a test. Jobs pushed by a running job run inside it, at once. An async job pushed
from sync code runs to completion on its own event loop (runner.Loops); pushed from a coroutine (`await
Job.aperform_async(...)`), it is awaited on the caller's loop. A Reschedule raised by a job or a server
middleware propagates to the pusher too: nothing would run it later.

`performed` lists the payloads (decoded) of the jobs that ran to the end, in the order they finished.

Must not import: sidepunch.server, sidepunch.api or sidepunch.admin (core and client only).
"""
from __future__ import annotations

from typing import Any, Sequence

from ..client import modes
from ..client.prepare import Entry
from .runner import Loops, Performer


class Inline:
    """Runs every push at once while it is active. A context manager: entering it turns the mode on."""

    def __init__(self, server_middleware: Sequence[Any] | None = None) -> None:
        self._performer = Performer(server_middleware)
        self.performed: list[dict[str, Any]] = []

    def __enter__(self) -> "Inline":
        modes.enter(self)
        return self

    def __exit__(self, *exc: object) -> None:
        modes.leave(self)

    def __repr__(self) -> str:
        return f"<sidepunch.testing.inline: {len(self.performed)} job(s) performed>"

    # The write seam's side (client/modes.py).
    def write(self, entries: Sequence[Entry]) -> None:
        with Loops() as loops:
            for queue, _at, payload in entries:
                self.performed.append(self._performer.run(payload, queue, loops))

    async def awrite(self, entries: Sequence[Entry]) -> None:
        for queue, _at, payload in entries:
            self.performed.append(await self._performer.arun(payload, queue))
