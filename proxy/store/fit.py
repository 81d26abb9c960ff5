"""Writing a batch of pending changes to SQLite, as much of it as fits.

Contract
- ``await write_what_fits(db, batch, now) -> (left, error)``: ``batch`` maps ``(namespace, key)`` to a
  JSON value, or ``None`` for a delete. The whole batch goes in one transaction (the common case: one
  commit). When that fails (a full disk, SQLite's ``SQLITE_FULL``, an I/O error), it is rolled back and
  the batch is written in pieces instead: deletes first (they make room), then the smallest values,
  each piece its own transaction, pieces doubling while they fit and halving when one does not (a size
  that failed is not tried again). It stops when a single change does not fit. A file locked by another
  process (``SQLITE_BUSY``) is not split: every piece would wait for the same lock. ``left`` is what was not written (to keep pending and try again),
  ``error`` the last failure, or None when everything was written in the end.
- A value that is not JSON can never be written: it is dropped with an ERROR line, and never blocks
  the rest.
- Work is bounded: a disk that takes nothing costs two failed transactions; otherwise a batch of n
  changes costs about 3·log2(n) transactions at most (about 30 for a thousand).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
from typing import Any

log = logging.getLogger("exact_proxy.store")

WRITE_ERRORS = (OSError, sqlite3.Error, ValueError)
UPSERT = ("INSERT INTO state (namespace, key, value, updated_at) VALUES (?, ?, ?, ?) "
          "ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at")
DELETE = "DELETE FROM state WHERE namespace = ? AND key = ?"

Row = tuple[str, str, "str | None"]


async def write_what_fits(db, batch: dict[tuple[str, str], Any], now: float
                          ) -> tuple[dict[tuple[str, str], Any], Exception | None]:
    rows = _encode(batch)
    try:
        await _write(db, rows, now)
        return {}, None
    except WRITE_ERRORS as exc:
        error: Exception = exc
        await _rollback(db)
    if getattr(error, "sqlite_errorname", "") in ("SQLITE_BUSY", "SQLITE_LOCKED"):
        return dict(batch), error  # another process holds the file: smaller pieces would wait as long
    rows.sort(key=lambda r: -1 if r[2] is None else len(r[2]))
    start, size, limit = 0, 1, len(rows)
    while start < len(rows):
        piece = rows[start:start + size]
        try:
            await _write(db, piece, now)
        except WRITE_ERRORS as exc:
            error = exc
            await _rollback(db)
            if size == 1:
                break
            limit, size = size - 1, size // 2  # room only shrinks: a size that failed is not tried again
            continue
        start += len(piece)
        size = min(size * 2, limit)
    left = {(ns, key): batch[(ns, key)] for ns, key, _ in rows[start:]}
    return left, (error if left else None)


def _encode(batch: dict[tuple[str, str], Any]) -> list[Row]:
    rows: list[Row] = []
    for (ns, key), value in batch.items():
        if value is None:
            rows.append((ns, key, None))
            continue
        try:
            rows.append((ns, key, json.dumps(value, separators=(",", ":"))))
        except (TypeError, ValueError) as exc:
            log.error("state %s/%s cannot be stored (%s) and is dropped", ns, key, exc)
    return rows


async def _write(db, rows: list[Row], now: float) -> None:
    upserts = [(ns, key, text, now) for ns, key, text in rows if text is not None]
    deletes = [(ns, key) for ns, key, text in rows if text is None]
    if upserts:
        await db.executemany(UPSERT, upserts)
    if deletes:
        await db.executemany(DELETE, deletes)
    await db.commit()


async def _rollback(db) -> None:
    with contextlib.suppress(sqlite3.Error, ValueError):
        await db.rollback()
