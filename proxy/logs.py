"""Logging for tailing: one line per request, plain text or JSON, to stdout and optionally a file.

Contract
- ``setup_logging(settings, fmt_override)`` configures the ``exact_proxy`` logger tree once; calling it
  again (after a policy reload) replaces the handlers. Lines are flushed at the end of the event loop's
  turn in which they were written (one system call for many lines under load); the file,
  when configured, is rotated by size (``max_bytes``, ``backups``).
- Request lines (``log_access(fields)``) are rendered once by the configured formatter and written
  straight to each handler's stream, in order with the other lines: no ``LogRecord``, no handler
  filters, no per-handler formatting (that machinery cost 40 us a request line). In text they read
  ``time METHOD target status=… div=… ep=… up_ms=… ms=… in=… out=… decision="…"``; in JSON they are one
  object per line with the fields documented in the README ("Log format"). They are written while the
  ``exact_proxy.access`` logger is enabled for INFO.
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


_second: list = [None, ""]  # the last whole second formatted, and its text (one strftime a second)


def _iso(ts: float) -> str:
    sec = int(ts)
    if sec != _second[0]:
        _second[0], _second[1] = sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    return f"{_second[1]}.{int(ts * 1000) % 1000:03d}Z"


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
            return self.render_access(access)
        line = f"{_iso(record.created)} {record.levelname} {record.name}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return scrub(line)

    def render_access(self, a: dict[str, Any]) -> str:
        query = a.get("query")
        parts = [_iso(a["ts"]), a["method"], a["path"] + "?" + query if query else a["path"],
                 f"status={a['status']}"]
        for key, name in _TEXT_KEYS:
            value = a.get(key)
            if value is not None and value != "":
                parts.append(f"{name}={_logfmt_value(value)}")
        up_ms = a.get("upstream_ms")
        parts.append("up_ms=-" if up_ms is None else f"up_ms={up_ms:.1f}")
        parts.append(f"ms={a['total_ms']:.1f} in={a['bytes_in']} out={a['bytes_out']}")
        parts.append("decision=" + _logfmt_value("; ".join(a["decision"]) or "-"))
        return scrub(" ".join(parts))


_TEXT_KEYS = (("division", "div"), ("endpoint", "ep"), ("app", "app"), ("listener", "via"))


class JsonFormatter(_OnceFormatter):
    def render(self, record: logging.LogRecord) -> str:
        access = getattr(record, "access", None)
        if access is not None:
            return self.render_access(access)
        obj = {"ts": _iso(record.created), "level": record.levelname.lower(), "event": "log",
               "logger": record.name, "msg": record.getMessage()}
        if record.exc_info:
            obj["exc"] = self.formatException(record.exc_info)
        return scrub(json.dumps(obj, ensure_ascii=False, separators=(",", ":")))

    def render_access(self, a: dict[str, Any]) -> str:
        obj: dict[str, Any] = {"ts": None, "level": "info", "event": "request"}
        obj.update(a)  # ts keeps its place, first
        obj["ts"] = _iso(a["ts"])
        return scrub(json.dumps(obj, ensure_ascii=False, separators=(",", ":")))


class _TurnFlush:
    """The streams written in this turn of the event loop, flushed together by one callback at its
    end: under load one flush (one write system call per stream) carries many lines, and an idle
    proxy's line still reaches the terminal or file within microseconds. With no running loop
    (start-up, shutdown, ``logging.shutdown``) a stream is flushed at once."""

    def __init__(self) -> None:
        self.due: dict[_FlushPerLoopTurn, None] = {}  # insertion-ordered set

    def mark(self, handlers: tuple[_FlushPerLoopTurn, ...]) -> None:
        if not self.due:
            try:
                asyncio.get_running_loop().call_soon(self.run)
            except RuntimeError:
                for h in handlers:
                    h.flush_now()
                return
        for h in handlers:
            self.due[h] = None

    def run(self) -> None:
        due, self.due = self.due, {}
        for h in due:
            h.flush_now()


_turn = _TurnFlush()


class _FlushPerLoopTurn:
    """A handler whose lines are written as they come and flushed at the end of the loop's turn."""

    def flush(self) -> None:
        _turn.mark((self,))

    def write_line(self, line: str) -> None:
        """Write one rendered line ending in a newline (a request line: no ``LogRecord``), in order
        with the handler's other lines; the caller marks the handler for the end-of-turn flush."""
        with self.lock:  # type: ignore[attr-defined]
            try:
                self._write_line(line)
            except (OSError, ValueError):  # a closed or broken stream must not take the proxy down
                pass

    def _write_line(self, line: str) -> None:
        self.stream.write(line)  # type: ignore[attr-defined]

    def flush_now(self) -> None:
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
        return self._rolls(len(self.format(record).encode("utf-8", "replace")) + 1)

    def _rolls(self, size: int) -> bool:
        """Count ``size`` bytes about to be written; True when they start a new file."""
        if self.maxBytes <= 0:
            return False
        if self._written and self._written + size > self.maxBytes:
            self._written = -size  # the rollover that follows starts the new file with this record
            return True
        self._written += size
        return False

    def _write_line(self, line: str) -> None:
        if self._rolls(len(line) if line.isascii() else len(line.encode("utf-8", "replace"))):
            self.doRollover()
        if self.stream is None:
            self.stream = self._open()
        self.stream.write(line)

    def doRollover(self) -> None:  # noqa: N802 - logging API
        super().doRollover()
        self._written = max(0, -self._written)


def setup_logging(settings: Any, fmt_override: str | None = None, stream: Any = None) -> None:
    fmt = fmt_override or settings.format
    formatter: TextFormatter | JsonFormatter = JsonFormatter() if fmt == "json" else TextFormatter()
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
    handlers: list[_FlushPerLoopTurn] = [out]
    if settings.file:
        fh = SizeRotatingFileHandler(settings.file, settings.max_bytes, settings.backups)
        fh.setFormatter(formatter)
        root.addHandler(fh)
        handlers.append(fh)
    _access[:] = [formatter.render_access, tuple(handlers)]


_access: list = [None, ()]  # (render, handlers) of the current setup_logging


def log_access(fields: dict[str, Any]) -> None:
    """Write one request line to every handler of ``setup_logging``."""
    render, handlers = _access
    if render is None or not access_logger.isEnabledFor(logging.INFO):
        return
    line = render(fields) + "\n"
    for handler in handlers:
        handler.write_line(line)
    _turn.mark(handlers)
