"""An app for the middleware tests: `Throttle`, a Middleware class sidepunchd gets by dotted path, and `InCode`,
one this module registers with `sidepunch.configure` when a worker imports it. Both report to Redis.

Only daemons import this module (it replaces the default client when imported).
"""
import sidepunch


class Throttle(sidepunch.Middleware):
    """Reschedules a job whose first argument is "later" the first time it runs; marks every push it sees."""

    def around_perform(self, instance, job, queue, call_next):
        redis = self.context.redis
        if job["args"][:1] == ["later"] and redis.incr(f"runs:{job['jid']}") == 1:
            redis.rpush("rescheduled", job["jid"])
            raise sidepunch.Reschedule(1)
        has_config = self.context.config is not None and self.context.config.workers == 1
        redis.rpush("throttle", f"{job['jid']} config={has_config}")
        return call_next()

    def around_push(self, job, call_next):
        job["seen_by"] = "Throttle"
        return call_next(job)

    def on_death(self, job, exc):
        self.context.redis.rpush("throttle-deaths", f"{job['jid']} {type(exc).__name__}")


class InCode(sidepunch.Middleware):
    """Registered in code (below): its server hook runs in the worker too."""

    def around_perform(self, instance, job, queue, call_next):
        self.context.redis.rpush("in-code", job["jid"])
        return call_next()


class Broken(sidepunch.Middleware):
    """Cannot be built: a worker given it by --middleware does not boot."""

    def __init__(self, context):
        raise RuntimeError("no limits configured")


sidepunch.configure(middleware=[InCode])


def _redis():
    return sidepunch.default_client().redis


class Record(sidepunch.Job):
    def perform(self, value):
        _redis().rpush("done", value)


class Spawn(sidepunch.Job):
    """Pushes a Record from inside the worker, to a queue no test daemon fetches: the daemon's middleware
    sees that push too."""

    def perform(self, value):
        Record.set(queue="parked").perform_async(value)


class Dies(sidepunch.Job):
    retry = 0

    def perform(self):
        raise LookupError("dies on purpose")
