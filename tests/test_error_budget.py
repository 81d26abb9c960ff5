"""The error budget through the real proxy: a tool's bad requests never get the app blocked.

The upstream here is a small stand-in that keeps Exact's rule (more than 10 errors per app, division
and endpoint in an hour blocks that endpoint for an hour) on the same ManualClock as the proxy.
"""

from __future__ import annotations

import json

import aiohttp
from aiohttp import web

from proxy.clock import ManualClock

STATE = web.AppKey("state", dict)

START = 1_790_000_000.0
GOOD = "11111111-1111-1111-1111-111111111111"
DELETED = "22222222-2222-2222-2222-222222222222"


def exact_like(clock) -> web.Application:
    errors: dict[str, list[float]] = {}
    state = {"calls": 0, "errors": 0, "blocked": 0, "posts": 0}

    def envelope(status: int, text: str) -> web.Response:
        return web.json_response({"error": {"code": "", "message": {"lang": "", "value": text}}}, status=status)

    async def handler(request: web.Request) -> web.StreamResponse:
        state["calls"] += 1
        parts = request.path.split("/")
        endpoint = "/".join(p.split("(")[0] for p in parts[4:]).lower()
        now = clock.time()
        recent = [t for t in errors.get(endpoint, []) if t > now - 3600]
        errors[endpoint] = recent
        if len(recent) > 10:
            state["blocked"] += 1
            return web.Response(status=429)
        if request.method == "POST":
            state["posts"] += 1
            answer = envelope(400, "Mandatory: Name")
        elif "$filter" in request.query and "bogus" in request.query["$filter"]:
            answer = envelope(400, "Error processing $filter: unknown field bogus")
        elif "(guid'" in request.path and GOOD not in request.path:
            answer = envelope(404, "Not found")
        else:
            answer = web.json_response({"d": {"results": []}})
        if answer.status in (400, 401, 403, 404):
            recent.append(now)
            state["errors"] += 1
        return answer

    app = web.Application()
    app[STATE] = state
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


async def setup(aiohttp_server, start_proxy, clock, extra=""):
    up = await aiohttp_server(exact_like(clock))
    proxy = await start_proxy(str(up.make_url("")).rstrip("/"), extra, clock=clock)
    return up.app[STATE], proxy.url("default"), proxy


async def get(s, url, **kw):
    async with s.get(url, headers={"Accept": "application/json"}, **kw) as r:
        return r.status, await r.read(), r.headers


async def test_looping_over_one_deleted_record_costs_one_error(aiohttp_server, start_proxy):
    clock = ManualClock(start=START)
    state, base, _ = await setup(aiohttp_server, start_proxy, clock)
    async with aiohttp.ClientSession() as s:
        answers = []
        for i in range(30):
            # the same request, spelled differently now and then
            path = (f"/api/v1/7/crm/Accounts(guid'{DELETED}')?$select=ID" if i % 2 else
                    f"/API/V1/7/CRM/Accounts(guid%27{DELETED}%27)?%24select=ID")
            answers.append(await get(s, base + path))
            await clock.advance(5)
    assert {a[0] for a in answers} == {404}
    assert json.loads(answers[-1][1])["error"]["message"]["value"] == "Not found"  # Exact's own body
    assert answers[-1][2]["X-Exact-Proxy"] == "negative-cache"
    assert state["errors"] == 1 and state["blocked"] == 0  # the cache lives 300 s: 150 s of looping


async def test_many_missing_records_stop_at_the_reserve_and_others_flow(aiohttp_server, start_proxy):
    clock = ManualClock(start=START)
    state, base, _ = await setup(aiohttp_server, start_proxy, clock)
    async with aiohttp.ClientSession() as s:
        statuses = []
        for i in range(30):
            missing = f"{i:08d}-0000-0000-0000-000000000000"
            status, body, headers = await get(s, f"{base}/api/v1/7/crm/Accounts(guid'{missing}')")
            statuses.append(status)
            ok = await get(s, f"{base}/api/v1/7/logistics/Items?$filter=ID%20ne%20null")
            assert ok[0] == 200  # another endpoint flows throughout
            other_div = await get(s, f"{base}/api/v1/8/crm/Accounts(guid'{GOOD}')")
            assert other_div[0] == 200  # another division too
        assert statuses[:8] == [404] * 8 and set(statuses[8:]) == {429}
        assert state["errors"] == 8 and state["blocked"] == 0
        assert headers["X-ErrorLimit-Limit"] == "8" and headers["X-ErrorLimit-Remaining"] == "0"
        assert int(headers["Retry-After"]) == 3600
        assert int(headers["X-ErrorLimit-Reset"]) == int((START + 3600) * 1000)
        value = json.loads(body)["error"]["message"]["value"]
        assert value.startswith("exact-proxy: error budget spent") and "crm/accounts" in value

        await clock.advance(3601)  # after the hour the endpoint works again
        status, _, headers = await get(s, f"{base}/api/v1/7/crm/Accounts(guid'{GOOD}')")
        assert status == 200 and headers["X-ErrorLimit-Remaining"] == "8"


