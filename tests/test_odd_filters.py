"""A list GET whose condition is in a query option without ``$`` (issue 14, item 2).

``crm/Accounts?ID=guid'…'`` is not a filter: Exact ignores query options that are not OData system
options and refuses the GET for its missing ``$filter``. The proxy must never widen it into a list of
every row by adding its neutral ``$filter``. On an endpoint it knows to be mandatory it refuses the GET
itself (400 naming ``$filter`` and the option; nothing reaches Exact, no error spent); on one it does not
know yet, the GET goes to Exact unchanged, and when Exact answers with its mandatory-filter 400 the
endpoint is learned but the GET is not replayed. Through the real proxy in front of the emulator.
"""

from __future__ import annotations

import json

import aiohttp

from proxy.clock import ManualClock

START = 1_790_000_000.0


async def setup(emulator, start_proxy, emu_config=None):
    clock = ManualClock(start=START)
    emu = await emulator(config=emu_config, clock=clock)
    proxy = await start_proxy(emu.base, clock=clock, log_format="json")
    token = emu.state.issue_tokens("test-app")["access_token"]
    return emu, proxy, {"Authorization": f"Bearer {token}", "Accept": "application/json"}


async def get(s, url, headers):
    async with s.get(aiohttp.client.URL(url, encoded=True), headers=headers) as r:
        return r.status, r.headers, await r.read()


def decisions(log_output) -> list[list[str]]:
    return [rec["decision"] for rec in map(json.loads, log_output.getvalue().splitlines())
            if rec.get("event") == "request"]


def message(body: bytes) -> str:
    return json.loads(body)["error"]["message"]["value"]


async def test_an_option_without_dollar_on_a_mandatory_endpoint_is_refused_not_widened(
        emulator, start_proxy, log_output):
    emu, proxy, h = await setup(emulator, start_proxy)
    one = emu.state.account_ids(201)[0]
    queries = {
        f"ID=guid'{one}'": "ID",
        f"id=guid%27{one}%27&$select=ID,Name": "id",
        f"%49D=guid'{one}'": "ID",                       # a percent-encoded name
        "$select=ID&Name=Tulp": "Name",
        "$top=5&foo=1": "foo",                           # any option without $, field or not
        "filter=Name%20eq%20'x'": "filter",              # a forgotten $
    }
    async with aiohttp.ClientSession() as s:
        for query, named in queries.items():
            for path in ("crm/Accounts", "crm/Accounts/$count", "bulk/CRM/Accounts"):
                status, headers, body = await get(s, f"{proxy.url()}/api/v1/201/{path}?{query}", h)
                assert status == 400 and headers.get("X-Exact-Proxy") == "local", (path, query, status, body[:300])
                text = message(body)
                assert "$filter" in text and repr(named) in text, text
    assert emu.state.count() == 0  # nothing reached Exact: no error spent, nothing widened
    refused = [d for d in decisions(log_output) if d]
    assert len(refused) == 18 and all(d[-1].startswith("refused (no $filter; options without $: ") for d in refused)
    assert not any("rewritten" in x for d in refused for x in d)


async def test_system_options_alone_still_get_the_neutral_filter(emulator, start_proxy, log_output):
    emu, proxy, h = await setup(emulator, start_proxy)
    async with aiohttp.ClientSession() as s:
        status, _, body = await get(s, f"{proxy.url()}/api/v1/202/crm/Accounts?$select=ID&%24top=5&$inlinecount=allpages", h)
        assert status == 200 and len(json.loads(body)["d"]["results"]) == 5
        status, _, body = await get(s, f"{proxy.url()}/api/v1/202/crm/Accounts?ID=x&$filter=Name%20eq%20'x'", h)
        assert status == 200  # a $filter is there: the tool's own query goes to Exact as sent
        # a token in the URI (RFC 6750) is no condition: the list still gets the neutral filter
        status, _, body = await get(s, f"{proxy.url()}/api/v1/202/crm/Accounts?$top=2&access_token=x", h)
        assert status == 200 and len(json.loads(body)["d"]["results"]) == 2
    assert emu.state.count(outcome="mandatory_filter") == 0
    assert decisions(log_output)[0][0].startswith("rewritten (+$filter=")


async def test_an_endpoint_not_known_yet_is_learned_but_not_replayed_wider(emulator, start_proxy, log_output):
    # Exact enforces filters on Contacts; the proxy's policy does not list it
    emu, proxy, h = await setup(emulator, start_proxy,
                                emu_config={"mandatory_filter_endpoints": ["crm/accounts", "crm/contacts"]})
    async with aiohttp.ClientSession() as s:
        url = f"{proxy.url()}/api/v1/203/crm/Contacts?ID=guid'00000000-0000-0000-0000-000000000001'"
        status, headers, body = await get(s, url, h)
        assert status == 400 and "X-Exact-Proxy" not in headers  # Exact's own refusal
        assert "mandatory filtering" in message(body)
        assert emu.state.count(outcome="mandatory_filter") == 1 and emu.state.count(outcome="ok") == 0
        assert "learned mandatory filter, not replayed (options without $: 'ID')" in decisions(log_output)[-1]
        # learned: the same GET is now refused locally, and a plain list gets the filter
        status, headers, _ = await get(s, url, h)
        assert status == 400 and headers.get("X-Exact-Proxy") == "local"
        status, _, body = await get(s, f"{proxy.url()}/api/v1/203/crm/Contacts?$select=ID", h)
        assert status == 200 and len(json.loads(body)["d"]["results"]) == 60
    assert emu.state.count(outcome="mandatory_filter") == 1 and emu.state.count(outcome="ok") == 1
