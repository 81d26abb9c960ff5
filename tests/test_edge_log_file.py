"""The log file is readable by its owner only (0600), like the state file (issue 14): created so, tightened
when found looser (with a warning), and every file a rotation starts is 0600 as well."""

from __future__ import annotations

import glob
import os
import stat

import aiohttp
import pytest


@pytest.fixture
def open_umask():
    old = os.umask(0o022)  # the usual umask: files would be created 0644
    yield
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


async def test_log_file_is_created_owner_only_and_rotations_too(upstream, start_proxy, tmp_path, open_umask):
    log = tmp_path / "proxy.log"
    proxy = await start_proxy(str(upstream.make_url("")).rstrip("/"),
                              f"log: {{file: '{log}', max_bytes: 600, backups: 3}}\n")
    assert _mode(log) == 0o600
    async with aiohttp.ClientSession() as s:
        for _ in range(12):
            async with s.get(proxy.url() + "/api/v1/1/crm/Accounts?$top=1") as r:
                assert r.status == 200
    await proxy.stop()
    files = glob.glob(f"{log}*")
    assert len(files) >= 2, files  # it did rotate
    assert {f: _mode(f) for f in files} == {f: 0o600 for f in files}


async def test_a_looser_log_file_is_tightened_with_a_warning(upstream, start_proxy, tmp_path, log_output,
                                                              open_umask):
    log = tmp_path / "proxy.log"
    log.write_text("old line\n")
    os.chmod(log, 0o644)
    await start_proxy(str(upstream.make_url("")).rstrip("/"), f"log: {{file: '{log}'}}\n")
    assert _mode(log) == 0o600
    assert "readable by others" in log_output.getvalue()
    assert log.read_text().startswith("old line\n")  # appended to, not replaced
