"""``exact-proxy run`` as a real process: starts, serves, and shuts down gracefully on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys

import aiohttp

from tests.fake_upstream import SEEN


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


async def _wait_healthy(url: str, proc, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    async with aiohttp.ClientSession() as s:
        while True:
            assert proc.returncode is None, "proxy exited early"
            try:
                async with s.get(url + "/_proxy/health") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            assert asyncio.get_running_loop().time() < deadline, "proxy did not become healthy"
            await asyncio.sleep(0.05)


async def test_sigterm_drains_in_flight_requests_then_exits_0(upstream, tmp_path):
    port = _free_port()
    base = str(upstream.make_url("")).rstrip("/")
    policy = tmp_path / "policies.yaml"
    policy.write_text(f"upstreams: {{test: {{base_url: '{base}'}}}}\n"
                      f"listeners: [{{name: default, port: {port}, upstream: test}}]\n"
                      f"state: {{path: '{tmp_path / 's.sqlite'}'}}\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "run", "--config", str(policy),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env={**os.environ})
    url = f"http://127.0.0.1:{port}"
    try:
        await _wait_healthy(url, proc)
        async with aiohttp.ClientSession() as s:
            slow = asyncio.create_task(s.get(url + "/slow?s=0.5"))
            await _wait_for_seen(upstream)
            proc.send_signal(signal.SIGTERM)
            resp = await slow
            assert resp.status == 200
            assert (await resp.json()) == {"slow": True}
            resp.release()
        assert await asyncio.wait_for(proc.wait(), 10) == 0
        out = (await proc.stdout.read()).decode()
        assert "listening on http://127.0.0.1:" in out
        assert "shutting down" in out and "stopped" in out
        assert "/slow?s=0.5 status=200" in out
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _wait_for_seen(upstream, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not upstream.app[SEEN]:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)


async def test_run_refuses_a_broken_policy(tmp_path):
    policy = tmp_path / "policies.yaml"
    policy.write_text("listeners:\n  - port: nope\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "run", "--config", str(policy),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 2
    assert f"{policy}:2: listeners[0].port: must be a whole number" in err.decode()
