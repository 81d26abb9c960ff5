"""Logging for tailing: one line per request, plain text or JSON, to stdout and optionally a file.

Contract
- ``setup_logging(settings, fmt_override)`` configures the ``exact_proxy`` logger tree once; calling it
  again (after a policy reload) replaces the handlers. Lines are flushed at the end of the event loop's
  turn in which they were written (one system call for many lines under load); the file,
  when configured, is rotated by size (``max_bytes``, ``backups``).
- Request lines are records with ``extra={"access": {...}}``; ``format_access`` renders them. In text
  they read ``time METHOD target status=… div=… ep=… up_ms=… ms=… in=… out=… decision="…"``; in JSON
  they are one object per line with the fields documented in the README ("Log format").
- Every line passes ``redact.scrub`` before it is written: no token, code, secret or Authorization
  value reaches a log, whatever a query or a message holds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import logging.handlers
import os
import sys
import time
from typing import Any

from .redact import scrub

LOGGER = "exact_proxy"
access_logger = logging.getLogger("exact_proxy.access")


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


def _logfmt_value(value: Any) -> str:
    text = "-" if value is None or value == "" else str(value)
    if " " in text or '"' in text or "=" in text:
        text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


class _OnceFormatter(logging.Formatter):
    """Formats a record once, however many handlers write it."""

    def format(self, record: logging.LogRecord) -> str:
        cached = record.__dict__.get("_exact_proxy_line")
        if cached is not None and cached[0] is self:
            return cached[1]
        line = self.render(record)
        record.__dict__["_exact_proxy_line"] = (self, line)
        return line

    def render(self, record: logging.LogRecord) -> str:
        raise NotImplementedError


class TextFormatter(_OnceFormatter):
    def render(self, record: logging.LogRecord) -> str:
        access = getattr(record, "access", None)
        if access is not None:
            a = access
            target = a["path"] + ("?" + a["query"] if a.get("query") else "")
            parts = [_iso(a["ts"]), a["method"], target, f"status={a['status']}"]
            for key, name in (("division", "div"), ("endpoint", "ep"), ("app", "app"),
                              ("listener", "via")):
                if a.get(key) not in (None, ""):
                    parts.append(f"{name}={_logfmt_value(a[key])}")
            parts.append(f"up_ms={a['upstream_ms']:.1f}" if a.get("upstream_ms") is not None else "up_ms=-")
            parts.append(f"ms={a['total_ms']:.1f}")
            parts.append(f"in={a['bytes_in']} out={a['bytes_out']}")
            parts.append("decision=" + _logfmt_value("; ".join(a["decision"]) or "-"))
            line = " ".join(parts)
        else:
            line = f"{_iso(record.created)} {record.levelname} {record.name}: {record.getMessage()}"
            if record.exc_info:
                line += "\n" + self.formatException(record.exc_info)
        return scrub(line)


class JsonFormatter(_OnceFormatter):
    def render(self, record: logging.LogRecord) -> str:
        access = getattr(record, "access", None)
        if access is not None:
            obj = {"ts": _iso(access["ts"]), "level": "info", "event": "request"}
            obj.update({k: v for k, v in access.items() if k != "ts"})
        else:
            obj = {"ts": _iso(record.created), "level": record.levelname.lower(), "event": "log",
                   "logger": record.name, "msg": record.getMessage()}
            if record.exc_info:
                obj["exc"] = self.formatException(record.exc_info)
        return scrub(json.dumps(obj, ensure_ascii=False, separators=(",", ":")))


class _FlushPerLoopTurn:
    """Each line is written as it comes, but the flush (one write system call per stream) happens once
    at the end of the event loop's turn instead of once per line: under load one flush carries many
    lines, and an idle proxy's line still reaches the terminal or file within microseconds. With no
    running loop (start-up, shutdown, ``logging.shutdown``) it flushes at once."""

    _flush_pending = False

    def flush(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._flush_now()
            return
        if not self._flush_pending:
            self._flush_pending = True
            loop.call_soon(self._flush_now)

    def _flush_now(self) -> None:
        self._flush_pending = False
        try:
            super().flush()  # type: ignore[misc]
        except (OSError, ValueError):  # a closed or broken stream must not take the proxy down
            pass


class _FlushingStreamHandler(_FlushPerLoopTurn, logging.StreamHandler):
    """Lines flushed per loop turn; this handler also survives a closed stdout."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging API
        pass


class SizeRotatingFileHandler(_FlushPerLoopTurn, logging.handlers.RotatingFileHandler):
    """RotatingFileHandler that counts the bytes it wrote instead of stat-ing and seeking the file for
    every record (Python 3.11 does both), which cost a fifth of the proxy's CPU per request."""

    def __init__(self, filename: str, max_bytes: int, backups: int) -> None:
        super().__init__(filename, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        try:
            self._written = os.path.getsize(self.baseFilename)
        except OSError:
            self._written = 0

    def shouldRollover(self, record: logging.LogRecord) -> bool:  # noqa: N802 - logging API
        if self.maxBytes <= 0:
            return False
        size = len(self.format(record).encode("utf-8", "replace")) + 1
        if self._written and self._written + size > self.maxBytes:
            self._written = -size  # the rollover that follows starts the new file with this record
            return True
        self._written += size
        return False

    def doRollover(self) -> None:  # noqa: N802 - logging API
        super().doRollover()
        self._written = max(0, -self._written)


def setup_logging(settings: Any, fmt_override: str | None = None, stream: Any = None) -> None:
    fmt = fmt_override or settings.format
    formatter: logging.Formatter = JsonFormatter() if fmt == "json" else TextFormatter()
    root = logging.getLogger(LOGGER)
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    root.setLevel(getattr(logging, settings.level.upper(), logging.INFO))
    # no line shows thread or process names: do not collect them for every record
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    root.propagate = False
    out = _FlushingStreamHandler(stream or sys.stdout)
    out.setFormatter(formatter)
    root.addHandler(out)
    if settings.file:
        fh = SizeRotatingFileHandler(settings.file, settings.max_bytes, settings.backups)
        fh.setFormatter(formatter)
        root.addHandler(fh)


def log_access(fields: dict[str, Any]) -> None:
    # makeRecord + handle is what Logger.info does, minus findCaller's walk up the stack (a request
    # line's caller is always the access-log filter).
    if access_logger.isEnabledFor(logging.INFO):
        access_logger.handle(access_logger.makeRecord(access_logger.name, logging.INFO, __file__, 0, "request",
                                                      None, None, extra={"access": fields}))
