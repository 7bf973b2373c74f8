"""Every Redis key Sidepunch reads or writes, in one place.

The layout is Sidekiq 6's (see SIDEKIQ_WIRE.md) so that Ruby clients and Sidekiq's tools share the data.
Only the working lists and the liveness keys of reliable fetch are our own additions.

| key                               | type   | written by                   | content                                   |
|-----------------------------------|--------|------------------------------|-------------------------------------------|
| queues                            | SET    | SADD: client on push, poller,| names of queues, without the prefix; any  |
|                                   |        | recovery                     | bytes (a name read back is hostile input) |
| queue:<q>                         | LIST   | client, poller LPUSH; fetch  | job JSON; the right end is the oldest     |
|                                   |        | pops R; recovery RPUSHes back|                                           |
| schedule                          | ZSET   | client (perform_in/at)       | job JSON without `at`; score = due time   |
| retry                             | ZSET   | retry logic                  | failed job JSON; score = next attempt     |
| dead                              | ZSET   | exhausted retries, kills,    | job JSON (raw bytes if unparseable)       |
|                                   |        | recovery, poller             |                                           |
| sidepunch:dead-reasons            | HASH   | whoever adds to `dead`       | dead member (exact bytes) -> why it is    |
|                                   |        | without error fields         | there, UTF-8 text (ours); deleted with it |
| stat:processed, stat:failed       | STRING | heartbeat INCRBY             | all-time totals                           |
| stat:processed:<UTC date> (same for failed) | STRING | heartbeat          | daily totals, expire after 5 years        |
| processes                         | SET    | heartbeat SADD, shutdown SREM| identities of live processes              |
| <identity>                        | HASH   | heartbeat, TTL 60            | info, busy, beat, quiet, rss, rtt_us      |
| <identity>:workers                | HASH   | heartbeat, TTL 60            | tid -> {queue, payload, run_at}           |
| <identity>-signals                | LIST   | admin API LPUSH              | remote signal names, one popped per beat  |
| working:queue:<q>:<identity>.<t>  | LIST   | reliable fetch (LMOVE)       | jobs thread <t> is running (ours)         |
| sidepunch:alive:<identity>        | STRING | heartbeat, short TTL         | liveness for orphan recovery (ours)       |
| sidepunch:recovery-lock           | STRING | orphan recovery, SET NX EX   | one master recovers at a time (ours)      |
| sidepunch:cancel:<jid>            | STRING | api.cancel SET EX 1 day;     | a cancel request for a running jid: JSON  |
|                                   |        | the worker that acts DELs it | {"at": epoch} (ours)                      |
| sidepunch:result:<jid>            | STRING | worker, SET EX keep_result   | a finished job's return value: JSON       |
|                                   |        |                              | {"jid","class","result","finished_at"} or |
|                                   |        |                              | {"jid","class","error",...} (ours)        |
| sidepunch:stat:cancelled          | STRING | heartbeat INCRBY             | all-time count of cancelled jobs (ours)   |
| sidepunch:metrics:j:<step>:<slot> | HASH   | heartbeat HINCRBY, TTL per   | per job class, the executions that ended  |
|                                   |        | step (METRICS_STEPS)         | in the slot: runs, failures, total ms     |
|                                   |        |                              | (fields below) (ours)                     |
| sidepunch:metrics:h:<step>:<slot>:| HASH   | heartbeat HINCRBY, TTL per   | execution-time histogram of one class:    |
| <class>                           |        | step                         | bucket index -> count (ours)              |
| sidepunch:periodic:claim:<name>:  | STRING | the periodic scheduler,      | the claim of one tick of one entry: the   |
| <fingerprint>:<tick>              |        | SET NX EX                    | claimer's identity (ours)                 |
| sidepunch:periodic:last           | HASH   | the tick's claimer           | entry name -> JSON {"tick", "jid", "at",  |
|                                   |        |                              | "fingerprint"} of its last enqueue (ours) |
| sidepunch:periodic:entries        | HASH   | every daemon's scheduler     | entry name -> the entry's JSON (ours)     |
| sidepunch:periodic:seen           | ZSET   | every daemon's scheduler     | entry name; score = when its registration |
|                                   |        |                              | lapses unless a daemon renews it (ours)   |
| sidepunch:periodic:disabled       | SET    | api PeriodicSet.disable      | names of disabled entries (ours)          |
| sidepunch:batches                 | ZSET   | batch_open.lua (client)      | every batch id; score = created_at (ours) |
| sidepunch:batch:<bid>             | HASH   | batch_*.lua (client, worker) | a batch's counters, settings, callback    |
|                                   |        |                              | templates and times (ours; see below)     |
| sidepunch:batch:<bid>:members     | HASH   | batch_*.lua                  | member (jid, or "b:" + child bid) -> p    |
|                                   |        |                              | (waiting), f (failed), s (succeeded)      |
| sidepunch:limits                  | HASH   | every acquire (limit_acquire | limiter name -> its definition, JSON      |
|                                   |        | .lua), api reset --forget    | {"kind", "limit"/"rate", ...} (ours)      |
| sidepunch:limits:seen             | ZSET   | every acquire; api reset     | limiter name -> last use; a name idle 30  |
|                                   |        | --forget                     | days leaves it and sidepunch:limits (ours)|
| sidepunch:limit:concurrent:<name> | ZSET   | limit_acquire / _release.lua | lease token -> expiry (Redis time) (ours) |
| sidepunch:limit:window:<name>     | ZSET   | limit_acquire.lua            | token -> admission time, last `per` s     |
| sidepunch:limit:bucket:<name>     | HASH   | limit_acquire.lua            | tokens (float), at (Redis time) (ours)    |
| sidepunch:limit:waiting:<name>    | ZSET   | limit_acquire.lua            | jid (or acquire token) refused a slot ->  |
|                                   |        |                              | when it stops counting as waiting (ours)  |
| sidepunch:limit:hold:<name>       | STRING | limit_release.lua, EX 1 day  | average seconds a concurrent slot is held |
| sidepunch:paused                  | SET    | api Queue.pause / unpause    | names of paused queues, without the prefix|
|                                   |        | (CLI, dashboard); read by    | (any bytes); fetchers skip them (ours)    |
|                                   |        | every fetcher once a second  |                                           |
| sidepunch:unique:<digest>         | STRING | client push script SET NX PX;| JSON [jid, class] of the unique job that  |
|                                   |        | its job DELs it (Lua CAD)    | holds the lock; TTL = its window (ours)   |

The metrics slots are UTC `YYYYMMDDTHHMM` stamps of a slot's start; `<step>` is the slot length in seconds: 60
(minutes, kept 9 hours) or 600 (10 minutes, kept 73 hours). The counts hash has three fields per class, as
Sidekiq 7's metrics do: `<class>` + "|p" (runs, failed ones included), + "|f" (failures), + "|ms" (total
execution time, whole milliseconds). The histogram's bucket bounds are METRICS_BUCKET_BOUNDS. The process
hash `<identity>` also carries our fields `sidepunch_processed` and `sidepunch_failed`: the jobs that process
has run and failed since it started; and `sidepunch_fetch`, its fetch strategy.

The working-list name follows gitlab-sidekiq-fetcher's, with a thread suffix on the identity.

Payload fields the server writes besides Sidekiq's: `interrupted_count` (int), how many times a worker died
while running the job (gitlab-sidekiq-fetcher's name; recovery writes it into the payload's bytes, see
recovery.py); a job killed for it also gets `error_class` "sidepunch.WorkerDied", `error_message` and, if it
had none, `failed_at`.

Payload field of expiring jobs (features/expiry.py): `expires_at` (epoch float), written by the client when a job
has `expires_in` (seconds, also kept in the payload): the job's due time (its `at` if scheduled for later, else the
push) plus expires_in. A worker that fetches the job after it acknowledges it without running it and counts it in
stat:expired; a value that is no finite number after 1970 is no deadline (the job runs).
Payload fields the client writes for unique jobs (core/unique.py): `unique_digest` (64 hex digits: SHA-256 of
the class, queue and `unique_args`), beside the class options `unique_for` and `unique_until`.

Payload fields a periodic enqueue adds: `periodic_name` (the entry's name) and `periodic_tick` (the tick, epoch
seconds; absent for "run now" from the API/CLI). The claim key's `<fingerprint>` hashes the entry's cron, tz, job,
args and queue (core/periodic.py), `<tick>` is the tick's epoch in whole seconds.

Payload fields of tracing (sidepunch.contrib.opentelemetry, only when it is registered): `traceparent` and
`tracestate`, the W3C Trace Context of the span that pushed the job, as the client middleware writes them.

Batches (features/batch.py, client/batch.py, core/lua/batch_*.lua): the payload field `bid` names the batch a
job belongs to. The batch hash holds `bid`, `description`, `parent` (a parent bid or ""), `created_at`, the counters
`total`, `pending`, `failures`, `finished`, `opens` (integers), the times `complete_at`, `success_at`, `death_at`
(set once, when that callback was pushed), `mark` (the random marker of the templates) and, per callback event
(success, complete, death), `cb_<event>` (the callback job's JSON with marker strings for args, jid and times)
and `cbq_<event>` (its queue). Once a batch completed, both its keys expire BATCH_TTL seconds after its last change.

Key names read back from Redis (SCAN, `queues`, `processes`) are hostile input: they may be any bytes. The
functions below take `bytes` as well as `str` and then answer in bytes, so such a name is used as it is, never
decoded; `printable` shows one in a log line. The process identity inside these names is built by identity.py.
Imports nothing of sidepunch's.
"""
from __future__ import annotations

