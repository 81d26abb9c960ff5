"""What a benchmark reads about a server process from Linux's /proc: CPU time and resident memory.

``cpu_seconds(pid)`` is user + system time so far (0.0 where /proc is not there); ``rss_mb(pid)`` the
resident set in MB (NaN where it cannot be read). Benchmarks import it as a sibling module (they run as
``python bench/NAME.py``, so ``bench/`` is on the path).
"""

from __future__ import annotations

import os


def cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")
