"""Periodic jobs for tests/test_periodic*.py. `Every2` is declared every two seconds in code; the server
middleware `record_tick` (given with --middleware) RPUSHes what each periodic job carried to the list
`periodic-runs` as JSON [name, tick, enqueued_at, jid, pid], so a test sees every enqueued tick even though a
job does not see its payload."""
import json
import os

import sidepunch

from testjobs import _redis


@sidepunch.periodic("*/2 * * * * *", name="every2")
class Every2(sidepunch.Job):
    def perform(self):
        pass


@sidepunch.periodic("@daily", name="daily-function", args=[1, "x"], tz="Europe/Paris", missed="latest")
@sidepunch.job
def daily_function(n, s):
    pass


class Plain(sidepunch.Job):
    """A job named by a [[periodic]] table in a test's config file."""

    def perform(self, *args):
        pass


def record_tick(instance, job, queue, call_next):
    if "periodic_name" in job:
        _redis().rpush("periodic-runs", json.dumps([job["periodic_name"], job.get("periodic_tick"),
                                                    job.get("enqueued_at"), job.get("jid"), os.getpid()]))
    return call_next()
