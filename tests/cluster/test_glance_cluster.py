"""The dashboard's JSON in cluster mode: two real proxies on one real valkey-server, in front of the real
emulator: each node's ``/_proxy/glance`` shows the shared windows (the calls of both nodes), both nodes
live, and when the server stops, the banner says so and the node's cluster section reads unreachable."""

from __future__ import annotations

import aiohttp

from tests.cluster.test_shared_windows_e2e import URL, nodes, token_key  # noqa: F401 (a fixture)


async def _glance(session, proxy) -> dict:
    async with session.get(proxy.url() + "/_proxy/glance") as r:
        assert r.status == 200
        return await r.json()


async def test_glance_shows_the_shared_windows_and_the_nodes(emulator, start_proxy, redis_server, tmp_path,
                                                             token_key):  # noqa: F811
    _, _, proxies, headers = await nodes(emulator, start_proxy, redis_server, tmp_path, n=2)
    async with aiohttp.ClientSession() as s:
        for i in range(5):  # 3 calls through node 0, 2 through node 1
            async with s.get(proxies[i % 2].url() + URL.format(div=31), headers=headers) as r:
                assert r.status == 200
        g = await _glance(s, proxies[1])
        assert g["node"] == "n1" and g["banner"] == []
        d = next(x for x in g["divisions"] if x["division"] == 31)
        assert d["minute"]["used"] == 5 and d["day"]["used"] == 5  # both nodes' calls, from the server
        nodes_ = {n["node"]: n for n in g["cluster"]["nodes"]}
        assert set(nodes_) == {"n0", "n1"} and all(n["live"] for n in nodes_.values())
        assert nodes_["n1"]["this"] and not nodes_["n0"]["this"]
        redis_server.stop()
        g = await _glance(s, proxies[0])
        assert g["cluster"]["reachable"] is False
        assert g["banner"][0]["kind"] == "cluster" and "unreachable" in g["banner"][0]["text"]
