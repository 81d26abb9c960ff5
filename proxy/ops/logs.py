"""Logging for tailing: one line per request, plain text or JSON, to stdout and optionally a file.

Contract
- ``setup_logging(settings, fmt_override)`` configures the ``exact_proxy`` logger tree once; calling it
  again (after a policy reload) replaces the handlers. Request lines reach the streams at the end of
  the event loop's turn in which they were logged (one write for all of them), other lines at once;
  the order is always the order of logging, and streams are flushed (a system call) once per turn. The
  file, when configured, is rotated by size (``max_bytes``, ``backups``). It is readable by its owner
  only (0600), like the state file: created so, whatever the umask, and so is every file a rotation
  starts; a file found readable by others is tightened, with a WARNING.
- Request lines (``log_access(fields)``) are rendered once by the configured formatter and queued on
  each handler with the other lines: no ``LogRecord``, no handler filters, no per-handler formatting
  (that machinery cost 40 us a request line). In text they read
  ``time METHOD target status=… div=… ep=… up_ms=… ms=… in=… out=… decision="…"``; in JSON they are one
  object per line with the fields documented in the README ("Log format"). They are written while the
  ``exact_proxy.access`` logger is enabled for INFO.
- Every line passes ``redact.scrub`` before it is written: no token, code, secret or Authorization
  value reaches a log, whatever a query or a message holds.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import logging.handlers
import os
import stat
import sys
import time
from typing import Any

from proxy.ops.redact import scrub

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
        query, division, up_ms = a["query"], a["division"], a["upstream_ms"]
        return scrub(
            f"{_iso(a['ts'])} {a['method']} {a['path'] + '?' + query if query else a['path']} "
            f"status={a['status']}{'' if division is None else f' div={division}'}"
            f"{_field(' ep=', a['endpoint'])}{_field(' app=', a['app'])}{_field(' via=', a['listener'])}"
            f" up_ms={'-' if up_ms is None else f'{up_ms:.1f}'} ms={a['total_ms']:.1f} in={a['bytes_in']}"
            f" out={a['bytes_out']} decision={_logfmt_value('; '.join(a['decision']) or '-')}")


@functools.lru_cache(maxsize=4096)
def _field(prefix: str, value: Any) -> str:
    """`` name=value`` of a request line field (endpoint, app, listener: few distinct values, so the
    quoting is looked up, not redone); empty when the value is absent."""
    return "" if value is None or value == "" else prefix + _logfmt_value(value)


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
    """The handlers that got lines in this turn of the event loop, written out together by one
    callback at its end. With no running loop (start-up, shutdown, another thread) at once."""

    def __init__(self) -> None:
        self.due: dict[_LineBuffer, None] = {}  # insertion-ordered set
        self._loop: asyncio.AbstractEventLoop | None = None  # where the pending callback will run

    def mark(self, handlers: tuple[_LineBuffer, ...]) -> None:
        loop = self._loop
        if self.due and loop is not None and loop.is_running():  # a callback is due: join it
            for h in handlers:
                self.due[h] = None
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop in this thread: write at once, and whatever a stopped loop left
            stale, self.due = self.due, {}
            for h in (*stale, *handlers):
                h.flush()
            return
        self._loop = loop  # a loop that stopped before its callback ran left "due" behind: start anew
        loop.call_soon(self.run)
        for h in handlers:
            self.due[h] = None

    def run(self) -> None:
        due, self.due = self.due, {}
        for h in due:
            h.flush()


_turn = _TurnFlush()


class _LineBuffer:
    """A handler that collects request lines (``write_line``) and writes them at the end of the loop's
    turn: one write and one flush (one system call) per stream for all the lines of the turn. Under
    load that carries many lines; an idle proxy's line still reaches the terminal or file within
    microseconds. Any other record (``emit``) is written to the stream at once, after the request
    lines queued before it, so the order holds; its flush waits for the end of the turn too.
    ``flush()`` and ``close()`` write whatever is pending at once. A closed or broken stream never takes
    the proxy down."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"  # type: ignore[attr-defined]
        except Exception:
            self.handleError(record)  # type: ignore[attr-defined]
            return
        with self.lock:  # type: ignore[attr-defined]
            lines, self._lines = self._lines, []
            lines.append(line)
            try:
                self._write_out(lines)
            except (OSError, ValueError):
                pass
        _turn.mark((self,))

    def write_line(self, line: str) -> None:
        """Queue one rendered line that ends in a newline; the caller marks the handler for the
        end-of-turn write (``_turn.mark``)."""
        with self.lock:  # type: ignore[attr-defined]
            self._lines.append(line)

    def flush(self) -> None:
        with self.lock:  # type: ignore[attr-defined]
            lines, self._lines = self._lines, []
            try:
                if lines:
                    self._write_out(lines)
                stream = self.stream  # type: ignore[attr-defined]
                if stream is not None:
                    stream.flush()
            except (OSError, ValueError):
                pass

    def _write_out(self, lines: list[str]) -> None:
        self.stream.write("".join(lines))  # type: ignore[attr-defined]

    def close(self) -> None:
        self.flush()
        super().close()  # type: ignore[misc]


class _FlushingStreamHandler(_LineBuffer, logging.StreamHandler):
    """Lines written per loop turn; this handler also survives a closed stdout."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging API
        pass


class SizeRotatingFileHandler(_LineBuffer, logging.handlers.RotatingFileHandler):
    """A size-rotated log file that counts the bytes it wrote instead of stat-ing and seeking the file
    for every record (Python 3.11 does both, which cost a fifth of the proxy's CPU per request). A
    file is rolled over before the line that would take it past ``max_bytes``."""

    def __init__(self, filename: str, max_bytes: int, backups: int) -> None:
        self.loosened: int | None = None  # the mode of a file found readable by others (then tightened)
        super().__init__(filename, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        try:
            self._written = os.path.getsize(self.baseFilename)
        except OSError:
            self._written = 0

    def _open(self):
        """The file, appended to, created owner-only (0600) whatever the umask; tightened if looser."""
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            mode = stat.S_IMODE(os.fstat(fd).st_mode)
            if mode & 0o077:
                os.fchmod(fd, 0o600)
                self.loosened = mode
            return os.fdopen(fd, "a", encoding=self.encoding, errors=self.errors)
        except BaseException:
            os.close(fd)
            raise

    def _write_out(self, lines: list[str]) -> None:
        if self.maxBytes <= 0:
            self._write(lines)
            return
        start = 0
        for i, line in enumerate(lines):
            size = len(line) if line.isascii() else len(line.encode("utf-8", "replace"))
            if self._written and self._written + size > self.maxBytes:
                self._write(lines[start:i])
                self.doRollover()
                self._written, start = 0, i
            self._written += size
        self._write(lines[start:])

    def _write(self, lines: list[str]) -> None:
        if lines:
            if self.stream is None:  # closed by a rollover or close(): logging reopens on write
                self.stream = self._open()
            super()._write_out(lines)

    def doRollover(self) -> None:  # noqa: N802 - logging API
        if self.stream is not None:
            self.stream.flush()
        super().doRollover()


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
    handlers: list[_LineBuffer] = [out]
    if settings.file:
        fh = SizeRotatingFileHandler(settings.file, settings.max_bytes, settings.backups)
        fh.setFormatter(formatter)
        root.addHandler(fh)
        handlers.append(fh)
        if fh.loosened is not None:
            logging.getLogger("exact_proxy.logs").warning(
                "log file %s was readable by others (mode %o); now owner only", settings.file, fh.loosened)
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
