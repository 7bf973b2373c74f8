"""core/retries.py, the pure rules of where a failed job goes, against the daemon's RetryPolicy on real Redis:
for every combination of the job's `retry` option, its class's and its `retry_count`, and of --max-retries,
the predicted outcome is the one RetryPolicy records, and the retry_count it writes is the predicted one."""
from __future__ import annotations

import itertools
import json
import random

from sidepunch.core import retries
from sidepunch.core.middleware import Outcome
from sidepunch.core.payload import encode
from sidepunch.server.fetch.base import UnitOfWork
from sidepunch.server.fetch.basic import BasicFetch
from sidepunch.server.retry import DeadSet, RetryPolicy

RETRY = ["missing", None, True, False, 0, 1, 3, -1, "yes", 2.5, [1]]
CLASS_RETRY = ["unloaded", "absent", True, False, None, 0, 2, 30]  # unloaded: the class never loaded
COUNT = ["missing", None, 0, 1, 2, 29, "3", True, -5]


def test_predict_agrees_with_retry_policy_on_real_redis(r):
    checked = 0
    for max_retries in (0, 3, 25):
        policy = RetryPolicy(r, DeadSet(10_000, 86400), max_retries, BasicFetch.ack_into, rng=random.Random(1))
        for retry, class_retry, count in itertools.product(RETRY, CLASS_RETRY, COUNT):
            job = {"class": "X", "args": [], "jid": f"j{checked}"}
            if retry != "missing":
                job["retry"] = retry
            if count != "missing":
                job["retry_count"] = count
            instance = None if class_retry == "unloaded" else \
                type("Job", (), {} if class_retry == "absent" else {"retry": class_retry})()
            predicted, next_count, _ = retries.predict(job, instance, max_retries)
            r.delete("retry", "dead")
            actual = policy.handle(UnitOfWork("default", encode(job)), instance, KeyError("x"))
            assert actual is predicted, (job, class_retry, max_retries)
            stored = r.zrange("retry" if actual is Outcome.RETRY else "dead", 0, -1)
            if actual is not Outcome.DISCARDED and stored:
                assert json.loads(stored[0])["retry_count"] == next_count
            checked += 1
    assert checked == 3 * len(RETRY) * len(CLASS_RETRY) * len(COUNT)


def test_retry_in_choices_change_the_outcome_as_retry_policy_does():
    assert retries.failure_outcome(True, 0, 25, "kill") is Outcome.DEAD
    assert retries.failure_outcome(True, 0, 25, "discard") is Outcome.DISCARDED
    assert retries.failure_outcome(True, 0, 25, 30) is Outcome.RETRY
    assert retries.failure_outcome(True, 25, 25, 30) is Outcome.DEAD
