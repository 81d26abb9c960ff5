"""``SqliteStore``: the store in one SQLite file through aiosqlite (WAL, one writer, batched writes).

Contract (beyond ``base.Store``):
- The file and its ``-wal``/``-shm`` companions are readable by their owner only (0600); an existing
  file with looser permissions is tightened, with a warning.
- Writes are batched: everything queued since the last flush goes in one transaction, at least every
  ``flush_interval`` seconds. After ``kill -9`` the file opens cleanly (WAL) and holds every flushed batch.
- A file that is not a database, or is damaged, is moved aside to ``<name>.corrupt-<time>`` with an
  ERROR line, and a fresh file is started: the proxy never refuses to start over its own state.
- A directory that cannot be written (read-only, gone): the store keeps serving from memory, ``healthy``
  turns False, one ERROR line says why, and every later flush tries again.
- A full disk: whatever fits is written at once, the rest stays pending and is retried at every flush
  (``fit.write_what_fits``); ``healthy`` is False until nothing is left waiting.
- A lost file: every flush (so at least every ``flush_interval``, also when nothing is pending) checks
  that the path still names the file the store has open (``sqlite_file.Identity``). When it was deleted,
  moved away or replaced (or its ``-wal``/``-shm`` was deleted), one ERROR line says so, ``healthy``
  turns False and ``problem`` names the cause, a file now at the path that is not ours is moved aside to
  ``<name>.replaced-<time>``, and everything the store holds (its whole view: counters, pauses, error
  counts, token chains) is written to a new file. ``healthy`` returns once the new file holds it all.
- ``problem`` is None while healthy, else the reason in words (for ``/_proxy/health``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
from typing import Any

import aiosqlite

from proxy.store import sqlite_file
from proxy.store.base import Store
from proxy.store.fit import write_what_fits

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
        self._identity: sqlite_file.Identity | None = None
        self._pending: dict[tuple[str, str], Any] = {}
        self._task: asyncio.Task | None = None
        self._lock = asyncio.Lock()
        self._failure: str | None = None  # why the last write failed
        self._lost: str | None = None     # why the file we wrote is gone, until a new one holds everything
        self._closed = False
        self.healthy = True

    @property
    def problem(self) -> str | None:
        if self.healthy:
            return None
        parts = [p for p in (self._lost, self._failure and f"cannot write: {self._failure}") if p]
        if self._pending:
            parts.append(f"{len(self._pending)} changes wait to be written")
        return "; ".join(parts) or None

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
        if self._pending:
            log.error("state file %s: %d changes could not be written and are lost with this stop (%s)",
                      self.path, len(self._pending), self._failure)
        await self._disconnect()
        self._closed = True

    def describe(self) -> str:
        if self._db is None:
            return f"memory only: cannot write {self.path} ({self.problem})"
        return f"sqlite {self.path} (WAL)" + ("" if self.healthy else f", NOT WRITING: {self.problem}")

    async def _connect(self, load: bool) -> bool:
        try:
            sqlite_file.prepare(self.path)
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
                aside = sqlite_file.move_aside(self.path, "corrupt")
                log.error("state file %s cannot be read (%s); moved aside to %s and starting a fresh one",
                          self.path, exc, aside)
                return await self._connect(load)
        except (OSError, sqlite3.Error) as exc:
            self._fail(f"{type(exc).__name__}: {exc}")
            return False
        self._db = db
        sqlite_file.tighten_companions(self.path)
        self._identity = sqlite_file.Identity.of(self.path)
        if load:
            for ns, key, value in rows:
                try:
                    self._view.setdefault(ns, {}).setdefault(key, json.loads(value))
                except ValueError:
                    log.error("state %s/%s in %s is not JSON and is ignored", ns, key, self.path)
        return True

    async def _disconnect(self) -> None:
        db, self._db, self._identity = self._db, None, None
        if db is not None:
            with contextlib.suppress(sqlite3.Error, ValueError):
                await db.close()

    def _fail(self, reason: str) -> None:
        if reason != self._failure:
            log.error("state file %s cannot be written (%s): counters are kept in memory only and a restart "
                      "would forget them; fix the state directory or state.path", self.path, reason)
        self._failure, self.healthy = reason, False

    # -- a lost file ---------------------------------------------------------------------------------
    async def _check_file(self) -> None:
        why = self._identity.lost() if self._identity is not None else None
        if why is None:
            return
        self._lost = f"state file {self.path}: {why} under the running proxy"
        entries = sum(len(v) for v in self._view.values())
        log.error("%s; its counters and token chains would be gone at the next start: writing the whole "
                  "current state (%d entries) to a new file", self._lost, entries)
        self.healthy = False
        identity = self._identity
        foreign = identity.foreign() if identity is not None else None
        if foreign:  # before our connection closes: SQLite removes -wal and -shm by name when it does
            with contextlib.suppress(OSError):
                aside = sqlite_file.move_aside(self.path, "replaced", only=foreign)
                log.error("state file %s: the file found there instead is kept as %s", self.path, aside)
        await self._disconnect()
        rebuild = {(ns, key): v for ns, values in self._view.items() for key, v in values.items()}
        rebuild.update({k: None for k, v in self._pending.items() if v is None})  # deletes not yet written
        self._pending = rebuild

    # -- writes ------------------------------------------------------------------------------------
    def _queued(self, namespace: str, key: str, value: Any) -> None:
        self._pending[(namespace, key)] = value

    async def flush(self) -> None:
        async with self._lock:
            if self._closed:
                return
            if self._db is not None:
                await self._check_file()
            if not self._pending and self._db is not None:
                return
            if self._db is None and not await self._connect(load=False):
                return
            batch, self._pending = self._pending, {}
            left, error = await write_what_fits(self._db, batch, self.clock.time())
            for k, v in left.items():  # keep newer pending values; retry the rest next time
                self._pending.setdefault(k, v)
            if error is not None:
                self._fail(f"{type(error).__name__}: {error}")
                return
            if not self.healthy:  # changes that came in meanwhile go next time, like any others
                self._recovered()

    def _recovered(self) -> None:
        if self._lost is not None:
            log.warning("%s: a new file now holds the whole state (%d entries)", self._lost,
                        sum(len(v) for v in self._view.values()))
        elif self._failure is not None:
            log.warning("state file %s is writable again: every change that waited is written", self.path)
        self._failure, self._lost, self.healthy = None, None, True

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
