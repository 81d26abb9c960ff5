"""Hot reload of policies.yaml.

Contract
- ``PolicyHolder.current`` is the policy in force. ``reload()`` reads the file again: a valid file
  replaces the policy and calls every ``on_change(old, new)`` listener; an invalid, empty, truncated or
  deleted file is refused with one ERROR line per problem (file, line, key, reason) and the last good
  policy stays in force.
- A file cut short is refused too (``cut_short``), compared with the last good file (the one the proxy
  started with, or the last one accepted since): (1) a top-level section or setting that set something
  in the last good file and is absent from this one; (2) a file that does not end with a newline, when
  the section it ends in lost settings the last good file had there, or its last value is the
  beginning of the one the last good file had at that place (``daily: 40`` where it said ``daily:
  4000``). The message says how to reset a section on purpose (``limits: {}``), or to end the file with
  a newline to confirm the edit. At the first load there is no last good file: nothing is compared.
- ``poll()`` looks at the file's *path* (not an open inode), comparing inode, size and modification
  time, so a save by rename (what editors do) is noticed as well as an in-place write. A change is read
  once the file has held still for one poll (a copy or an in-place write still under way is not read
  half done), and a file that changes while it is being read is read again at a later poll.
- ``watch()`` polls every ``reload_interval`` seconds. Polling is used instead of inotify so it works
  the same on every OS and in Docker bind mounts.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from proxy.policy import Policy, PolicyError, load_policy
from proxy.policy.reader import Path, Problem, dotted, parse

log = logging.getLogger("exact_proxy.policy")


def _signature(path: str) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except (OSError, UnicodeDecodeError):
        return None


class PolicyHolder:
    def __init__(self, policy: Policy, path: str | None = None) -> None:
        self.current = policy
        self.path = path
        self.listeners: list[Callable[[Policy, Policy], None]] = []
        self._sig = _signature(path) if path else None
        self._settling: tuple | None = None
        self._missing_reported = False
        text = _read(path) if path else None
        self._good = Outline.of(text, path) if text is not None and path else None  # the last good file
        self.reloads = 0
        self.refusals = 0

    def on_change(self, fn: Callable[[Policy, Policy], None]) -> None:
        self.listeners.append(fn)

    def reload(self) -> bool:
        if not self.path:
            return False
        self._sig = _signature(self.path)
        before = _read(self.path)
        try:
            new = load_policy(self.path)
            if before is None or _read(self.path) != before:  # written while we read it: read it again
                self._sig = None                                # once it holds still
                return False
            outline = Outline.of(before, self.path)
            problems = cut_short(self._good, outline)
            if problems:
                raise PolicyError(problems)
        except PolicyError as exc:
            self.refusals += 1
            for problem in exc.problems:
                log.error("policy refused, the last good policy stays in force: %s", problem)
            return False
        old, self.current, self._good = self.current, new, outline
        self.reloads += 1
        log.info("policy reloaded from %s", self.path)
        for fn in self.listeners:
            try:
                fn(old, new)
            except Exception:  # a listener must not undo a reload
                log.exception("applying the reloaded policy failed in %r", fn)
        return True

    def poll(self) -> bool:
        """One look at the file; True when a new policy was taken."""
        if not self.path:
            return False
        sig = _signature(self.path)
        if sig is None:
            if not self._missing_reported:
                log.error("policy file %s is gone; the last good policy stays in force", self.path)
                self._missing_reported = True
            self._sig = self._settling = None
            return False
        self._missing_reported = False
        if sig == self._sig:
            self._settling = None
            return False
        if sig != self._settling:  # changed since the last look: read it once it holds still
            self._settling = sig
            return False
        self._settling = None
        return self.reload()

    async def watch(self, stop: asyncio.Event | None = None) -> None:
        if not self.path:
            return
        while stop is None or not stop.is_set():
            await asyncio.sleep(self.current.reload_interval)
            self.poll()


# -- a file cut short ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Outline:
    """What ``cut_short`` compares: the top-level keys, every leaf value by key path, where it ends."""

    file: str
    sections: dict[str, Any]          # top-level key -> its value
    leaves: dict[Path, Any]           # key path -> scalar (or empty mapping or list), in file order
    ends_with_newline: bool
    last_line: int
    last_section: str | None          # the top-level key the file ends in
    last_leaf: Path | None            # the last setting written on the file's last line, if any

    @classmethod
    def of(cls, text: str, file: str) -> Outline | None:
        try:
            data, lines = parse(text, file)
        except PolicyError:
            return None
        if not isinstance(data, dict):
            return None
        leaves: dict[Path, Any] = {}
        _walk(data, (), leaves)
        last_line = len(text.splitlines()) or 1
        on_last_line = [p for p in leaves if _line(lines, p) == last_line]
        last_section = max(data, key=lambda k: lines.get((k,), 0), default=None)
        return cls(file, dict(data), leaves, text.endswith(("\n", "\r")), last_line, last_section,
                   on_last_line[-1] if on_last_line else None)


def cut_short(good: Outline | None, new: Outline | None) -> list[Problem]:
    """Why ``new`` looks like ``good`` cut short (nothing at the first load: no ``good`` to compare)."""
    if good is None or new is None:
        return []
    problems = []
    where = f"the file ends at line {new.last_line}"
    for key, value in good.sections.items():
        if key not in new.sections and not _empty(value):  # a section that set nothing may go unnoticed
            reset = f"'{key}: {{}}'" if isinstance(value, dict) else f"'{key}:' with nothing after it"
            problems.append(Problem(new.file, new.last_line, key, (
                f"missing here but set in the last good policy: is the file cut short ({where})? To reset "
                f"it to the defaults on purpose, write {reset}")))
    section = new.last_section
    if new.ends_with_newline or section is None or section not in good.sections:
        return problems
    confirm = "finish the line, or end the file with a newline to confirm the edit"
    lost = [p for p, v in good.leaves.items() if p[0] == section and not _empty(v) and new.leaves.get(p) is None]
    if lost:
        names = ", ".join(dotted(p) for p in lost[:5]) + (f" and {len(lost) - 5} more" if len(lost) > 5 else "")
        problems.append(Problem(new.file, new.last_line, section, (
            f"the file ends without a newline and this section lacks {names}, set in the last good policy: "
            f"the last line looks cut short; {confirm}")))
    elif new.last_leaf is not None:
        now, then = new.leaves[new.last_leaf], good.leaves.get(new.last_leaf)
        if (then is not None and now is not None and now != then and not isinstance(now, dict | list)
                and str(then).startswith(str(now))):
            problems.append(Problem(new.file, new.last_line, dotted(new.last_leaf), (
                f"the file ends without a newline and this reads {now!r} where the last good policy had "
                f"{then!r}: the last line looks cut short; {confirm}")))
    return problems


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, dict | list) and not value)


def _walk(value: Any, path: Path, out: dict[Path, Any]) -> None:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _walk(v, path + (k,), out)
    elif isinstance(value, list) and value:
        for i, v in enumerate(value):
            _walk(v, path + (i,), out)
    elif path:
        out[path] = value


def _line(lines: dict[Path, int], path: Path) -> int:
    while path and path not in lines:
        path = path[:-1]
    return lines.get(path, 0)