async def test_invalid_filter_loop_behaves_the_same(aiohttp_server, start_proxy):
    clock = ManualClock(start=START)
    state, base, _ = await setup(aiohttp_server, start_proxy, clock)
    async with aiohttp.ClientSession() as s:
        statuses = [(await get(s, f"{base}/api/v1/7/crm/Contacts?$filter=bogus%20eq%20{i}"))[0] for i in range(30)]
    assert statuses[:8] == [400] * 8 and set(statuses[8:]) == {429}
    assert state["errors"] == 8 and state["blocked"] == 0


async def test_failing_posts_are_counted_never_cached(aiohttp_server, start_proxy):
    clock = ManualClock(start=START)
    state, base, _ = await setup(aiohttp_server, start_proxy, clock)
    async with aiohttp.ClientSession() as s:
        statuses = []
        for _ in range(10):
            async with s.post(f"{base}/api/v1/7/crm/Accounts", json={"Code": "1"}) as r:
                statuses.append(r.status)
                cached = r.headers.get("X-Exact-Proxy")
                assert cached != "negative-cache"
    assert statuses[:8] == [400] * 8 and set(statuses[8:]) == {429}
    assert state["posts"] == 8  # every POST that got an answer from Exact went there; none replayed


async def test_counts_survive_a_restart(aiohttp_server, start_proxy):
    clock = ManualClock(start=START)
    state, base, proxy = await setup(aiohttp_server, start_proxy, clock)
    async with aiohttp.ClientSession() as s:
        for i in range(5):
            await get(s, f"{base}/api/v1/7/crm/Accounts(guid'{i:08d}-0000-0000-0000-000000000000')")
        await proxy.stop()
        proxy2 = await start_proxy(proxy.holder.current.upstreams["test"].base_url, clock=clock)
        status, _, headers = await get(s, f"{proxy2.url('default')}/api/v1/7/crm/Accounts(guid'{GOOD}')")
    assert status == 200 and headers["X-ErrorLimit-Remaining"] == "3"


async def test_exact_block_is_detected_and_honoured(aiohttp_server, start_proxy, log_output):
    clock = ManualClock(start=START)
    # a budget above Exact's limit, so that Exact blocks first (only possible by misconfiguration or
    # by other tools outside the proxy): the proxy must notice and stop forwarding.
    state, base, _ = await setup(aiohttp_server, start_proxy, clock,
                                 "error_budget: {budget: 20, exact_limit: 20, negative_cache: {ttl: 0}}\n")
    async with aiohttp.ClientSession() as s:
        for i in range(12):
            await get(s, f"{base}/api/v1/7/crm/Accounts(guid'{i:08d}-0000-0000-0000-000000000000')")
        assert state["blocked"] == 1
        calls = state["calls"]
        status, body, headers = await get(s, f"{base}/api/v1/7/crm/Accounts(guid'{GOOD}')")
        assert status == 429 and "Exact blocked crm/accounts" in body.decode()
        assert state["calls"] == calls  # not forwarded while blocked
    assert "EXACT BLOCKED" in log_output.getvalue()


async def test_policy_refuses_a_401_refusal_and_a_budget_above_exact(tmp_path):
    from proxy.policy import PolicyError, parse_policy

    try:
        parse_policy("error_budget:\n  refusal_status: 401\n  budget: 11\n", str(tmp_path / "p.yaml"))
    except PolicyError as exc:
        text = str(exc)
    assert "p.yaml:2: error_budget.refusal_status: must not be 401" in text
    assert "p.yaml:3: error_budget.budget: must not exceed exact_limit" in text
