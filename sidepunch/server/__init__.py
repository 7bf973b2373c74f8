"""The daemon, sidepunchd: configuration, master, worker processes, fetch, retries, poller, recovery.

Imports core and client (to resolve job classes and share the client's rules); never api or admin.
"""
