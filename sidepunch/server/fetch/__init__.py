"""Fetching jobs from the queues: the `Fetcher` protocol (base.py), BasicFetch (basic.py), ReliableFetch
(reliable.py), the paused queues both leave out (paused.py), and `fetcher_class`, the one place the `--fetch` setting is read. Everything else asks the chosen
class: the worker builds each thread's fetcher with `for_thread`, the retry writer acknowledges with `ack_into`,
the master reads `recovers_on_death` to know whether a reaped worker can have left jobs to put back.
Must not import the worker's process code (launcher, pool) or the master."""
from __future__ import annotations

from typing import Any

from .base import FETCH_TIMEOUT, Fetcher, QueueOrder, ThreadSlot, UnitOfWork
from .basic import BasicFetch
from .paused import PausedQueues
from .reliable import ACK_NOW_AFTER, BATCH, ReliableFetch

__all__ = ["ACK_NOW_AFTER", "BATCH", "FETCH_TIMEOUT", "BasicFetch", "Fetcher", "PausedQueues", "QueueOrder", "ReliableFetch",
           "ThreadSlot", "UnitOfWork", "fetcher_class"]


def fetcher_class(config: Any) -> type[Fetcher]:
    """The fetch strategy the config names (config.py has already refused any other value)."""
    return ReliableFetch if config.fetch == "reliable" else BasicFetch
