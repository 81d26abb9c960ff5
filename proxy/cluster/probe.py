"""``exact-proxy check-config`` in cluster mode: can this machine reach the shared server?

Contract: ``await reach(settings)`` returns (ok, text): the server's name and version and round-trip
time, or why it cannot be reached (refused, timeout, wrong password). Nothing is written.
"""

from __future__ import annotations

import time

from redis import exceptions as rx
from redis.asyncio import Redis

from proxy.cluster.settings import ClusterSettings


async def reach(settings: ClusterSettings) -> tuple[bool, str]:
    client = Redis.from_url(settings.redis_url or "", password=settings.password(),
                            socket_timeout=2.0, socket_connect_timeout=2.0, retry_on_error=[])
    try:
        start = time.perf_counter()
        await client.ping()
        ms = (time.perf_counter() - start) * 1000
        info = await client.info("server")
        name = "valkey" if "valkey_version" in info else "redis"
        version = info.get("valkey_version") or info.get("redis_version", "?")
        return True, f"reachable ({name} {version}, ping {ms:.1f} ms)"
    except rx.AuthenticationError as exc:
        return False, f"refuses the credentials: {exc}"
    except (rx.RedisError, OSError) as exc:
        return False, f"unreachable: {exc}"
    finally:
        await client.aclose()
