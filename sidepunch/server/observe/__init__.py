"""Observability of the daemon (`--metrics-port`): Prometheus metrics and /healthz.

Workers tally what their jobs did (tally.py) and write it to the master over their status pipes just before
the jobs' acknowledgements are sent (acks.py); the master keeps the totals and feeds them, with what it knows
of its workers, to an exporter process (feed.py) that serves HTTP and queries Redis (exporter.py, collect.py,
redisinfo.py). Nothing here is imported unless --metrics-port is set; prometheus_client only in the exporter.

Must not import: sidepunch.api or sidepunch.admin (core and client only).
"""
