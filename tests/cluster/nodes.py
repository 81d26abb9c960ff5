"""Several real ``exact-proxy run`` processes on one real valkey-server, in front of the emulator.

``Nodes(tmp_path, redis_url, upstream_base, clock, count=3, extra_yaml="")``: each node gets its own
port, policy file, state file and log file, the same ``cluster.redis_url`` and its own ``node`` name.
``clock`` is a wall-anchored ``ScaledClock``; the nodes get it through ``EXACT_PROXY_CLOCK`` so that
they and the in-process emulator agree on every (sped-up) minute. ``await start()`` starts them all and
waits until each is healthy; ``kill(i)`` is ``kill -9``; ``await stop()`` ends them all (SIGTERM).
``url(i)``, ``next_url()`` (round robin, as a balancer would), ``log(i)`` (the node's log text).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import sys
from pathlib import Path

import aiohttp

from proxy.clock import ScaledClock
from proxy.tokens.sealing import new_key
from tests.support.valkey import free_port

ROOT = Path(__file__).resolve().parents[2]
TOKEN_KEY = new_key()


class Nodes:
    def __init__(self, tmp_path: Path, redis_url: str, upstream_base: str, clock: ScaledClock, count: int = 3,
                 extra_yaml: str = "") -> None:
        self.dir, self.redis_url, self.base, self.clock = tmp_path, redis_url, upstream_base, clock
        self.count, self.extra = count, extra_yaml
        self.ports = [free_port() for _ in range(count)]
        self.procs: list[asyncio.subprocess.Process | None] = [None] * count
        self._rr = itertools.cycle(range(count))

    def url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.ports[i]}"

    def next_url(self) -> str:
        return self.url(next(self._rr))

    def log(self, i: int) -> str:
        path = self.dir / f"node{i}.log"
        return path.read_text() if path.exists() else ""

    def _policy(self, i: int) -> Path:
        path = self.dir / f"node{i}.yaml"
        path.write_text(
            f"upstreams: {{emu: {{base_url: '{self.base}'}}}}\n"
            f"listeners: [{{name: default, port: {self.ports[i]}, upstream: emu}}]\n"
            f"state: {{path: '{self.dir / f'node{i}.sqlite'}', flush_interval: 0.1}}\n"
            f"log: {{file: '{self.dir / f'node{i}.log'}', format: json}}\n"
            f"cluster: {{redis_url: '{self.redis_url}', node: node{i}}}\n" + self.extra)
        return path

    async def start_one(self, i: int) -> None:
        env = {**os.environ, "EXACT_PROXY_CLOCK": self.clock.text(), "EXACT_PROXY_TOKEN_KEY": TOKEN_KEY}
        env.pop("EXACT_PROXY_REDIS_URL", None)
        self.procs[i] = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "proxy", "run", "--config", str(self._policy(i)), cwd=str(ROOT), env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        await self.wait_healthy(i)

    async def start(self) -> Nodes:
        await asyncio.gather(*(self.start_one(i) for i in range(self.count)))
        return self

    async def wait_healthy(self, i: int, timeout: float = 20.0, status: int = 200) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with aiohttp.ClientSession() as s:
            while True:
                proc = self.procs[i]
                assert proc is not None and proc.returncode is None, f"node{i} exited: {self.log(i)[-2000:]}"
                try:
                    async with s.get(self.url(i) + "/_proxy/health") as r:
                        if r.status == status:
                            return
                except aiohttp.ClientError:
                    pass
                assert loop.time() < deadline, f"node{i} not healthy ({status}) in {timeout} s"
                await asyncio.sleep(0.05)

    def kill(self, i: int) -> None:
        proc = self.procs[i]
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGKILL)

    async def stop(self) -> None:
        for proc in self.procs:
            if proc is not None and proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            if proc is not None:
                try:
                    await asyncio.wait_for(proc.wait(), 15)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()

    def live(self) -> list[int]:
        return [i for i, p in enumerate(self.procs) if p is not None and p.returncode is None]
