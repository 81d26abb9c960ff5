"""Both rewrites end to end, through the real proxy in front of the emulator."""

from __future__ import annotations

import re

import aiohttp

from proxy.clock import ManualClock

START = 1_790_000_000.0


async def setup(emulator, start_proxy, extra="", emu_config=None):
    clock = ManualClock(start=START)
    emu = await emulator(config=emu_config, clock=clock)
    proxy = await start_proxy(emu.base, extra, clock=clock)
    token = emu.state.issue_tokens("test-app")["access_token"]
    return emu, proxy, {"Authorization": f"Bearer {token}"}


async def test_paging_250_accounts_by_following_next_stays_on_the_proxy(emulator, start_proxy):
    emu, proxy, auth = await setup(emulator, start_proxy)
    base = proxy.url()
    url = base + "/api/v1/101/crm/Accounts?$select=ID,Name"  # unfiltered: the proxy adds the $filter
    ids, pages = [], 0
    async with aiohttp.ClientSession() as s:
        while url:
            assert url.startswith(base + "/"), url  # every page request goes to the proxy
            async with s.get(url, headers={**auth, "Accept": "application/json"}) as r:
                assert r.status == 200
                d = (await r.json())["d"]
            pages += 1
            ids += [row["ID"] for row in d["results"]]
            assert all(row["__metadata"]["uri"].startswith(base + "/api/v1/101/") for row in d["results"])
            url = d.get("__next")
    assert pages == 5 and len(ids) == len(set(ids)) == 250  # every row of the unfiltered list
    assert emu.state.count(outcome="mandatory_filter") == 0
    assert emu.state.count(division=101, endpoint="crm/accounts") == 5  # each page went through the proxy


async def test_atom_paging_stays_on_the_proxy(emulator, start_proxy):
    emu, proxy, auth = await setup(emulator, start_proxy)
    base = proxy.url()
    url = base + "/api/v1/102/crm/Contacts?$select=ID"
    entries, pages = 0, 0
    async with aiohttp.ClientSession() as s:
        while url:
            async with s.get(url, headers=auth) as r:
                assert r.status == 200 and "atom" in r.content_type
                text = await r.text()
            pages += 1
            entries += text.count("<entry>")
            assert emu.base not in text  # xml:base, ids, links: all on the proxy
            nxt = re.search(r'<link rel="next" href="([^"]+)"', text)
            url = nxt.group(1).replace("&amp;", "&") if nxt else None
            assert url is None or url.startswith(base)
    assert entries == 180 and pages == 3


async def test_location_on_post_201_points_at_the_proxy(emulator, start_proxy):
    emu, proxy, auth = await setup(emulator, start_proxy)
    async with aiohttp.ClientSession() as s:
        async with s.post(proxy.url() + "/api/v1/103/crm/Accounts", json={"Name": "Nieuw B.V."},
                          headers={**auth, "Accept": "application/json"}) as r:
            assert r.status == 201
            location = r.headers["Location"]
            body = await r.json()
        assert location.startswith(proxy.url() + "/api/v1/103/crm/Accounts(guid'")
        assert body["d"]["__metadata"]["uri"] == location
        async with s.get(location, headers={**auth, "Accept": "application/json"}) as r:
            assert r.status == 200 and (await r.json())["d"]["Name"] == "Nieuw B.V."


async def test_unknown_mandatory_endpoint_is_learned_after_exactly_one_400(emulator, start_proxy):
    # Exact starts enforcing filters on Contacts; the proxy's policy does not list it yet
    emu, proxy, auth = await setup(emulator, start_proxy, emu_config={
        "mandatory_filter_endpoints": ["crm/accounts", "crm/contacts"]})
    async with aiohttp.ClientSession() as s:
        for _ in range(3):
            async with s.get(proxy.url() + "/api/v1/104/crm/Contacts?$select=ID",
                             headers={**auth, "Accept": "application/json"}) as r:
                assert r.status == 200
                assert len((await r.json())["d"]["results"]) == 60
    assert emu.state.count(outcome="mandatory_filter") == 1  # one error, ever


async def test_a_client_asking_for_gzip_still_gets_links_on_the_proxy(emulator, start_proxy):
    emu, proxy, auth = await setup(emulator, start_proxy)
    async with aiohttp.ClientSession() as s:
        async with s.get(proxy.url() + "/api/v1/105/crm/Contacts?$select=ID",
                         headers={**auth, "Accept": "application/json", "Accept-Encoding": "gzip"}) as r:
            body = await r.json()
    assert body["d"]["__next"].startswith(proxy.url())


async def test_a_client_with_rewriting_off_gets_the_original_links(emulator, start_proxy):
    extra = "links:\n  rules:\n    - match: {user_agent: 'python-exact-online*'}\n      rewrite: false\n"
    emu, proxy, auth = await setup(emulator, start_proxy, extra)
    async with aiohttp.ClientSession() as s:
        async with s.get(proxy.url() + "/api/v1/106/crm/Contacts?$select=ID",
                         headers={**auth, "Accept": "application/json", "User-Agent": "python-exact-online/0.3"}) as r:
            raw = (await r.json())["d"]["__next"]
        async with s.get(proxy.url() + "/api/v1/106/crm/Contacts?$select=ID",
                         headers={**auth, "Accept": "application/json", "User-Agent": "picqer"}) as r:
            rewritten = (await r.json())["d"]["__next"]
    assert raw.startswith(emu.base) and rewritten.startswith(proxy.url())
