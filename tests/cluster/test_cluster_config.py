"""Turning cluster mode on: the setting is validated like the rest, check-config says whether the
server answers, the node refuses to start without the token key, and health and status show the
cluster (health 503 while the server is unreachable)."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys

import aiohttp
import pytest

from proxy.cluster.settings import ClusterSettings
from proxy.ops.status_cli import render
from proxy.policy import PolicyError, parse_policy
from proxy.tokens.sealing import new_key

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "proxy", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=30)


def test_bad_cluster_settings_are_refused_with_their_line():
    with pytest.raises(PolicyError) as err:
        parse_policy("listeners: []\ncluster:\n  redis_url: http://valkey:6379\n  timeout_ms: 1\n", "p.yaml")
    text = str(err.value)
    assert "p.yaml:3: cluster.redis_url: must be a redis://" in text
    assert "p.yaml:4: cluster.timeout_ms" in text
    with pytest.raises(PolicyError, match="must not hold a password"):
        parse_policy("cluster: {redis_url: 'redis://:s3cret@valkey:6379/0'}\n", "p.yaml")


def test_the_url_and_node_may_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("EXACT_PROXY_NODE", "office-b")
    s = ClusterSettings().with_url("rediss://user@valkey:6380/1")
    assert s.enabled and s.node_name == "office-b" and s.safe_url() == "rediss://user@valkey:6380/1"


def test_check_config_says_whether_the_server_answers(redis_server, tmp_path):
    policy = tmp_path / "p.yaml"
    policy.write_text(f"cluster: {{redis_url: '{redis_server.url}'}}\n")
    ok = _cli("check-config", str(policy), env={"EXACT_PROXY_TOKEN_KEY": new_key()})
    assert ok.returncode == 0 and "reachable (valkey" in ok.stdout + ok.stderr
    no_key = _cli("check-config", str(policy), env={"EXACT_PROXY_TOKEN_KEY": ""})
    assert no_key.returncode == 1 and "EXACT_PROXY_TOKEN_KEY is not set" in no_key.stderr
    redis_server.stop()
    down = _cli("check-config", str(policy), env={"EXACT_PROXY_TOKEN_KEY": new_key()})
    assert down.returncode == 1 and "unreachable" in down.stderr


def test_run_refuses_cluster_mode_without_the_token_key(redis_server, tmp_path):
    policy = tmp_path / "p.yaml"
    policy.write_text(f"listeners: [{{name: d, port: 0}}]\nstate: {{path: '{tmp_path / 's.sqlite'}'}}\n")
    out = _cli("run", "--config", str(policy), "--redis-url", redis_server.url, env={"EXACT_PROXY_TOKEN_KEY": ""})
    assert out.returncode == 1
    assert "cluster mode keeps token chains on a shared server: set EXACT_PROXY_TOKEN_KEY" in out.stdout + out.stderr
    assert "Unclosed" not in out.stderr
    bad = _cli("run", "--config", str(policy), "--redis-url", "http://nope")
    assert bad.returncode == 2 and "must be a redis://" in bad.stderr


async def test_health_and_status_show_the_cluster(redis_server, emulator, start_proxy, monkeypatch):
    monkeypatch.setenv("EXACT_PROXY_TOKEN_KEY", new_key())
    emu = await emulator()
    proxy = await start_proxy(emu.base, f"cluster: {{redis_url: '{redis_server.url}', node: n1}}\n")
    base = proxy.url()
    async with aiohttp.ClientSession() as s:
        async with s.get(base + "/_proxy/health") as r:
            assert r.status == 200 and (await r.json())["cluster"] == {"node": "n1", "reachable": True}
        await proxy.services.cluster._beat_once()
        async with s.get(base + "/_proxy/status") as r:
            status = await r.json()
        assert [n["node"] for n in status["cluster"]["nodes"]] == ["n1"]
        async with s.get(base + "/metrics") as r:
            metrics = await r.text()
        assert 'exact_proxy_cluster_store_up{node="n1"} 1' in metrics
        assert "exact_proxy_cluster_nodes_live 1" in metrics
        out = io.StringIO()
        render(status, out)
        assert "cluster: node n1 on redis://127.0.0.1" in out.getvalue()
        redis_server.stop()
        for _ in range(50):  # the heartbeat notices within its interval
            async with s.get(base + "/_proxy/health") as r:
                if r.status == 503:
                    body = await r.json()
                    break
            await asyncio.sleep(0.1)
        assert r.status == 503 and "unreachable" in body["reason"] and "fail closed" in body["reason"]
        redis_server.start()
        for _ in range(50):
            async with s.get(base + "/_proxy/health") as r:
                if r.status == 200:
                    break
            await asyncio.sleep(0.1)
        assert r.status == 200
