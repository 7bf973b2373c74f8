"""Every Redis key Sidepunch reads or writes, in one place.

The layout is Sidekiq 6's (see SIDEKIQ_WIRE.md) so that Ruby clients and Sidekiq's tools share the data.
Only the working lists and the liveness keys of reliable fetch are our own additions.

| key                               | type   | written by                   | content                                   |
|-----------------------------------|--------|------------------------------|-------------------------------------------|
| queues                            | SET    | client (SADD on push)        | names of queues, without the prefix       |
| queue:<q>                         | LIST   | client LPUSH; fetch pops R   | job JSON; the right end is the oldest     |
| schedule                          | ZSET   | client (perform_in/at)       | job JSON without `at`; score = due time   |
| retry                             | ZSET   | retry logic                  | failed job JSON; score = next attempt     |
| dead                              | ZSET   | exhausted retries, kills     | job JSON (raw bytes if unparseable)       |
| sidepunch:dead-reasons            | HASH   | whoever adds to `dead`       | dead member (exact bytes) -> why it is    |
|                                   |        | without error fields         | there, UTF-8 text (ours)                  |
| stat:processed, stat:failed       | STRING | heartbeat INCRBY             | all-time totals                           |
| stat:processed:<UTC date> (same for failed) | STRING | heartbeat          | daily totals, expire after 5 years        |
| processes                         | SET    | heartbeat SADD, shutdown SREM| identities of live processes              |
| <identity>                        | HASH   | heartbeat, TTL 60            | info, busy, beat, quiet, rss, rtt_us      |
| <identity>:workers                | HASH   | heartbeat, TTL 60            | tid -> {queue, payload, run_at}           |
| <identity>-signals                | LIST   | admin API LPUSH              | remote signal names, one popped per beat  |
| working:queue:<q>:<identity>.<t>  | LIST   | reliable fetch (LMOVE)       | jobs thread <t> is running (ours)         |
| sidepunch:alive:<identity>        | STRING | heartbeat, short TTL         | liveness for orphan recovery (ours)       |
| sidepunch:recovery-lock           | STRING | orphan recovery, SET NX EX   | one master recovers at a time (ours)      |

The working-list name follows gitlab-sidekiq-fetcher's, with a thread suffix on the identity.
"""
from __future__ import annotations

QUEUES = "queues"
SCHEDULE = "schedule"
RETRY = "retry"
DEAD = "dead"
PROCESSES = "processes"
STAT_PROCESSED = "stat:processed"
STAT_FAILED = "stat:failed"
RECOVERY_LOCK = "sidepunch:recovery-lock"
#: Why a member of `dead` is there when its bytes could not carry error fields (unreadable or unwritable JSON).
DEAD_REASONS = "sidepunch:dead-reasons"
WORKING_PATTERN = "working:queue:*"
ALIVE_PREFIX = "sidepunch:alive:"


def queue(name: str) -> str:
    return f"queue:{name}"


def queue_name(key: str | bytes) -> str:
    if isinstance(key, bytes):
        key = key.decode()
    return key[len("queue:"):] if key.startswith("queue:") else key


def daily_stat(stat_key: str, date: str) -> str:
    return f"{stat_key}:{date}"


def workers(identity: str) -> str:
    return f"{identity}:workers"


def signals(identity: str) -> str:
    return f"{identity}-signals"


def working(queue_name: str, identity: str, thread: int) -> str:
    """One list per processor thread, so a thread can tell which jobs are its own after an outage."""
    return f"working:queue:{queue_name}:{identity}.{thread}"


def parse_working(key: str | bytes) -> tuple[str, str] | None:
    """Split a working-list key into (queue, process identity); the identity is the last three ':' parts,
    less the thread suffix."""
    if isinstance(key, bytes):
        key = key.decode()
    if not key.startswith("working:queue:"):
        return None
    parts = key[len("working:queue:"):].split(":")
    if len(parts) < 4:
        return None
    parts[-1] = parts[-1].split(".", 1)[0]
    return ":".join(parts[:-3]), ":".join(parts[-3:])


def alive(identity: str) -> str:
    return ALIVE_PREFIX + identity