import time
import unicodedata

QUEUES = "queues"
SCHEDULE = "schedule"
RETRY = "retry"
DEAD = "dead"
PROCESSES = "processes"
STAT_PREFIX = "stat:"
STAT_PROCESSED = STAT_PREFIX + "processed"
STAT_FAILED = STAT_PREFIX + "failed"
RECOVERY_LOCK = "sidepunch:recovery-lock"
#: Why a member of `dead` is there when its bytes could not carry error fields (unreadable or unwritable JSON).
DEAD_REASONS = "sidepunch:dead-reasons"
WORKING_PATTERN = "working:queue:*"
ALIVE_PREFIX = "sidepunch:alive:"
CANCEL_PREFIX = "sidepunch:cancel:"
RESULT_PREFIX = "sidepunch:result:"
STAT_CANCELLED = "sidepunch:stat:cancelled"
#: All-time counts of jobs that expired before they ran (`expires_in`) and that a rate limit put back (not runs).
STAT_EXPIRED = "stat:expired"
STAT_RATE_LIMITED = "stat:rate_limited"
#: Counters.event kinds -> their all-time stat key (flushed by the heartbeat like stat:processed).
STAT_EVENTS = {"cancelled": STAT_CANCELLED, "expired": STAT_EXPIRED, "rate_limited": STAT_RATE_LIMITED}
#: How long a cancel request waits for the process that runs (or will run) its jid to act on it.
CANCEL_TTL = 86_400
#: Batches: the hash of one batch is BATCH_PREFIX + bid, its members' states BATCH_PREFIX + bid + ":members";
#: BATCHES lists every batch id by creation time. A finished batch's keys live BATCH_TTL seconds (30 days).
BATCH_PREFIX = "sidepunch:batch:"
BATCHES = "sidepunch:batches"
BATCH_TTL = 30 * 86_400
METRICS_PREFIX = "sidepunch:metrics:"
PERIODIC_PREFIX = "sidepunch:periodic:"
PERIODIC_LAST = PERIODIC_PREFIX + "last"
PERIODIC_ENTRIES = PERIODIC_PREFIX + "entries"
PERIODIC_SEEN = PERIODIC_PREFIX + "seen"
PERIODIC_DISABLED = PERIODIC_PREFIX + "disabled"
#: Rate limits (sidepunch.limits): the registry of limiter definitions, HASH name -> definition JSON.
LIMITS = "sidepunch:limits"
#: ZSET limiter name -> its last use (Redis time); a name unused for LIMITS_IDLE seconds leaves both.
LIMITS_SEEN = "sidepunch:limits:seen"
LIMITS_IDLE = 30 * 86_400
LIMIT_PREFIX = "sidepunch:limit:"
#: SET of the names of paused queues (no `queue:` prefix; any bytes). Written by sidepunch.api (Queue.pause /
#: unpause: the CLI and the dashboard), read by every worker's fetchers at most about once a second.
PAUSED = "sidepunch:paused"
#: Unique jobs (features/unique.py): STRING `sidepunch:unique:<digest>`, value JSON [jid, class] of the job that
#: holds it, TTL = unique_for (+ the delay of a scheduled push); SET NX by the client's push script
#: (lua/unique_push.lua), deleted by its own job only (lua/release_unique.lua), or by `api.delete_unique_lock`.
UNIQUE_PREFIX = "sidepunch:unique:"
#: Metrics rollups: slot length in seconds -> how long its keys live (a little over the longest window read
#: from it: 8 hours from minutes, 72 hours from 10-minute slots).
METRICS_STEPS = {60: 9 * 3600, 600: 73 * 3600}
#: Upper bounds (seconds, exclusive) of the execution-time histogram's buckets; bucket i counts times below
#: bound i (and at or over bound i-1), the last bucket (index len(bounds)) the rest. Fixed: histograms of every
#: process and slot add up.
METRICS_BUCKET_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                         60.0, 300.0)
#: Our fields in the process hash: jobs run and failed by the process since it started (resque-web shows them).
PROCESS_PROCESSED = "sidepunch_processed"
PROCESS_FAILED = "sidepunch_failed"
#: The process's fetch strategy ("reliable" or "basic"): with reliable fetch its working lists, not its workers
#: hash (rewritten only every beat), say which jobs it holds (sidepunch.api.status reads them).
PROCESS_FETCH = "sidepunch_fetch"
#: Tracing's payload fields (top-level, strings): the W3C Trace Context `traceparent` ("00-<trace id>-<span
#: id>-<flags>") and `tracestate` (vendor entries; absent when empty) of the producer span that pushed the job.
#: Written at push time by TracingClientMiddleware (sidepunch.contrib.opentelemetry) through OpenTelemetry's
#: propagator, read by TracingServerMiddleware, which ignores values that are not strings of sane length or do
#: not parse. Retries and the schedule keep them, so every run of a job is a child of the same push. Sidekiq
#: ignores them; Ruby's OpenTelemetry Sidekiq instrumentation uses the same top-level fields.
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"


