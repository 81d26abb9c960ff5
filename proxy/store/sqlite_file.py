"""The state file on disk: made owner-only, moved aside, and recognised as the one the store has open.

Contract
- ``prepare(path)`` makes the directory (0700) and the file (0600) when they are missing, and tightens a
  file readable by others (with a WARNING). ``tighten_companions(path)`` does the same for ``-wal`` and
  ``-shm``.
- ``move_aside(path, label, only=None)`` renames the file and its companions to
  ``<name>.<label>-<UTC time>[-n]`` (never over an existing name) and returns that name; ``only`` limits
  it to some of the suffixes ``""``, ``"-wal"``, ``"-shm"``.
- ``Identity.of(path)`` records which files (device and inode) the path and its companions name right
  after the store connected. ``lost()`` says in words why the path no longer names them (deleted, moved
  away, replaced), or None; ``foreign()`` lists what to move aside before a new file is made: nothing
  while the path still names our file, else the file there and each companion that is not ours. One ``stat`` per file, so the store can ask at every flush.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import time
from dataclasses import dataclass

log = logging.getLogger("exact_proxy.store")

SUFFIXES = ("", "-wal", "-shm")


def prepare(path: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    if not os.path.exists(path):
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        log.warning("state file %s was readable by others (mode %o); now owner only", path, mode)
        os.chmod(path, 0o600)


def tighten_companions(path: str) -> None:
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(OSError):
            os.chmod(path + suffix, 0o600)


def move_aside(path: str, label: str, only: tuple[str, ...] | None = None) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside, n = f"{path}.{label}-{stamp}", 1
    while any(os.path.lexists(aside + s) for s in SUFFIXES):
        n += 1
        aside = f"{path}.{label}-{stamp}-{n}"
    for suffix in only if only is not None else SUFFIXES:
        with contextlib.suppress(FileNotFoundError):
            os.replace(path + suffix, aside + suffix)
    return aside


def _file_id(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


@dataclass(frozen=True)
class Identity:
    path: str
    files: tuple[tuple[str, tuple[int, int]], ...]  # (suffix, (device, inode)) of the files that existed

    @classmethod
    def of(cls, path: str) -> Identity:
        return cls(path, tuple((s, fid) for s in SUFFIXES if (fid := _file_id(path + s)) is not None))

    def lost(self) -> str | None:
        for suffix, fid in self.files:
            now = _file_id(self.path + suffix)
            name = "it" if not suffix else f"its {suffix} file"
            if now is None:
                return f"{name} was deleted or moved away"
            if now != fid:
                return f"{name} was replaced by another file"
        return None

    def foreign(self) -> tuple[str, ...]:
        """Suffixes to move aside: none while the path names our file (its companions are SQLite's),
        else the file there and each companion that is not ours."""
        mine = dict(self.files)
        main = _file_id(self.path)
        if main is None or main == mine.get(""):
            return ()
        return ("",) + tuple(s for s in SUFFIXES[1:]
                             if (fid := _file_id(self.path + s)) is not None and fid != mine.get(s))
