"""Stopping a sync job in its thread: an asynchronous exception, raised between two bytecodes of that thread.

CPython checks for such an exception in its evaluation loop, so pure-Python code stops at once (within a few
bytecodes), wherever it is. A thread blocked in a C call (time.sleep, a socket read, a database driver waiting
for its server) stops only when the call returns; the pool escalates if that takes longer than
--interrupt-grace (see pool.py). A C call that holds the GIL all along (a huge regular expression) stops the
whole process, which the master then replaces after --worker-timeout.

An interrupt can land anywhere, also between a lock's acquire and the `try` that releases it. The logging
module does just that (Handler.handle, getLogger): a thread stopped there would keep a handler's lock for
ever, and every other thread would hang at its next log line. So once an interrupted job has ended, its thread
gives back the logging locks it still holds (`release_logging_locks`): outside a logging call it holds none.

The exception is `Interrupted`, a BaseException so that a job's `except Exception:` does not swallow it; the
processor records the job by why it was interrupted (timeout or cancel), not by what the job then raised.

Must not import: sidepunch.api or sidepunch.admin (core and client only).
"""
from __future__ import annotations

import ctypes
import logging

_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
_set_async_exc.argtypes = (ctypes.c_ulong, ctypes.py_object)
_set_async_exc.restype = ctypes.c_int
# The same function, declared apart so that NULL (not Py_None) can be passed: NULL clears a pending exception.
_clear_async_exc = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)(
    ("PyThreadState_SetAsyncExc", ctypes.pythonapi))


class Interrupted(BaseException):
    """Raised inside a running sync job by its worker (the job timed out or was cancelled)."""


def interrupt(thread_ident: int) -> bool:
    """Raise Interrupted in the thread `thread_ident` at its next bytecode; False if no such thread."""
    return _set_async_exc(thread_ident, Interrupted) == 1


def clear(thread_ident: int) -> None:
    """Withdraw an Interrupted sent to `thread_ident` that has not been raised yet (the job ended first)."""
    _clear_async_exc(thread_ident, None)


def release_logging_locks() -> int:
    """Release the logging locks (the module's, every handler's) that the calling thread still holds, however
    many times it took them; call it only outside any logging call. Returns how many locks were held."""
    held = 0
    handlers = [ref() for ref in list(logging._handlerList)]  # type: ignore[attr-defined]
    for lock in [logging._lock, *(h.lock for h in handlers if h is not None)]:  # type: ignore[attr-defined]
        owned = getattr(lock, "_is_owned", None)
        if owned is None or not owned():  # a handler without a lock, or one of another kind
            continue
        held += 1
        while owned():
            lock.release()
    return held
