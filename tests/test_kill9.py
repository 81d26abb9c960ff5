"""``kill -9`` of a real proxy process: the state file opens cleanly and no budget is granted twice."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys

import aiohttp

from tests.test_cli_run import _free_port, _wait_healthy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


async def _start(policy: str):
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "proxy", "run", "--config", policy,
                                                cwd=ROOT, stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.DEVNULL)
    return proc


async def test_kill_9_keeps_the_counters(emulator, tmp_path):
    emu = await emulator()
    token = emu.state.issue_tokens("test-app")["access_token"]
    port = _free_port()
    policy = tmp_path / "policies.yaml"
    policy.write_text(f"upstreams: {{emu: {{base_url: '{emu.base}'}}}}\n"
                      f"listeners: [{{name: default, port: {port}, upstream: emu}}]\n"
                      "state: {path: state.sqlite, flush_interval: 0.1}\nlog: {file: proxy.log}\n")
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    proc = await _start(str(policy))
    try:
        await _wait_healthy(url, proc)
        async with aiohttp.ClientSession() as s:
            for _ in range(25):  # heavy writes to the state: every call moves the window
                async with s.get(url + "/api/v1/55/crm/Contacts?$top=1", headers=headers) as r:
                    assert r.status == 200
        await asyncio.sleep(0.5)  # a few flush intervals
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

    db = sqlite3.connect(tmp_path / "state.sqlite")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
    assert oct(os.stat(tmp_path / "state.sqlite").st_mode & 0o777) == "0o600"

    proc = await _start(str(policy))
    try:
        await _wait_healthy(url, proc)
        async with aiohttp.ClientSession() as s, s.get(url + "/_proxy/status") as r:
            status = await r.json()
    finally:
        proc.send_signal(signal.SIGTERM)
        await proc.wait()
    row = next(r for r in status["call_budget"] if r["division"] == 55)
    used_today = int(row["today"].split("/")[0])
    assert used_today >= 25  # never less than what was really spent: no second budget today
    assert emu.state.count(division=55) == 25
