"""The counters app: named counters behind a JSON HTTP service, changed by sidepunch jobs.

`counters.service` is the HTTP service, `counters.jobs` the jobs that call it (what `sidepunchd -r
counters.jobs` loads), `counters.enqueue` a command that enqueues one change, and `counters.demo` runs it
all. Importing the package starts nothing and reads no environment variable.
"""