def _join(prefix: str, name: str | bytes, suffix: str = "") -> str | bytes:
    if isinstance(name, bytes):
        return prefix.encode() + name + suffix.encode()
    return f"{prefix}{name}{suffix}"


def queue(name: str | bytes) -> str | bytes:
    if type(name) is bytes:  # spelled out, not through _join: fetch builds these keys for every job
        return b"queue:" + name
    return f"queue:{name}"


def queue_name(key: str | bytes) -> str:
    if isinstance(key, bytes):
        key = key.decode()
    return key[len("queue:"):] if key.startswith("queue:") else key


def stat(name: str) -> str:
    """`stat:<name>`: an all-time counter (processed, failed)."""
    return f"{STAT_PREFIX}{name}"


def daily_stat(stat_key: str, date: str) -> str:
    return f"{stat_key}:{date}"


def process(identity: str | bytes) -> str | bytes:
    """The process hash is keyed by the bare identity (Sidekiq's layout); named here so every key is built here."""
    return identity


def workers(identity: str | bytes) -> str | bytes:
    return _join("", identity, ":workers")


def signals(identity: str) -> str:
    return f"{identity}-signals"


def working(queue_name: str, identity: str, thread: int) -> str:
    """One list per processor thread, so a thread can tell which jobs are its own after an outage."""
    return f"working:queue:{queue_name}:{identity}.{thread}"


