"""What the threads of one worker process share: its lifecycle state and its collaborators.

Must not import: sidepunch.api or sidepunch.admin (core and client only).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence


from ..core.connection import Outage
from ..features import FeatureSet
from .resolver import JobResolver
from .retry import RetryPolicy
from .stats import Counters, WorkTable


class LifecycleState:
    """fetching -> quiet (stop fetching) -> stopping; one hard deadline, from the monotonic clock."""

    def __init__(self) -> None:
        self._fetching = threading.Event()
        self._fetching.set()
        self.stopping = False
        self.hard_deadline: float | None = None

    @property
    def fetching(self) -> bool:
        return self._fetching.is_set() and not self.stopping

    @property
    def quiet(self) -> bool:
        return not self._fetching.is_set()

    def go_quiet(self) -> None:
        self._fetching.clear()

    def resume(self) -> None:
        if not self.stopping:
            self._fetching.set()

    def stop(self, deadline: float) -> None:
        self._fetching.clear()
        self.stopping = True
        self.hard_deadline = deadline if self.hard_deadline is None else min(deadline, self.hard_deadline)

    def wait_until_fetching(self, timeout: float) -> None:
        self._fetching.wait(timeout)

    def past_hard_deadline(self) -> bool:
        return self.hard_deadline is not None and time.monotonic() >= self.hard_deadline


@dataclass
class ChildContext:
    redis: redis.Redis
    config: Any
    identity: str
    state: LifecycleState
    outage: Outage
    resolver: JobResolver
    retry: RetryPolicy
    counters: Counters = field(default_factory=Counters)
    work: WorkTable = field(default_factory=WorkTable)
    server_middleware: Sequence[Any] = ()
    features: FeatureSet = field(default_factory=FeatureSet)  # the built-in features (sidepunch/features)
    #: Called with (job, exception, outcome) after each failure is recorded (hooks.failure_hook), or None.
    on_failure: Callable[[dict, BaseException, Any], None] | None = None
