"""What the daemon and the admin API both write into Sidekiq's sorted sets and error fields.

Owns the dead-set writer (lua/dead.lua: add, trim by age and size, keep keys.DEAD_REASONS in step), Sidekiq's
compressed `error_backtrace` encoding, and the payload a `schedule` / `retry` entry is enqueued with. It lives
in core so that sidepunch.api never imports the server. Imports nothing of sidepunch's above core.
"""
from __future__ import annotations

import base64
import json
import zlib
from typing import Sequence

import redis

from . import keys, scripts
from .payload import encode


def encode_backtrace(lines: Sequence[str]) -> str:
    """Sidekiq's error_backtrace: JSON, zlib-deflated, MIME Base64 with a newline every 60 characters."""
    raw = base64.b64encode(zlib.compress(encode(list(lines)))).decode("ascii")
    return "".join(raw[i:i + 60] + "\n" for i in range(0, len(raw), 60))


def decode_backtrace(value: str | list) -> list[str]:
    if isinstance(value, list):
        return value
    return json.loads(zlib.decompress(base64.b64decode(value)))


def requeue_payload(job: dict, now: float) -> dict:
    """The payload Client.push would write for a job read back from a sorted set."""
    out = {"retry": job.get("retry", True), "queue": job.get("queue") or "default"}
    out.update(job)
    out["enqueued_at"] = now
    return out


class DeadSet:
    """Writes to the dead set, trimmed by age and size in the same step (lua/dead.lua).

    `reason` is for a payload kept byte for byte (it cannot carry error fields): it goes to keys.DEAD_REASONS,
    and leaves that hash again when the entry is trimmed.
    """

    def __init__(self, max_jobs: int, timeout: float) -> None:
        self.max_jobs = max_jobs
        self.timeout = timeout
        self._script = scripts.unbound("dead")

    def add_into(self, pipe: redis.client.Pipeline | redis.Redis, payload: bytes, now: float,
                 reason: str | None = None) -> None:
        self._script(keys=[keys.DEAD, keys.DEAD_REASONS],
                     args=[payload, now, now - self.timeout, self.max_jobs, reason or ""], client=pipe)
