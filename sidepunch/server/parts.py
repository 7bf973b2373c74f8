"""The parts that run jobs in one process, built in one place for a sidepunchd worker (launcher.py) and an
embedded Manager (manager.py): the context the threads share, the ProcessorPool (with its AsyncRunner), the
CancelWatcher, the Heartbeat and the Poller. Nothing is started here; starting, signals and stopping are the
caller's.

Must not import: sidepunch.api or sidepunch.admin (core and client only); nor the launcher, the master or the manager.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Callable

from ..core import identity as identities
from ..core.connection import Outage, make_client
from ..core.middleware import MiddlewareContext, close_all
from ..features import build_features
from .cancels import CancelWatcher
from .config import Config
from .fetch import fetcher_class
from .heartbeat import Heartbeat
from .periodic import PeriodicScheduler
from .poller import Poller
from .pool import ProcessorPool
from .resolver import JobResolver
from .retry import DeadSet, RetryPolicy
from .state import ChildContext, LifecycleState
from .stats import Counters


def process_info(config: Config, identity: str, **extra: Any) -> dict[str, Any]:
    """The `info` a process record carries (SIDEKIQ_WIRE.md section 9); concurrency is the processor threads."""
    return {"hostname": identities.hostname(), "started_at": time.time(), "pid": os.getpid(), "tag": config.tag,
            "concurrency": config.threads, "queues": [q.name for q in config.queues], "labels": [],
            "identity": identity, **extra}


@dataclass
class Parts:
    """What runs jobs in one process, built and not started."""
    ctx: ChildContext
    pool: ProcessorPool
    cancels: CancelWatcher
    heartbeat: Heartbeat
    poller: Poller

    def stop(self, deadline: float, logger: logging.Logger) -> None:
        """Stop running jobs, in order: no more due jobs or cancels, the pool by `deadline` (running jobs finish
        or go back), the last beat and counts, then each middleware closed once (it may flush what it buffers)."""
        self.poller.stop()
        self.cancels.stop()
        self.pool.stop(deadline)
        self.heartbeat.stop()
        ctx = self.ctx
        close_all((ctx.server_middleware, self.pool.runner.chain, ctx.retry.death_handlers), logger)


def build_parts(config: Config, identity: str, state: LifecycleState, number: int, hooks: tuple[Any, Any, Any],
                retire: Callable[[str], None], on_signal: Callable[[str], None], info: dict[str, Any],
                logger: logging.Logger, spare: int = 8, on_beat: Callable[[], None] = lambda: None,
                on_tick: Callable[[], None] = lambda: None) -> Parts:
    """A worker process's parts (context, ProcessorPool, CancelWatcher, Heartbeat, Poller), as a sidepunchd worker
    and a Manager both build them. `hooks`: load_middleware's (sync chain, death handlers, async chain)."""
    middleware, death_handlers, async_middleware = hooks
    # a connection per processor thread, plus the heartbeat, poller, async recorder, cancel watcher, spares
    client = make_client(config.redis_url, max_connections=config.threads + spare)
    fetcher, counters = fetcher_class(config), Counters()
    if getattr(config, "metrics_port", 0):  # counts reach the master before each ack (observe/acks.py)
        from .observe.acks import metered
        from .observe.tally import MeteredCounters
        counters = MeteredCounters()
        fetcher = metered(fetcher, counters)
    features = build_features(MiddlewareContext(client, config=config))
    retry = RetryPolicy(client, DeadSet(config.dead_max_jobs, config.dead_timeout), config.max_retries,
                        fetcher.ack_into, death_handlers=death_handlers, features=features)
    ctx = ChildContext(redis=client, config=config, identity=identity, state=state,
                       outage=Outage(config.redis_url, logger), resolver=JobResolver(config.require),
                       retry=retry, server_middleware=middleware, features=features, counters=counters)
    pool = ProcessorPool(ctx, fetcher, number, retire=retire, async_chain=async_middleware)
    return Parts(ctx, pool, CancelWatcher(ctx, pool.running_jids, pool.stop_job),
                 Heartbeat(ctx, info, on_signal=on_signal, on_beat=on_beat, on_tick=on_tick),
                 Poller(ctx, DeadSet(config.dead_max_jobs, config.dead_timeout), periodic=PeriodicScheduler(ctx)))
