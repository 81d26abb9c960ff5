"""Cluster mode: several proxies share one app's limits and token chains through Valkey or Redis.

``settings`` (the ``cluster:`` section), ``link`` (the one connection to the server, fail closed),
``nodes`` (heartbeats and the server's life), and one module per shared decision.
"""
