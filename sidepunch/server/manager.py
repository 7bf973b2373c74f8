"""Manager: the daemon's job processing embedded in a process you already run (`sidepunch.Manager`).

For small apps, notebooks and tests: `m = Manager(concurrency=5, queues=["critical", "default"])`, `m.start()`,
and later `m.stop(timeout=25)`. It runs the parts a worker process of `sidepunchd` runs, built by the same function
(parts.build_parts): the ProcessorPool with its AsyncRunner, the Heartbeat (so `sidepunch processes` and the
dashboard list it), the Poller, the CancelWatcher; plus the master's orphan sweep (recovery.OrphanSweeper), so the
jobs of a process that was killed are put back by the next Manager or daemon. Its identity is `<host>:<pid>:<nonce>` like a
worker's, and its heartbeat keeps the liveness key that tells the sweep its working lists are in use.

Where it differs from a worker process, because the process is someone else's: no signal handlers, no fork, no
os._exit, no process title; every thread is a daemon thread; a supervisor thread does what a worker's main
loop does (replace dead processor threads, enforce job timeouts); a remote signal from the dashboard quiets,
resumes or stops this Manager, never the process. A Manager belongs to the process that started it: in a child
forked after `start()`, where none of its threads exist, `stop()` does nothing and the child should build its own.

Settings are the daemon's Config, built from the arguments with the checks and one-line messages of a config
file's values; those a Manager has no use for (processes, logging, pidfile) are refused.

Must not import: sidepunch.api or sidepunch.admin (core and client only).
"""
from __future__ import annotations

import atexit
import logging
import os
import random
import threading
import time
from typing import Any, Mapping, Sequence

from ..client.push import default_client
from ..core import identity as identities
from ..core import keys
from ..core.connection import OUTAGE_ERRORS, check_url, make_client, resolve_url
from .config import SETTINGS, Config, _check_queues
from .hooks import load_middleware
from .launcher import load_app
from .parts import Parts, build_parts, process_info
from .recoverer_keeper import SWEEP_EVERY
from .recovery import OrphanSweeper, RecoveryPolicy
from .settings import ConfigError, show_names, show_value
from .state import ChildContext, LifecycleState

log = logging.getLogger("sidepunch.manager")

#: Config fields a Manager takes as keyword options. The others are the daemon's: worker processes, the master's
#: timeouts, memory and job limits (a process is replaced; this one cannot be), logging and the pidfile.
OPTIONS = frozenset({"async_concurrency", "require", "middleware", "death_handlers", "timeout", "fetch",
                     "poll_interval", "max_retries", "dead_max_jobs", "dead_timeout", "max_interruptions",
                     "job_timeout", "interrupt_grace", "tag"})
#: How a Config field is called among the Manager's arguments, where the name differs.
ARGUMENT = {"threads": "concurrency"}
TICK = 1.0
#: Connections beyond one per processor thread: heartbeat, poller, async recorder, cancel watcher, sweep, spares.
SPARE_CONNECTIONS = 10
NEW, RUNNING, STOPPED = "new", "running", "stopped"
#: How long stop() waits for the supervisor, which may be inside a beat (bounded by the socket timeouts).
SUPERVISOR_JOIN = 15.0
#: How long stop() waits for the poller, the cancel watcher and the sweeper to notice it.
THREAD_JOIN = 5.0
#: Beyond the deadline, what a second stop() waits for the first (the pool's idle join, the last beat).
STOP_MARGIN = 15.0


