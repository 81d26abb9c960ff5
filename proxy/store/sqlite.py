"""``SqliteStore``: the store in one SQLite file through aiosqlite (WAL, one writer, batched writes).

Contract (beyond ``base.Store``):
- The file and its ``-wal``/``-shm`` companions are readable by their owner only (0600); an existing
  file with looser permissions is tightened, with a warning.
- Writes are batched: everything queued since the last flush goes in one transaction, at least every
  ``flush_interval`` seconds. After ``kill -9`` the file opens cleanly (WAL) and holds every flushed batch.
- A file that is not a database, or is damaged, is moved aside to ``<name>.corrupt-<time>`` with an
  ERROR line, and a fresh file is started: the proxy never refuses to start over its own state.
- A directory that cannot be written (read-only, full, gone): the store keeps serving from memory,
  ``healthy`` turns False, one ERROR line says why, and every later flush tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sqlite3
import stat
import time
from typing import Any

import aiosqlite

from .base import Store

log = logging.getLogger("exact_proxy.store")

SCHEMA = ("CREATE TABLE IF NOT EXISTS state (namespace TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, "
          "updated_at REAL NOT NULL, PRIMARY KEY (namespace, key)) WITHOUT ROWID")


class SqliteStore(Store):
    def __init__(self, path: str, clock, flush_interval: float = 1.0) -> None:
        super().__init__()
        self.path = path
        self.clock = clock
        self.flush_interval = flush_interval
        self._db: aiosqlite.Connection | None = None
        self._pending: dict[tuple[str, str], Any] = {}
        self._task: asyncio.Task | None = None
        self._lock = asyncio.Lock()
        self._failure: str | None = None
        self.healthy = True

    # -- life --------------------------------------------------------------------------------------
    async def open(self) -> None:
        await self._connect(load=True)
        self._task = asyncio.get_running_loop().create_task(self._flusher(), name="state-flush")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error, ValueError):
                await self._db.close()
            self._db = None

    def describe(self) -> str:
        if self._db is None:
            return f"memory only: cannot write {self.path} ({self._failure})"
        return f"sqlite {self.path} (WAL)" + ("" if self.healthy else f", NOT WRITING: {self._failure}")

    async def _connect(self, load: bool) -> bool:
        try:
            self._prepare_file()
            db = await aiosqlite.connect(self.path, timeout=5)
            try:
                await db.execute("PRAGMA journal_mode=WAL")
                await db.execute("PRAGMA synchronous=NORMAL")
                await db.execute(SCHEMA)
                await db.commit()
                rows = await (await db.execute("SELECT namespace, key, value FROM state")).fetchall()
            except sqlite3.DatabaseError as exc:
                await db.close()
                if isinstance(exc, sqlite3.OperationalError) and not _is_corruption(exc):
                    raise
                self._move_aside(exc)
                return await self._connect(load)
        except (OSError, sqlite3.Error) as exc:
            self._fail(f"{type(exc).__name__}: {exc}")
            return False
        self._db = db
        self._tighten_companions()
        if load:
            for ns, key, value in rows:
                try:
                    self._view.setdefault(ns, {}).setdefault(key, json.loads(value))
                except ValueError:
                    log.error("state %s/%s in %s is not JSON and is ignored", ns, key, self.path)
        if self._failure is not None:
            log.warning("state file %s is writable again", self.path)
        self._failure, self.healthy = None, True
        return True

    def _prepare_file(self) -> None:
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, mode=0o700, exist_ok=True)
        if not os.path.exists(self.path):
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        mode = stat.S_IMODE(os.stat(self.path).st_mode)
        if mode & 0o077:
            log.warning("state file %s was readable by others (mode %o); now owner only", self.path, mode)
            os.chmod(self.path, 0o600)

    def _tighten_companions(self) -> None:
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(OSError):
                os.chmod(self.path + suffix, 0o600)

    def _move_aside(self, exc: Exception) -> None:
        aside = f"{self.path}.corrupt-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
        log.error("state file %s cannot be read (%s); moved aside to %s and starting a fresh one",
                  self.path, exc, aside)
        os.replace(self.path, aside)
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(OSError):
                os.replace(self.path + suffix, aside + suffix)

    def _fail(self, reason: str) -> None:
        if reason != self._failure:
            log.error("state file %s cannot be written (%s): counters are kept in memory only and a restart "
                      "would forget them; fix the state directory or state.path", self.path, reason)
        self._failure, self.healthy = reason, False

    # -- writes ------------------------------------------------------------------------------------
    def _queued(self, namespace: str, key: str, value: Any) -> None:
        self._pending[(namespace, key)] = value

    async def flush(self) -> None:
        async with self._lock:
            if not self._pending:
                return
            if self._db is None and not await self._connect(load=False):
                return
            batch, self._pending = self._pending, {}
            now = self.clock.time()
            upserts = [(ns, key, json.dumps(v, separators=(",", ":")), now)
                       for (ns, key), v in batch.items() if v is not None]
            deletes = [(ns, key) for (ns, key), v in batch.items() if v is None]
            try:
                if upserts:
                    await self._db.executemany("INSERT INTO state (namespace, key, value, updated_at) "
                                               "VALUES (?, ?, ?, ?) ON CONFLICT (namespace, key) DO UPDATE "
                                               "SET value = excluded.value, updated_at = excluded.updated_at",
                                               upserts)
                if deletes:
                    await self._db.executemany("DELETE FROM state WHERE namespace = ? AND key = ?", deletes)
                await self._db.commit()
            except (OSError, sqlite3.Error, ValueError) as exc:
                with contextlib.suppress(sqlite3.Error, ValueError):
                    await self._db.rollback()
                for k, v in batch.items():  # keep newer pending values; retry the rest next time
                    self._pending.setdefault(k, v)
                self._fail(f"{type(exc).__name__}: {exc}")
                return
            if self._failure is not None:
                log.warning("state file %s is writable again", self.path)
                self._failure, self.healthy = None, True

    async def _flusher(self) -> None:
        while True:
            await self.clock.sleep(self.flush_interval)
            try:
                await self.flush()
            except Exception:  # the flusher must outlive any single failure
                log.exception("state flush failed")


def _is_corruption(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return "not a database" in text or "malformed" in text or "corrupt" in text
