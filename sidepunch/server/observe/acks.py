"""A worker's fetch strategy with its job counts sent to the master just before each acknowledgement.

`metered(fetcher_class, counters)` subclasses the daemon's fetch strategy (fetch/) so that every place an
acknowledgement leaves the process first flushes the worker's tally (tally.MeteredCounters.flush): the deferred
acks that ride on the next fetch and `send_acks` (sync jobs), and `ack_into`, which the retry writer uses
inside its MULTI (failures, reschedules) and the async recorder's PendingAcks for its batches. Basic fetch
acknowledges nothing (a fetched job is gone from Redis), so it flushes before each fetch instead. Used only
with --metrics-port: without it the plain class runs, unchanged.

Must not import: sidepunch.api or sidepunch.admin (core and client only).
"""
from __future__ import annotations

from typing import Any

from ..fetch import BasicFetch, Fetcher, ReliableFetch
from .tally import MeteredCounters


def metered(base: type[Fetcher], counters: MeteredCounters) -> type[Fetcher]:
    """A subclass of `base` (ReliableFetch, BasicFetch or a subclass) that flushes `counters` before acks."""
    flush = counters.flush

    def ack_into(pipe: Any, unit: Any) -> None:
        flush()
        base.ack_into(pipe, unit)

    namespace: dict[str, Any] = {"ack_into": staticmethod(ack_into), "__doc__": f"{base.__name__}, metered."}
    if issubclass(base, ReliableFetch):
        def _fetch_next(self: Any) -> Any:
            if self._pending:  # the acknowledgements ride on this fetch
                flush()
            return base._fetch_next(self)  # type: ignore[attr-defined]

        def send_acks(self: Any) -> None:
            if self._pending:
                flush()
            base.send_acks(self)
        namespace.update(_fetch_next=_fetch_next, send_acks=send_acks)
    elif issubclass(base, BasicFetch):
        def fetch(self: Any) -> Any:
            flush()
            return base.fetch(self)
        namespace.update(fetch=fetch)
    return type(f"Metered{base.__name__}", (base,), namespace)