def manager_config(concurrency: Any, queues: Any, redis_url: Any, options: Mapping[str, Any],
                   environ: Mapping[str, str]) -> Config:
    """The Config of a Manager; ConfigError (a ValueError) with one line naming the argument at fault.

    Values are read as a config file's are (a bool is not a number, a tuple or a single string is a list);
    unnamed settings keep their defaults, never the environment's or a file's. `redis_url` None: the URL the
    app gave sidepunch.configure(), else $REDIS_PROVIDER / $REDIS_URL as the daemon reads them, else localhost.
    """
    unknown = sorted(set(options) - OPTIONS)
    if unknown:
        raise ConfigError(f"Manager: unknown or daemon-only option(s) {show_names(unknown)}; it takes "
                          f"{', '.join(sorted(OPTIONS))}")
    given = {**options, "threads": concurrency, "queues": queues}
    values: dict[str, Any] = {"workers": 1}
    for setting in SETTINGS:
        if setting.name in given:
            raw = given[setting.name]
            raw = list(raw) if setting.many and isinstance(raw, tuple) else raw
            values[setting.name] = setting.read_file(raw, f"Manager {ARGUMENT.get(setting.name, setting.name)}")
    for name, check in (("queues", lambda: _check_queues(values["queues"])),
                        ("redis_url", lambda: values.update(redis_url=_redis_url(redis_url, environ)))):
        try:
            check()
        except ValueError as exc:  # one line naming the argument, as the others' messages do
            raise ConfigError(f"Manager {name}: {exc}") from None
    return Config(**values)


def _redis_url(given: Any, environ: Mapping[str, str]) -> str:
    if given is None:
        url = resolve_url(default_client().redis_url, environ)
    elif isinstance(given, str):
        url = given
    else:
        raise ValueError(f"expected a string or None, got {show_value(given)}")
    check_url(url)  # ValueError, one line, no secret shown; connects to nothing
    return url


