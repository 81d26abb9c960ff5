"""A state file lost under the running proxy is noticed within one flush interval and written anew.

Deleting ``state.sqlite`` (and its ``-wal``/``-shm``) used to go unnoticed: health stayed 200, writes
went to the unlinked file, and the next start had no counters and no token chains. The clock is a
ManualClock: "within one flush interval" is one ``advance(1.0)``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3

import aiohttp

from proxy.clock import ManualClock
from proxy.store import SqliteStore
from tests.test_token_broker_e2e import START, api_call, authorize, refresh, token_calls


async def wait_for(predicate, timeout: float = 5.0) -> None:
    """The flush runs in aiosqlite's thread: wait (real time, briefly) for what it leads to."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def on_disk(path) -> dict[tuple[str, str], object]:
    """What the file at ``path`` holds, read beside the running proxy (read-only, like ``status``)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {(ns, key): json.loads(v) for ns, key, v in db.execute("SELECT namespace, key, value FROM state")}
    finally:
        db.close()


async def in_memory(store) -> dict[tuple[str, str], object]:
    out = {}
    for ns in ("windows", "error_counts", "error_blocks", "learned_filters", "token_chains", "token_calls",
               "usage"):
        out.update({(ns, key): v for key, v in (await store.load(ns)).items()})
    return out


async def health(session, base) -> tuple[int, dict]:
    async with session.get(base + "/_proxy/health") as r:
        return r.status, await r.json()


def delete_state(path) -> None:
    for suffix in ("", "-wal", "-shm"):
        os.unlink(f"{path}{suffix}")


async def test_a_deleted_state_file_is_noticed_and_written_anew(emulator, start_proxy, log_output, tmp_path):
    clock = ManualClock(start=START)
    emu = await emulator(clock=clock)
    proxy = await start_proxy(emu.base, clock=clock)
    base, store, state = proxy.url("default"), proxy.services.store, tmp_path / "state.sqlite"
    async with aiohttp.ClientSession() as s:
        tokens = await authorize(s, base)
        for _ in range(3):
            assert await api_call(s, base, tokens["access_token"]) == 200
        await clock.advance(1.0)
        await wait_for(lambda: ("token_chains" in {ns for ns, _ in on_disk(state)}
                                and "windows" in {ns for ns, _ in on_disk(state)}))
        assert (await health(s, base))[0] == 200

        delete_state(state)
        await clock.advance(1.0)  # one flush interval
        await wait_for(lambda: "a new file now holds the whole state" in log_output.getvalue())
        log = log_output.getvalue()
        assert " ERROR " in log and f"state file {state}: it was deleted or moved away" in log
        assert on_disk(state) == await in_memory(store)  # everything, token chains included
        code, body = await health(s, base)
        assert code == 200 and body["status"] == "ok", body
        token_calls_before = token_calls(emu)
    await proxy.stop()

    again = await start_proxy(emu.base, clock=clock)  # the next start reads the new file
    async with aiohttp.ClientSession() as s:
        status, body = await refresh(s, again.url("default"), tokens["refresh_token"])
        assert status == 200 and body["access_token"] == tokens["access_token"]  # answered from the chain
        async with s.get(again.url("default") + "/_proxy/status") as r:
            rows = (await r.json())["call_budget"]
    assert token_calls(emu) == token_calls_before
    row = next(r for r in rows if r["division"] == 101)
    assert int(row["today"].split("/")[0]) >= 3


async def test_health_is_503_naming_the_cause_until_a_new_file_holds_everything(upstream, start_proxy,
                                                                                  log_output, tmp_path):
    clock = ManualClock()
    directory = tmp_path / "state"
    state = directory / "state.sqlite"
    proxy = await start_proxy(str(upstream.make_url("")).rstrip("/"), clock=clock, state_path=str(state))
    base, store = proxy.url("default"), proxy.services.store
    async with aiohttp.ClientSession() as s:
        for division in range(1, 6):
            async with s.get(f"{base}/api/v1/{division}/crm/Contacts") as r:
                assert r.status == 200
        await clock.advance(1.0)
        await wait_for(lambda: len(on_disk(state)) >= 5)

        delete_state(state)
        os.rmdir(directory)
        directory.write_text("a file where the state directory was: nothing can be written under it")
        await clock.advance(1.0)
        await wait_for(lambda: store.healthy is False)
        code, body = await health(s, base)
        assert code == 503 and body["status"] == "degraded"
        assert "was deleted or moved away under the running proxy" in body["reason"]
        assert "cannot write" in body["reason"]
        for division in range(6, 8):  # the proxy carries on, from memory
            async with s.get(f"{base}/api/v1/{division}/crm/Contacts") as r:
                assert r.status == 200
        await clock.advance(1.0)
        assert (await health(s, base))[0] == 503  # still nowhere to write

        directory.unlink()  # repaired
        await clock.advance(1.0)
        await wait_for(lambda: store.healthy)
        assert (await health(s, base))[0] == 200
        held = on_disk(state)
        assert held == await in_memory(store)
        assert {key for ns, key in held if ns == "windows"} >= {f"unknown|{d}" for d in range(1, 8)}
    assert "a new file now holds the whole state" in log_output.getvalue()


async def test_a_replaced_file_is_kept_aside_and_ours_written_anew(tmp_path, caplog):
    path = tmp_path / "s.sqlite"
    clock = ManualClock()
    store = SqliteStore(str(path), clock, flush_interval=1.0)
    await store.open()
    try:
        store.put("token_chains", "c1", {"refresh": "sealed"})
        store.put("windows", "app|1", {"used": 3})
        await store.flush()
        other = tmp_path / "other.sqlite"  # someone puts another database in its place, by rename
        db = sqlite3.connect(other)
        db.execute("CREATE TABLE mine (x)")
        db.commit()
        db.close()
        os.replace(other, path)
        store.delete("windows", "app|1")
        with caplog.at_level(logging.ERROR, logger="exact_proxy.store"):
            await clock.advance(1.0)
            await wait_for(lambda: store.healthy and "kept as" in caplog.text)
        assert "it was replaced by another file" in caplog.text
        assert on_disk(path) == {("token_chains", "c1"): {"refresh": "sealed"}}
        aside = [p for p in os.listdir(tmp_path) if ".replaced-" in p and not p.endswith(("-wal", "-shm"))]
        assert len(aside) == 1
        kept = sqlite3.connect(tmp_path / aside[0])
        assert kept.execute("SELECT name FROM sqlite_master").fetchall() == [("mine",)]
        kept.close()
    finally:
        await store.close()


async def test_a_deleted_wal_is_noticed_and_nothing_is_lost(tmp_path, caplog):
    path = tmp_path / "s.sqlite"
    clock = ManualClock()
    store = SqliteStore(str(path), clock, flush_interval=1.0)
    await store.open()
    try:
        for i in range(20):
            store.put("windows", f"app|{i}", {"used": i})
        await store.flush()
        os.unlink(f"{path}-wal")  # the flushed rows live in the WAL until a checkpoint
        store.put("windows", "app|20", {"used": 20})
        with caplog.at_level(logging.ERROR, logger="exact_proxy.store"):
            await store.flush()  # the check runs at every flush, not only on the clock
        assert "its -wal file was deleted or moved away" in caplog.text
        assert store.healthy and os.path.exists(f"{path}-wal")
        assert on_disk(path) == {("windows", f"app|{i}"): {"used": i} for i in range(21)}
    finally:
        await store.close()
