"""The data model both sides share: Redis keys, payloads, connections, Lua scripts, errors, middleware.

Imports nothing of sidepunch's above it (client, server, api, admin).
"""