class Sweeper:
    """The orphan sweep a daemon's recoverer does, in a thread: at once, then every 10-20 s. The sweep's lock
    keeps it to one sweeper at a time across every Manager and master; this Manager's own lists are spared."""

    def __init__(self, ctx: ChildContext, policy: RecoveryPolicy, rng: random.Random | None = None) -> None:
        self.ctx = ctx
        self._sweeper = OrphanSweeper(ctx.redis, policy)
        self._rng = rng or random.Random()
        self._halt = threading.Event()
        self.thread = threading.Thread(target=self._run, name="sidepunch-sweeper", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._halt.set()

    def _run(self) -> None:
        wait = 0.0
        while not self._halt.wait(wait):
            self.sweep()
            wait = self._rng.uniform(*SWEEP_EVERY)

    def sweep(self) -> int:
        """One sweep; how many jobs it put back or killed (0 through an outage, which is logged once)."""
        try:
            found = self._sweeper.sweep(exclude={self.ctx.identity})
        except OUTAGE_ERRORS as exc:
            self.ctx.outage.failed(exc)
            return 0
        except Exception as exc:  # one key's data, say: the next sweep tries again
            log.error("orphan sweep failed (%s: %s); trying again later", type(exc).__name__, exc)
            return 0
        return found.requeued + found.killed


class Manager:
    """Runs jobs in this process: `concurrency` processor threads over `queues` (in priority order; "NAME,WEIGHT"
    for weighted order), with Redis at `redis_url`. `options`: any of OPTIONS, as the daemon's settings of the
    same name (`timeout` is stop()'s default). Bad values raise ValueError with one line. Starts once; a
    context manager (`with Manager(...) as m:`) starts and stops it."""

    def __init__(self, concurrency: int = 5, queues: Sequence[str] | str = ("default",), redis_url: str | None = None,
                 **options: Any) -> None:
        self.config = manager_config(concurrency, queues, redis_url, options, os.environ)
        self.identity: str | None = None
        self.state = LifecycleState()
        self._phase = NEW
        self._booted = False
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self._done = threading.Event()
        self._parts: Parts | None = None
        self._sweeper: Sweeper | None = None
        self._supervisor: threading.Thread | None = None
        self._stats_redis: Any = None

    def __enter__(self) -> "Manager":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- starting -------------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Register and start fetching; returns at once. RuntimeError if started before. If Redis cannot be reached,
        the outage is logged once and the Manager starts as soon as it can (the supervisor keeps trying)."""
        with self._lock:
            if self._phase != NEW:
                raise RuntimeError("this Manager was already started; a Manager starts once (build a new one)")
            load_app(self.config.require)
            hooks = load_middleware(self.config)
            self._pid = os.getpid()
            self.identity = identities.current(identities.new_nonce())
            info = process_info(self.config, self.identity, embedded=True)
            self._parts = build_parts(self.config, self.identity, self.state, 1, hooks, retire=self._retire,
                                      on_signal=self._remote_signal, info=info, logger=log,
                                      spare=SPARE_CONNECTIONS)
            self._sweeper = Sweeper(self._parts.ctx, RecoveryPolicy(
                self.config.max_interruptions, self.config.dead_max_jobs, self.config.dead_timeout))
            self._phase = RUNNING
        self._boot()
        self._supervisor = threading.Thread(target=self._supervise, name="sidepunch-manager", daemon=True)
        self._supervisor.start()
        atexit.register(self._at_exit)

    def _boot(self) -> bool:
        """Register (and be alive, for the sweep) before the first job is fetched; False until Redis answers."""
        parts = self._parts
        assert parts is not None and self._sweeper is not None
        if self._booted or not parts.heartbeat.beat():
            return self._booted
        with self._lock:
            if self.state.stopping:
                return False
            parts.heartbeat.start()
            parts.poller.start()
            parts.pool.start()
            parts.cancels.start()
            self._sweeper.start()
            self._booted = True
        log.info("manager %s running %d threads on %s", self.identity, self.config.threads,
                 ",".join(q.name for q in self.config.queues))
        return True

    def _supervise(self) -> None:
        """A worker's main loop, less the signals: boot, then replace dead threads and enforce job timeouts."""
        while not self._halt.wait(self._parts.pool.next_check(TICK) if self._parts is not None else TICK):
            try:
                if self._boot():
                    pool = self._parts.pool  # type: ignore[union-attr]
                    pool.replace_dead()
                    pool.enforce_timeouts()
            except Exception:  # this thread keeps the others going: it must outlive any one failure
                log.exception("manager supervisor failed; trying again in a second")

    def _retire(self, reason: str) -> None:
        """A daemon replaces a worker whose job would not stop; a Manager cannot, and goes on without the thread."""
        log.error("manager %s: %s; it runs on with one processor thread fewer, and records that job at stop()",
                  self.identity, reason)

    def _remote_signal(self, name: str) -> None:
        """A signal pushed through <identity>-signals (the dashboard's buttons): it acts on this Manager only."""
        word = name.upper().removeprefix("SIG")
        if word in ("TSTP", "USR1"):
            log.info("manager %s quiet (remote %s): no new jobs will be fetched", self.identity, word)
            self.state.go_quiet()
        elif word == "CONT":
            self.state.resume()
        elif word in ("TERM", "INT"):
            threading.Thread(target=self.stop, name="sidepunch-manager-stop", daemon=True).start()
        else:
            log.warning("manager %s ignores remote signal %.40r (it takes TSTP, USR1, CONT, TERM, INT)",
                        self.identity, name)

    # -- stopping -------------------------------------------------------------------------------------------------
    def stop(self, timeout: float | None = None) -> None:
        """Stop fetching, wait up to `timeout` seconds (default: the `timeout` option, 25) for running jobs, then
        put what still runs back at the head of its queue, unchanged, with the prefetched jobs; deregister.
        Before start() and after stop() it does nothing; called from a job, it stops from a thread of its own."""
        wait = self.config.timeout if timeout is None else _stop_timeout(timeout)
        if os.getpid() != self._pid:  # a child forked after start(): none of the threads are here (nor the lock's
            return                    # holder, if a thread held it at the fork)
        with self._lock:
            if self._phase == NEW:
                return
            first = self._phase == RUNNING
            if first:
                self._phase = STOPPED
                self.state.stop(time.monotonic() + wait)
        if self._in_own_thread():  # a job, or the heartbeat (remote TERM): joining our own thread would fail
            if first:
                threading.Thread(target=self._shutdown, name="sidepunch-manager-stop", daemon=True).start()
        elif first:
            self._shutdown()
        else:  # a stop already under way: return when it is done
            self._done.wait(max(0.0, (self.state.hard_deadline or 0.0) - time.monotonic()) + STOP_MARGIN)

    def _shutdown(self) -> None:
        """The worker's shutdown (launcher._shutdown) with the Manager's own threads around it."""
        parts, sweeper = self._parts, self._sweeper
        assert parts is not None and sweeper is not None
        try:
            self._halt.set()
            sweeper.stop()
            _join(self._supervisor, SUPERVISOR_JOIN)  # it may be inside a beat, booting; it starts nothing now
            parts.stop(self.state.hard_deadline or time.monotonic(), log)
            for thread in (_thread_of(parts.poller), _thread_of(parts.cancels), sweeper.thread):
                _join(thread, THREAD_JOIN)
            parts.ctx.redis.close()
            log.info("manager %s stopped", self.identity)
        finally:
            atexit.unregister(self._at_exit)
            self._done.set()

    def _at_exit(self) -> None:
        """A script that ends without stop(): its running jobs are requeued rather than cut off mid-run (and
        then counted as interrupted by the orphan sweep)."""
        self.stop()

    def _in_own_thread(self) -> bool:
        parts = self._parts
        if parts is None:
            return False
        ours = [self._supervisor, self._sweeper.thread if self._sweeper else None, _thread_of(parts.heartbeat),
                _thread_of(parts.poller), _thread_of(parts.cancels), *(p.thread for p in parts.pool.processors),
                *getattr(parts.pool.runner, "_threads", ())]
        return threading.current_thread() in ours

    # -- reading ---------------------------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """processed, failed, success_rate (percent; 100.0 before any job) and busy: this Manager's own, since it
        started; queues (name -> size: this Manager's queues, then every other known one), scheduled, retries
        and dead: Redis-wide. Reads Redis in two round trips; raises redis.RedisError if it cannot."""
        ctx = self._parts.ctx if self._parts else None
        processed = ctx.counters.total_processed if ctx else 0
        failed = ctx.counters.total_failed if ctx else 0
        r = self._reader()
        names = [q.name.encode("utf-8", "surrogateescape") for q in self.config.queues]
        names += sorted(set(r.smembers(keys.QUEUES)) - set(names))
        pipe = r.pipeline(transaction=False)
        for name in names:
            pipe.llen(keys.queue(name))
        for zset in (keys.SCHEDULE, keys.RETRY, keys.DEAD):
            pipe.zcard(zset)
        # A key of another type counts as empty rather than hiding every other count.
        *sizes, scheduled, retries, dead = [n if isinstance(n, int) else 0 for n in pipe.execute(raise_on_error=False)]
        return {"processed": processed, "failed": failed,
                "success_rate": 100.0 if not processed else round(100.0 * (processed - failed) / processed, 2),
                "busy": len(ctx.work) if ctx else 0,
                "queues": {n.decode("utf-8", "surrogateescape"): size for n, size in zip(names, sizes)},
                "scheduled": scheduled, "retries": retries, "dead": dead}

    def _reader(self) -> Any:
        """A client of its own for stats(), so that readers in many app threads never take the processors'
        connections (that pool is bounded)."""
        with self._lock:
            if self._stats_redis is None:
                self._stats_redis = make_client(self.config.redis_url)
            return self._stats_redis

    def __repr__(self) -> str:
        return f"<sidepunch.Manager {self.identity or 'not started'} {self._phase}>"


def _stop_timeout(value: Any) -> float:
    """stop()'s timeout, checked as the daemon's --timeout is."""
    setting = next(s for s in SETTINGS if s.name == "timeout")
    return float(setting.read_file(value, "Manager.stop timeout"))


def _thread_of(part: Any) -> threading.Thread | None:
    """The thread a Heartbeat, Poller or CancelWatcher runs in (None before it started)."""
    return getattr(part, "_thread", None)


def _join(thread: threading.Thread | None, timeout: float) -> None:
    if thread is not None and thread is not threading.current_thread() and thread.ident is not None:
        thread.join(timeout)
