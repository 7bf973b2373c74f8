"""The process-wide testing mode: where sidepunch.testing's fake() and inline() take over the write seam.

`active` is the innermost mode entered, or None (production: every push reaches Redis). `Client.push`,
`push_batches` and their AsyncClient twins read it once per write and, when a mode is on, hand the encoded
entries to `mode.write(entries)` (sync pushes) or `await mode.awrite(entries)` (async pushes) instead of the
client's own `write`. So validation and client middleware run as in production, and only the write differs.

Why module-global state: like the default client that `configure()` sets (push.py), a testing mode belongs to
the process, as Sidekiq::Testing.fake! does. It must reach every push, also those of clients the code under test
builds itself (`sidepunch.Client(...)`, `AsyncClient(...)`, either with `writer=` or a subclass), so it cannot
live on one client. It is the only module-global state of the client package besides that default client, and it
changes only through `enter` and `leave`, under a lock. Modes nest: the innermost wins and leaving it restores
the one around it; they must be left in the reverse order they were entered (a `with` block does that).

Must not import: sidepunch.server, sidepunch.api or sidepunch.admin (nothing of ours, in fact).
"""
from __future__ import annotations

import threading
from typing import Any, Protocol, Sequence


class Mode(Protocol):
    """What a testing mode gives the write seam: the encoded entries of one atomic push (see Client.write)."""

    def write(self, entries: Sequence[Any]) -> Any: ...

    async def awrite(self, entries: Sequence[Any]) -> Any: ...


#: The innermost mode entered, or None. Read without the lock (one attribute read per push); written under it.
active: Mode | None = None
_stack: list[Mode] = []
_lock = threading.Lock()


def enter(mode: Mode) -> None:
    """Make `mode` take every push in this process, from every thread, until `leave(mode)`."""
    global active
    with _lock:
        if any(m is mode for m in _stack):
            raise RuntimeError(f"{mode!r} is already active; a testing mode can be entered once at a time")
        _stack.append(mode)
        active = mode


def leave(mode: Mode) -> None:
    """Stop `mode`; pushes go back to the mode around it, or to Redis. RuntimeError if it was not the innermost
    (it is removed anyway, so normal pushes come back once every mode has left)."""
    global active
    with _lock:
        innermost = bool(_stack) and _stack[-1] is mode
        for i in range(len(_stack) - 1, -1, -1):
            if _stack[i] is mode:
                del _stack[i]
                break
        else:
            raise RuntimeError(f"{mode!r} is not active")
        active = _stack[-1] if _stack else None
    if not innermost:
        raise RuntimeError(f"{mode!r} was left before a testing mode entered inside it; leave modes in the "
                           "reverse order they were entered (use `with` blocks)")


def stack() -> tuple[Mode, ...]:
    """The modes entered, outermost first (for diagnostics and tests)."""
    with _lock:
        return tuple(_stack)
