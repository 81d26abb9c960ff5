"""Hot reload of policies.yaml.

Contract
- ``PolicyHolder.current`` is the policy in force. ``reload()`` reads the file again: a valid file
  replaces the policy and calls every ``on_change(old, new)`` listener; an invalid, empty, truncated or
  deleted file is refused with one ERROR line per problem (file, line, key, reason) and the last good
  policy stays in force.
- ``watch()`` polls the file's *path* (not an open inode) every ``reload_interval`` seconds, comparing
  inode, size and modification time, so a save by rename (what editors do) is noticed as well as an
  in-place write. Polling is used instead of inotify so it works the same on every OS and in Docker
  bind mounts.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

from .policy import Policy, PolicyError, load_policy

log = logging.getLogger("exact_proxy.policy")


def _signature(path: str) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class PolicyHolder:
    def __init__(self, policy: Policy, path: str | None = None) -> None:
        self.current = policy
        self.path = path
        self.listeners: list[Callable[[Policy, Policy], None]] = []
        self._sig = _signature(path) if path else None
        self.reloads = 0
        self.refusals = 0

    def on_change(self, fn: Callable[[Policy, Policy], None]) -> None:
        self.listeners.append(fn)

    def reload(self) -> bool:
        if not self.path:
            return False
        self._sig = _signature(self.path)
        try:
            new = load_policy(self.path)
        except PolicyError as exc:
            self.refusals += 1
            for problem in exc.problems:
                log.error("policy refused, the last good policy stays in force: %s", problem)
            return False
        old, self.current = self.current, new
        self.reloads += 1
        log.info("policy reloaded from %s", self.path)
        for fn in self.listeners:
            try:
                fn(old, new)
            except Exception:  # a listener must not undo a reload
                log.exception("applying the reloaded policy failed in %r", fn)
        return True

    async def watch(self, stop: asyncio.Event | None = None) -> None:
        if not self.path:
            return
        missing_reported = False
        while stop is None or not stop.is_set():
            await asyncio.sleep(self.current.reload_interval)
            sig = _signature(self.path)
            if sig is None:
                if not missing_reported:
                    log.error("policy file %s is gone; the last good policy stays in force", self.path)
                    missing_reported = True
                self._sig = None
                continue
            missing_reported = False
            if sig != self._sig:
                self.reload()
