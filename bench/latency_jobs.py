"""The job bench/latency_queues.py runs: records (queue, start - enqueue stamp) in Redis."""
import time

import sidepunch

KEY = "bench:latency-by-queue"


class QueueLatencyJob(sidepunch.Job):
    def perform(self, stamp, queue):
        sidepunch.default_client().redis.rpush(KEY, f"{queue} {time.time() - stamp!r}")
