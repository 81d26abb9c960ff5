"""The opt-in answer cache (``proxy.filters.cache``, its memory ``proxy.reuse.store`` and its section
``proxy.reuse.settings``): the real proxy in front of the emulator, time on a ManualClock."""

from __future__ import annotations

import aiohttp
import pytest

from proxy.clock import ManualClock
from proxy.filters.cache import Cache
from proxy.policy import PolicyError, parse_policy
from proxy.reuse.buffer import Held
from proxy.reuse.key import AnswerKey
from proxy.reuse.settings import CacheSettings, read_cache
from proxy.reuse.store import AnswerStore

START = 1_790_000_000.0
CACHED = "cache: [{endpoint: current/me, ttl: 300}, {endpoint: crm/accounts, ttl: 60}]\n"


async def setup(emulator, start_proxy, extra=CACHED):
    clock = ManualClock(start=START)
    emu = await emulator(clock=clock)
    proxy = await start_proxy(emu.base, extra, clock=clock)
    token = emu.state.issue_tokens("test-app")["access_token"]
    return clock, emu, proxy, {"Authorization": f"Bearer {token}", "Accept": "application/json"}


async def get(s, url, h):
    async with s.get(url, headers=h) as r:
        return r.status, r.headers, await r.read()


async def test_a_listed_endpoint_is_answered_from_memory_for_its_ttl(emulator, start_proxy, log_output):
    clock, emu, proxy, h = await setup(emulator, start_proxy)
    url = f"{proxy.url()}/api/v1/current/Me"
    async with aiohttp.ClientSession() as s:
        first = await get(s, url, h)
        await clock.advance(12)
        second = await get(s, url, h)
        await clock.advance(300)
        third = await get(s, url, h)
        async with s.get(f"{proxy.url()}/_proxy/status") as r:
            status = await r.json()
        async with s.get(f"{proxy.url()}/metrics") as r:
            metrics = await r.text()
    assert first[0] == second[0] == third[0] == 200 and first[2] == second[2] == third[2]
    assert "Age" not in first[1] and second[1]["Age"] == "12" and "Age" not in third[1]
    assert emu.state.count(endpoint="current/me") == 2
    assert "answered from cache (12 s old)" in log_output.getvalue()
    assert status["cache"][0]["hits"] == 1 and status["cache"][0]["entries"] == 1
    cache = next(f for f in proxy.services.filters if isinstance(f, Cache))
    assert cache.snapshot() == status["cache"]
    assert "exact_proxy_cache_answers 1" in metrics


async def test_per_user_and_only_200s_and_only_listed_endpoints(emulator, start_proxy):
    clock, emu, proxy, h = await setup(emulator, start_proxy)
    other = {**h, "Authorization": "Bearer " + emu.state.issue_tokens("test-app", "user-2")["access_token"]}
    gone = emu.state.deleted_account_id(31)
    async with aiohttp.ClientSession() as s:
        for _ in range(2):
            for headers in (h, other):
                assert (await get(s, f"{proxy.url()}/api/v1/current/Me", headers))[0] == 200
            assert (await get(s, f"{proxy.url()}/api/v1/31/crm/Contacts?$top=1", h))[0] == 200
            assert (await get(s, f"{proxy.url()}/api/v1/31/crm/Accounts(guid'{gone}')", h))[0] == 404
            await clock.advance(1)
    assert emu.state.count(endpoint="current/me") == 2  # one per user
    assert emu.state.count(division=31, endpoint="crm/contacts") == 2  # not listed: never cached
    # the 404 is not kept by the cache (the error budget's negative cache answers the second one)
    assert emu.state.count(division=31, endpoint="crm/accounts") == 1


async def test_a_write_forgets_the_endpoint(emulator, start_proxy, log_output):
    clock, emu, proxy, h = await setup(emulator, start_proxy)
    url = f"{proxy.url()}/api/v1/32/crm/Accounts?$top=1&$select=ID"
    async with aiohttp.ClientSession() as s:
        await get(s, url, h)
        await get(s, f"{proxy.url()}/api/v1/33/crm/Accounts?$top=1&$select=ID", h)
        assert (await get(s, url, h))[1]["Age"] == "0"
        before = emu.state.count(endpoint="crm/accounts")
        async with s.post(f"{proxy.url()}/api/v1/32/crm/Accounts", headers=h, json={"Name": "New"}) as r:
            assert r.status == 201
        after = await get(s, url, h)
        no_cache = await get(s, url, {**h, "Cache-Control": "no-cache"})
    assert "Age" not in after[1] and "Age" not in no_cache[1]
    assert emu.state.count(endpoint="crm/accounts") == before + 3  # the write and both GETs after it
    text = log_output.getvalue()
    assert "cache forgot 2 answers of crm/accounts" in text and "cache bypassed (no-cache)" in text


def test_the_store_keeps_within_its_caps_and_a_raced_answer_is_not_kept():
    store = AnswerStore()

    def key(i):
        return AnswerKey(("nl", "current/me"), f"/t{i}", ("", "", ""), "u", ("l", "h", True, None))

    held = Held(200, "OK", (("Content-Type", "application/json"),), b"x" * 100)
    for i in range(3):
        assert store.put(key(i), held, 0.0, 0, max_entries=2, max_bytes=10_000, max_entry=1000)
    assert list(store.entries) == [key(1), key(2)] and store.evicted == 1
    assert not store.put(key(9), held, 0.0, 0, max_entries=2, max_bytes=10_000, max_entry=50)
    assert store.put(key(3), held, 0.0, 0, max_entries=10, max_bytes=300, max_entry=1000)
    assert len(store.entries) == 2 and store.bytes <= 300
    generation = store.generation(("nl", "current/me"))
    assert store.forget(("nl", "current/me")) == 2
    assert not store.put(key(4), held, 1.0, generation, max_entries=10, max_bytes=10_000, max_entry=1000)
    assert store.get(key(4), 1.0, 60) is None


def test_the_section_is_checked_with_file_and_line():
    assert parse_policy(CACHED, "p.yaml").cache == CacheSettings(ttls={"current/me": 300.0, "crm/accounts": 60.0})
    with pytest.raises(PolicyError) as err:
        parse_policy("cache:\n  endpoints:\n    - {endpoint: /api/v1/1/crm/Accounts, ttl: 3}\n"
                     "    - {endpoint: oauth2/token, ttl: 3}\n    - {endpoint: current/me}\n"
                     "    - {endpoint: current/me, ttl: 0}\n  max_entry: 5 MiB\n  max_bytes: 1 MiB\n"
                     "coalesce: {enabled: 1}\n", "p.yaml")
    text = str(err.value)
    assert "p.yaml:3: cache.endpoints[0].endpoint: '/api/v1/1/crm/accounts': write the endpoint as" in text
    assert "p.yaml:4: cache.endpoints[1].endpoint: token and authorization answers are never cached" in text
    assert "p.yaml:5: cache.endpoints[2].ttl: is required" in text
    assert "p.yaml:6: cache.endpoints[3].ttl: must be greater than 0" in text
    assert "p.yaml:7: cache.max_entry: must not exceed max_bytes" in text
    assert "p.yaml:9: coalesce.enabled: must be true or false" in text
    assert callable(read_cache)
