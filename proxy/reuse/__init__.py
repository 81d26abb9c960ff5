"""Fewer calls for the same answers: what coalescing (``filters/coalesce.py``) and the opt-in answer
cache (``filters/cache.py``) share: the identity of an answer (``key``), buffering an answer so that
several tools can have it (``buffer``), the cache's memory (``store``) and their two sections of
policies.yaml (``settings``). Everything here is node-local: in cluster mode each node coalesces and
caches its own calls.
"""
