"""In-memory job counters and the table of running jobs, both read by the heartbeat.

Processor threads count here instead of writing to Redis per job; the heartbeat flushes the counts.

Must not import: sidepunch.api or sidepunch.admin (core and client only).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass


class Counters:
    """processed counts every execution, failed only failures (Sidekiq's rule)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.processed = 0
        self.failed = 0
        self.cancelled = 0
        self.total_processed = 0  # all-time counts of this process, never handed to the flusher
        self.total_failed = 0

    def record(self, failed: bool, cancelled: bool = False) -> None:
        with self._lock:
            self.processed += 1
            self.total_processed += 1
            if failed:
                self.failed += 1
                self.total_failed += 1
            if cancelled:
                self.cancelled += 1

    def take(self) -> tuple[int, int, int]:
        """Hand the counts (processed, failed, cancelled) to the flusher; `give_back` if the flush fails."""
        with self._lock:
            counts = (self.processed, self.failed, self.cancelled)
            self.processed = self.failed = self.cancelled = 0
        return counts

    def give_back(self, processed: int, failed: int, cancelled: int = 0) -> None:
        with self._lock:
            self.processed += processed
            self.failed += failed
            self.cancelled += cancelled


@dataclass(frozen=True)
class Work:
    queue: str
    payload: bytes
    run_at: int


class WorkTable:
    """tid -> the job running under that name: a processor thread's `p<n>`, or an async job's `a<n>`. Dict
    operations are atomic under the GIL."""

    def __init__(self) -> None:
        self._running: dict[str, Work] = {}

    def start(self, tid: str, queue: str, payload: bytes) -> None:
        self._running[tid] = Work(queue, payload, int(time.time()))

    def finish(self, tid: str) -> None:
        self._running.pop(tid, None)

    def snapshot(self) -> dict[str, Work]:
        return dict(self._running)

    def __len__(self) -> int:
        return len(self._running)
