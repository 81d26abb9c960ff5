"""The state store: a real SQLite file, owner-only, written behind, surviving kill -9 and bad files."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import stat
import subprocess
import sys
import textwrap

import aiohttp
import pytest

from proxy.clock import ManualClock
from proxy.store import MemoryStore, SqliteStore

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


async def test_round_trip_and_owner_only_permissions(tmp_path):
    path = str(tmp_path / "s.sqlite")
    store = SqliteStore(path, ManualClock(), flush_interval=1.0)
    await store.open()
    store.put("windows", "app/1", {"used": 3, "limit": 60})
    store.put("windows", "app/2", [1, 2])
    store.delete("windows", "app/2")
    assert await store.load("windows") == {"app/1": {"used": 3, "limit": 60}}  # pending writes visible
    await store.close()
    assert mode(path) == 0o600
    for suffix in ("-wal", "-shm"):
        if os.path.exists(path + suffix):
            assert mode(path + suffix) == 0o600
    again = SqliteStore(path, ManualClock())
    await again.open()
    assert await again.load("windows") == {"app/1": {"used": 3, "limit": 60}}
    assert await again.get("windows", "nope", "d") == "d" and again.healthy
    assert "WAL" in again.describe()
    await again.close()


async def test_writes_are_flushed_behind_on_the_clock(tmp_path):
    path = str(tmp_path / "s.sqlite")
    clock = ManualClock()
    store = SqliteStore(path, clock, flush_interval=1.0)
    await store.open()
    store.put("ns", "k", 1)
    reader = SqliteStore(path, ManualClock())

    async def on_disk():
        reader._view.clear()
        await reader._connect(load=True)
        value = await reader.load("ns")
        await reader._db.close()
        reader._db = None
        return value

    assert await on_disk() == {}
    await clock.advance(1.0)
    for _ in range(100):
        if await on_disk() == {"k": 1}:
            break
        await asyncio.sleep(0.01)
    assert await on_disk() == {"k": 1}
    await store.close()


async def test_loose_permissions_are_tightened(tmp_path):
    path = tmp_path / "s.sqlite"
    path.write_bytes(b"")
    os.chmod(path, 0o644)
    store = SqliteStore(str(path), ManualClock())
    await store.open()
    await store.close()
    assert mode(path) == 0o600


async def test_corrupt_file_is_moved_aside(tmp_path, caplog):
    path = tmp_path / "s.sqlite"
    path.write_bytes(b"this is not a database, not at all" * 200)
    os.chmod(path, 0o600)
    store = SqliteStore(str(path), ManualClock())
    with caplog.at_level(logging.ERROR, logger="exact_proxy.store"):
        await store.open()
    store.put("ns", "k", "v")
    await store.close()
    aside = [p for p in os.listdir(tmp_path) if ".corrupt-" in p]
    assert aside and "moved aside" in caplog.text
    again = SqliteStore(str(path), ManualClock())
    await again.open()
    assert await again.load("ns") == {"k": "v"}
    await again.close()


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
async def test_unwritable_directory_keeps_serving_from_memory(tmp_path, caplog):
    d = tmp_path / "ro"
    d.mkdir()
    os.chmod(d, 0o500)
    try:
        store = SqliteStore(str(d / "s.sqlite"), ManualClock())
        with caplog.at_level(logging.ERROR, logger="exact_proxy.store"):
            await store.open()
        store.put("ns", "k", 1)
        await store.flush()
        assert await store.load("ns") == {"k": 1}
        assert store.healthy is False and "memory" in store.describe()
        assert "cannot be written" in caplog.text
        await store.close()
    finally:
        os.chmod(d, 0o700)


async def test_state_path_that_cannot_exist_keeps_serving_from_memory(tmp_path, caplog):
    """Even as root: a state path under a regular file can never be created."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    store = SqliteStore(str(blocker / "s.sqlite"), ManualClock())
    with caplog.at_level(logging.ERROR, logger="exact_proxy.store"):
        await store.open()
    store.put("ns", "k", 1)
    await store.flush()
    assert await store.load("ns") == {"k": 1}
    assert store.healthy is False and "memory only" in store.describe()
    assert "cannot be written" in caplog.text
    await store.close()


async def test_failing_writes_are_kept_and_retried(tmp_path, caplog):
    """A full or vanished disk mid-run: the store turns unhealthy, keeps the values, and recovers."""
    path = str(tmp_path / "s.sqlite")
    store = SqliteStore(path, ManualClock())
    await store.open()
    real = store._db

    class Broken:
        async def executemany(self, *a):
            raise OSError(28, "No space left on device")

        async def rollback(self):
            pass

    store._db = Broken()
    store.put("ns", "k", 1)
    with caplog.at_level(logging.ERROR, logger="exact_proxy.store"):
        await store.flush()
    assert not store.healthy and "No space left" in caplog.text
    store._db = real
    await store.flush()
    assert store.healthy
    await store.close()
    again = SqliteStore(path, ManualClock())
    await again.open()
    assert await again.load("ns") == {"k": 1}
    await again.close()


def test_kill_minus_9_keeps_flushed_state(tmp_path):
    path = str(tmp_path / "s.sqlite")
    code = textwrap.dedent(f"""
        import asyncio, os, signal, sys
        sys.path.insert(0, {ROOT!r})
        from proxy.clock import SystemClock
        from proxy.store import SqliteStore
        async def main():
            store = SqliteStore({path!r}, SystemClock(), flush_interval=0.01)
            await store.open()
            for i in range(500):
                store.put("windows", f"k{{i}}", {{"used": i}})
                if i % 50 == 0:
                    await store.flush()
            await store.flush()
            print("flushed", flush=True)
            await asyncio.sleep(30)
        asyncio.run(main())
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "flushed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(10)

    async def check():
        store = SqliteStore(path, ManualClock())
        await store.open()
        data = await store.load("windows")
        await store.close()
        return data

    data = asyncio.run(check())
    assert len(data) == 500 and data["k499"] == {"used": 499}


async def test_memory_store_keeps_the_interface():
    store = MemoryStore()
    await store.open()
    store.put("a", "b", 1)
    assert await store.load("a") == {"b": 1}
    await store.flush()
    await store.close()
    assert store.healthy and store.describe() == "memory"


async def test_the_proxy_keeps_its_state_file_owner_only(upstream, start_proxy, tmp_path):
    proxy = await start_proxy(str(upstream.make_url("")).rstrip("/"))
    async with aiohttp.ClientSession() as s, s.get(proxy.url("default") + "/_proxy/health") as r:
        health = await r.json()
    assert health["state"]["healthy"] and "sqlite" in health["state"]["kind"]
    assert mode(tmp_path / "state.sqlite") == 0o600
