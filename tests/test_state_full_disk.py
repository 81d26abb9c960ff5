"""A full disk: the store writes whatever fits at once, keeps the rest pending, and recovers by itself.

It used to recover only once the whole pending batch fitted: one large batch kept even a one-row update
off the disk. Two real sources of SQLITE_FULL: SQLite's own page limit (``PRAGMA max_page_count`` on
the store's connection; runs everywhere) and a real 1 MiB tmpfs (needs root and ``mount``; skipped
with the reason otherwise).
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import subprocess

import aiohttp
import pytest

from proxy.clock import ManualClock
from proxy.store import SqliteStore
from tests.test_state_lost_file import health, in_memory, on_disk, wait_for


async def limit_pages(store, extra: int | None) -> None:
    """Let the database grow ``extra`` pages beyond its size now (None: no limit)."""
    pages = (await (await store._db.execute("PRAGMA page_count")).fetchone())[0]
    await store._db.execute(f"PRAGMA max_page_count={1 << 30 if extra is None else pages + extra}")


async def test_a_full_database_writes_what_fits_at_once_and_the_rest_later(tmp_path, caplog):
    path = tmp_path / "s.sqlite"
    store = SqliteStore(str(path), ManualClock())
    await store.open()
    try:
        for i in range(30):
            store.put("windows", f"app|{i}", {"used": i})
        await store.flush()
        await limit_pages(store, 1)

        store.put("token_chains", "c1", {"refresh": "rotated"})  # a small write that must not wait
        store.delete("windows", "app|2")
        for i in range(1000):  # far more than one free page holds
            store.put("windows", f"big|{i}", {"used": i, "note": "x" * 100})
        with caplog.at_level(logging.ERROR, logger="exact_proxy.store"):
            await store.flush()
        held = on_disk(path)
        assert held[("token_chains", "c1")] == {"refresh": "rotated"} and ("windows", "app|2") not in held
        first = sum(1 for ns, key in held if key.startswith("big|"))
        assert 0 < first < 1000
        assert not store.healthy and "database or disk is full" in caplog.text
        assert f"{1000 - first} changes wait" in store.problem

        await store.flush()  # still no room: nothing more, nothing lost
        assert sum(1 for ns, key in on_disk(path) if key.startswith("big|")) == first and not store.healthy

        await limit_pages(store, 3)  # a little room: more goes at once, long before all of it fits
        await store.flush()
        second = sum(1 for ns, key in on_disk(path) if key.startswith("big|"))
        assert first < second < 1000 and not store.healthy

        await limit_pages(store, None)
        await store.flush()
        assert store.healthy and store.problem is None
        assert on_disk(path) == await in_memory(store) | {
            ("windows", f"big|{i}"): {"used": i, "note": "x" * 100} for i in range(1000)}
    finally:
        await store.close()


@pytest.fixture
def small_disk(tmp_path):
    """A real 1 MiB tmpfs (request it before ``start_proxy``: the proxy stops before it is unmounted)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    yield mount
    if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill(disk) -> str:
    """Fill the disk to the last byte; returns the filler's name."""
    filler = str(disk / "filler")
    fd = os.open(filler, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
    try:
        for chunk in (65536, 4096, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


async def test_a_real_full_disk_under_the_proxy(small_disk, upstream, start_proxy, log_output):
    clock = ManualClock()
    state = small_disk / "state.sqlite"
    # usage records (one per division here) are capped: the 1 MiB disk is sized for the windows
    proxy = await start_proxy(str(upstream.make_url("")).rstrip("/"), "usage: {max_keys_per_day: 100}\n",
                              clock=clock, state_path=str(state))
    base, store = proxy.url("default"), proxy.services.store

    def divisions_on_disk() -> int:
        return sum(1 for ns, _ in on_disk(state) if ns == "windows")

    async with aiohttp.ClientSession() as s:
        async def calls(divisions) -> None:
            for division in divisions:
                async with s.get(f"{base}/api/v1/{division}/crm/Contacts") as r:
                    assert r.status == 200

        await calls(range(1, 4))
        await clock.advance(1.0)
        await wait_for(lambda: divisions_on_disk() == 3)
        assert (await health(s, base))[0] == 200

        filler = fill(small_disk)
        await calls(range(4, 1004))  # a thousand new divisions: far more than any room made below
        await clock.advance(1.0)
        await wait_for(lambda: not store.healthy)
        code, body = await health(s, base)
        assert code == 503 and "database or disk is full" in body["reason"], body
        before, records = divisions_on_disk(), len(on_disk(state))

        os.truncate(filler, os.path.getsize(filler) - 32 * 1024)  # some room, not enough for all
        await clock.advance(1.0)
        await wait_for(lambda: len(on_disk(state)) > records)  # windows and usage records, smallest first
        partly = divisions_on_disk()
        assert partly < 1003 and (await health(s, base))[0] == 503

        os.unlink(filler)
        await clock.advance(1.0)
        await wait_for(lambda: store.healthy)
        assert (await health(s, base))[0] == 200
        assert divisions_on_disk() == 1003 and on_disk(state) == await in_memory(store)
    print(f"\nfull tmpfs: {before} divisions on disk while full, {partly} after 32 KiB were freed, "
          "1003 once the disk had room")
    assert "is writable again" in log_output.getvalue()
