"""Exceptions users see; their module is set to `sidepunch` so error_class reads `sidepunch.JobTimeout`.

Must not import: anything of sidepunch's above core (client, server, api, admin).
"""


class JobTimeout(Exception):
    """A job ran past its `timeout` option (or --job-timeout) and was stopped (an async job cancelled, a sync
    job interrupted in its thread); it goes to the retry set like any failure."""


class ResultTimeout(TimeoutError):
    """`sidepunch.api.result(jid, timeout)` waited `timeout` seconds and the job's result was not there."""


class ResultError(Exception):
    """The job finished but its return value could not be kept (not JSON); the message says why."""


for _cls in (JobTimeout, ResultTimeout, ResultError):
    _cls.__module__ = "sidepunch"