def parse_working(key: str | bytes) -> tuple[str, str] | tuple[bytes, bytes] | None:
    """Split a working-list key into (queue, process identity); the identity is the last three ':' parts,
    less the thread suffix (a key without one, as gitlab-sidekiq-fetcher writes them, parses too).
    Bytes in, bytes out: a name read from Redis is never decoded. None if the key is not of that shape."""
    if isinstance(key, bytes):
        prefix, colon, dot = b"working:queue:", b":", b"."
    else:
        prefix, colon, dot = "working:queue:", ":", "."
    if not key.startswith(prefix):
        return None
    parts = key[len(prefix):].split(colon)
    parts[-1] = parts[-1].split(dot, 1)[0]
    queue_name = colon.join(parts[:-3])
    if len(parts) < 4 or not queue_name or not all(parts[-3:]):
        return None
    return queue_name, colon.join(parts[-3:])


def cancel_request(jid: str) -> str:
    """`sidepunch:cancel:<jid>`: set by `api.cancel` for a running job; the process running it acts and DELs it."""
    return CANCEL_PREFIX + jid


def result(jid: str) -> str:
    """`sidepunch:result:<jid>`: the JSON return value of a job whose class sets `keep_result` (seconds)."""
    return RESULT_PREFIX + jid


def unique_lock(digest: str) -> str:
    """`sidepunch:unique:<digest>`: the lock of a unique job; `digest` is 64 hex digits (core/unique.py)."""
    return UNIQUE_PREFIX + digest


def periodic_claim(name: str, fingerprint: str, tick: int) -> str:
    """`sidepunch:periodic:claim:<name>:<fingerprint>:<tick>`: who enqueued this tick of this schedule."""
    return f"{PERIODIC_PREFIX}claim:{name}:{fingerprint}:{int(tick)}"


