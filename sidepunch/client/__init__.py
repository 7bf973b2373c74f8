"""Enqueueing: Job, @job, Client and its one write seam.

Imports core only; never the server, api or admin.
"""
