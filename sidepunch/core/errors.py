"""Exceptions users see; their module is set to `sidepunch` so error_class reads `sidepunch.JobTimeout`.

Must not import: anything of sidepunch's above core (client, server, api, admin).
"""


class JobTimeout(Exception):
    """A job ran past its `timeout` option (or --job-timeout). Its thread cannot be killed, so the worker
    process that runs it is replaced."""


JobTimeout.__module__ = "sidepunch"