def limit_state(kind: str, name: str) -> str:
    """`sidepunch:limit:<kind>:<name>`: a limiter's shared state (kind: concurrent, window or bucket)."""
    return f"{LIMIT_PREFIX}{kind}:{name}"


def limit_waiting(name: str) -> str:
    """`sidepunch:limit:waiting:<name>`: ZSET of who a limiter refused -> when they stop counting as waiting."""
    return f"{LIMIT_PREFIX}waiting:{name}"


def limit_hold(name: str) -> str:
    """`sidepunch:limit:hold:<name>`: a concurrent limiter's average hold time in seconds (a float string)."""
    return f"{LIMIT_PREFIX}hold:{name}"


def metrics_slot(epoch: float, step: int) -> str:
    """The UTC stamp (`YYYYMMDDTHHMM`) of the `step`-second metrics slot holding `epoch`."""
    return time.strftime("%Y%m%dT%H%M", time.gmtime(int(epoch // step * step)))


def metrics_jobs(step: int, slot: str) -> str:
    """`sidepunch:metrics:j:<step>:<slot>`: per-class counts and total time of the jobs that ended in the slot."""
    return f"{METRICS_PREFIX}j:{step}:{slot}"


def metrics_histogram(step: int, slot: str, klass: str | bytes) -> str | bytes:
    """`sidepunch:metrics:h:<step>:<slot>:<class>`: one class's execution-time histogram in the slot."""
    return _join(f"{METRICS_PREFIX}h:{step}:{slot}:", klass)


def alive(identity: str | bytes) -> str | bytes:
    return _join(ALIVE_PREFIX, identity)


def printable(name: str | bytes) -> str:
    """A key name fit for one log line: undecodable bytes as \\xNN, control characters escaped."""
    text = name.decode("utf-8", "backslashreplace") if isinstance(name, bytes) else name
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


_JSON_TYPES = {int: "number", float: "number", bool: "boolean", type(None): "null", list: "array", dict: "object"}
#: Longest queue name, in UTF-8 bytes. A queue name is repeated in every payload, in key names, in the `queues`
#: set, in log lines and in the Web UI's URLs; 255 bytes is the usual limit for such names (a file name, a
#: hostname) and far above any real one.
MAX_QUEUE_BYTES = 255
_QUEUE_FORBIDDEN = {"Cc": "a control character", "Cs": "a lone surrogate", "Zl": "a line separator",
                    "Zp": "a paragraph separator"}


def queue_name_problem(name: object) -> str | None:
    """Why `name` cannot name a queue a daemon fetches from and Sidekiq's tools show, or None if it can.

    The one rule for the client (validate.check_queue_name), the daemon's `-q` and the poller: a queue is
    named with `-q NAME[,WEIGHT]`, so a name with a comma, whitespace at either end, a control or separator
    character could never be fetched; nor could an empty or absurdly long one.
    """
    if type(name) is not str:
        return f"is not a string but a JSON {_JSON_TYPES.get(type(name), type(name).__name__)}"
    if not name:
        return "is empty"
    if len(name) > MAX_QUEUE_BYTES:
        return f"is {len(name)} characters long; a queue name has at most {MAX_QUEUE_BYTES} bytes (UTF-8)"
    if "," in name:
        return "holds a comma, which sidepunchd -q reads as NAME,WEIGHT, so no daemon could fetch it"
    if name.strip() != name:
        return "starts or ends with whitespace, which sidepunchd -q strips, so no daemon could fetch it"
    for char in name:
        kind = _QUEUE_FORBIDDEN.get(unicodedata.category(char))
        if kind is not None:
            return f"holds {kind} ({char!r}), which logs and Sidekiq's tools cannot show"
    size = len(name.encode("utf-8", "surrogatepass"))
    if size > MAX_QUEUE_BYTES:
        return f"is {size} bytes long in UTF-8; a queue name has at most {MAX_QUEUE_BYTES}"
    return None


def batch(bid: str) -> str:
    """`sidepunch:batch:<bid>`: one batch's hash (batch_*.lua writes it)."""
    return f"{BATCH_PREFIX}{bid}"


def batch_members(bid: str) -> str:
    """`sidepunch:batch:<bid>:members`: member -> state of one batch (batch_*.lua writes it)."""
    return f"{BATCH_PREFIX}{bid}:members"
