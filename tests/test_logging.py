"""The access log: one line per request, text or JSON, and never a secret."""

from __future__ import annotations

import base64
import json

import aiohttp

SECRETS = ["AccEssT0ken-aaaa1111", "Gcp7!IAAArefresh-bbbb2222", "c0de-cccc3333", "cl1ent-s3cret-dddd4444"]


async def _traffic(proxy):
    access, refresh, code, secret = SECRETS
    basic = "Basic " + base64.b64encode(f"my-client:{secret}".encode()).decode()
    async with aiohttp.ClientSession() as s:
        async with s.get(proxy.url() + "/api/v1/42/crm/Accounts?$top=1&access_token=" + access,
                         headers={"Authorization": f"Bearer {access}"}) as r:
            await r.read()
        async with s.post(proxy.url() + "/api/oauth2/token",
                          data={"grant_type": "refresh_token", "refresh_token": refresh,
                                "client_id": "my-client", "client_secret": secret},
                          headers={"Authorization": basic}) as r:
            await r.read()
        async with s.get(proxy.url() + f"/api/oauth2/auth?client_id=x&code={code}&refresh_token={refresh}"
                         f"&client_secret={secret}") as r:
            await r.read()


async def test_text_lines_carry_the_fields_and_no_secret(upstream, start_proxy, log_output):
    proxy = await start_proxy(str(upstream.make_url("")).rstrip("/"))
    await _traffic(proxy)
    text = log_output.getvalue()
    for secret in SECRETS:
        assert secret not in text
        assert secret.split("-")[-1] not in text
    lines = [line for line in text.splitlines() if " status=" in line]
    assert len(lines) == 3
    first = lines[0]
    assert " GET /api/v1/42/crm/Accounts?$top=1&access_token=*** status=200 div=42 ep=crm/accounts " in first
    assert " up_ms=" in first and " ms=" in first and " in=0 out=" in first
    assert 'decision="rewritten (+$filter=ID ne guid' in first  # Accounts needs a $filter on Exact


async def test_json_lines_parse_and_hold_no_secret(upstream, start_proxy, log_output):
    proxy = await start_proxy(str(upstream.make_url("")).rstrip("/"), log_format="json")
    await _traffic(proxy)
    text = log_output.getvalue()
    for secret in SECRETS:
        assert secret not in text
    events = [json.loads(line) for line in text.splitlines()]
    requests = [e for e in events if e["event"] == "request"]
    assert len(requests) == 3
    r = requests[0]
    assert {"ts", "method", "path", "query", "status", "division", "endpoint", "kind", "app",
            "upstream_ms", "total_ms", "bytes_in", "bytes_out", "decision", "attempts"} <= set(r)
    assert r["division"] == 42 and r["endpoint"] == "crm/accounts" and r["status"] == 200
    assert requests[1]["kind"] == "token" and requests[1]["app"] == "my-client"
    assert requests[1]["bytes_in"] > 0


async def test_refusals_are_logged_with_their_decision(upstream, start_proxy, log_output):
    proxy = await start_proxy(str(upstream.make_url("")).rstrip("/"))
    async with aiohttp.ClientSession() as s:
        async with s.get("http://evil.example/x", proxy=proxy.url()) as r:
            assert r.status == 403
    assert 'decision="refused (not an Exact host)"' in log_output.getvalue()


async def test_log_file_is_written_and_rotated(upstream, start_proxy, tmp_path):
    log_file = tmp_path / "proxy.log"
    proxy = await start_proxy(str(upstream.make_url("")).rstrip("/"), extra_yaml=f"""
        log: {{file: '{log_file}', max_bytes: 2000, backups: 2}}
    """)
    async with aiohttp.ClientSession() as s:
        for _ in range(40):
            async with s.get(proxy.url() + "/api/v1/1/crm/Accounts") as r:
                await r.read()
    assert log_file.exists()
    assert (tmp_path / "proxy.log.1").exists()
    assert not (tmp_path / "proxy.log.3").exists()
    assert all(len(p.read_bytes()) <= 2400 for p in tmp_path.glob("proxy.log*"))


async def test_request_lines_are_written_once_a_turn_and_other_lines_at_once_in_order(tmp_path):
    import asyncio
    import io
    import logging
    from types import SimpleNamespace

    from proxy.ops.logs import log_access, setup_logging

    out, file = io.StringIO(), tmp_path / "p.log"
    setup_logging(SimpleNamespace(format="text", level="info", file=str(file), max_bytes=0, backups=1),
                  stream=out)
    fields = {"ts": 0.0, "id": 1, "listener": "l", "method": "GET", "path": "/a", "query": "", "status": 200,
              "app": "x", "division": 1, "endpoint": "e", "kind": "rest", "upstream": "u", "attempts": 1,
              "upstream_ms": 1.0, "total_ms": 2.0, "bytes_in": 0, "bytes_out": 1, "decision": []}
    log_access({**fields, "path": "/first"})
    log_access({**fields, "path": "/second"})
    assert out.getvalue() == ""  # queued until the end of this turn
    logging.getLogger("exact_proxy.test").warning("a warning")
    assert out.getvalue().index("/first") < out.getvalue().index("/second") < out.getvalue().index("a warning")
    log_access({**fields, "path": "/third"})
    assert "/third" not in out.getvalue()
    await asyncio.sleep(0)
    lines = out.getvalue().splitlines()
    assert [line.split()[2] for line in lines[:2]] == ["/first", "/second"] and "/third" in lines[3]
    assert file.read_text().splitlines() == lines  # the file got the same lines, flushed


async def test_a_loop_that_stopped_before_writing_does_not_hold_back_later_lines():
    import asyncio
    import io
    from types import SimpleNamespace

    from proxy.ops.logs import _turn, log_access, setup_logging

    out = io.StringIO()
    setup_logging(SimpleNamespace(format="text", level="info", file=None, max_bytes=0, backups=1), stream=out)
    fields = {"ts": 0.0, "id": 1, "listener": "l", "method": "GET", "path": "/old", "query": "", "status": 200,
              "app": "x", "division": 1, "endpoint": "e", "kind": "rest", "upstream": "u", "attempts": 1,
              "upstream_ms": 1.0, "total_ms": 2.0, "bytes_in": 0, "bytes_out": 1, "decision": []}

    def log_then_stop():  # the line's end-of-turn write is scheduled, then the loop stops before it
        log_access(fields)
        other.stop()

    other = asyncio.new_event_loop()
    other.call_soon(log_then_stop)
    await asyncio.get_running_loop().run_in_executor(None, other.run_forever)
    other.close()
    assert _turn.due and "/old" not in out.getvalue()
    log_access({**fields, "path": "/new"})
    await asyncio.sleep(0)
    assert "/old" in out.getvalue() and "/new" in out.getvalue()
