"""The start-up warning about queues that hold jobs but that no -q of this daemon names (the master's, once).

Must not import: sidepunch.api or sidepunch.admin (core and client only).
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import redis

from ..core import keys
from ..core.connection import OUTAGE_ERRORS

log = logging.getLogger("sidepunch.master")

UNLISTENED_SHOWN = 10    # queue names in the start-up warning about queues no -q names


def warn_unlistened_queues(client: Any, queue_names: Sequence[str]) -> None:
    """Jobs that wait on a queue no -q names would sit there silently; say so once, at start (a few lines at
    most). The names come from Redis and may be any bytes: they are used as bytes and shown escaped."""
    listened = {name.encode("utf-8", "surrogateescape") for name in queue_names}
    try:
        names = sorted(q for q in client.smembers(keys.QUEUES) if q not in listened)
        pipe = client.pipeline(transaction=False)
        for name in names:
            pipe.llen(keys.queue(name))
        sizes = pipe.execute(raise_on_error=False)  # a queue key of another type answers an error
    except OUTAGE_ERRORS:
        return
    except redis.RedisError as exc:
        log.warning("could not check for queues that no -q names: %s", exc)
        return
    waiting = [(keys.printable(q), n) for q, n in zip(names, sizes) if type(n) is int and n]
    for name, size in waiting[:UNLISTENED_SHOWN]:
        log.warning("queue '%s' has %d job(s) but this daemon does not fetch from it (add -q %s)",
                    name, size, name)
    if len(waiting) > UNLISTENED_SHOWN:
        log.warning("%d more queue(s) have jobs that this daemon does not fetch", len(waiting) - UNLISTENED_SHOWN)

