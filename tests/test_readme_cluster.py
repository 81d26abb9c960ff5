"""The README's "Several proxies" section: its policy snippet is a valid policy, and its compose.yaml
has one persistent Valkey and two proxies with health checks, each given the shared secrets."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from proxy.policy import parse_policy

README = Path(__file__).resolve().parent.parent / "README.md"


def _blocks() -> list[str]:
    text = README.read_text()
    section = text.split("## Several proxies", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```yaml\n(.*?)```", section, re.S)


def test_the_cluster_snippet_is_a_valid_policy():
    policy = parse_policy(_blocks()[0], "README.md")
    assert policy.cluster.enabled and policy.cluster.node == "office-a"


def test_the_compose_example_has_a_persistent_server_and_two_healthy_proxies():
    compose = yaml.safe_load(_blocks()[1])
    services = compose["services"]
    server = " ".join(services["valkey"]["command"])
    assert "--appendonly yes" in server and "--maxmemory-policy noeviction" in server
    assert "healthcheck" in services["valkey"]
    proxies = [s for name, s in services.items() if name.startswith("proxy-")]
    assert len(proxies) == 2
    for p in proxies:
        env = p["environment"]
        assert env["EXACT_PROXY_REDIS_URL"].startswith("redis://valkey:")
        assert "EXACT_PROXY_TOKEN_KEY" in env and "EXACT_PROXY_REDIS_PASSWORD" in env
        assert "/_proxy/health" in " ".join(p["healthcheck"]["test"])
        assert p["depends_on"]["valkey"]["condition"] == "service_healthy"
        assert all(port.startswith("127.0.0.1:") for port in p["ports"])
    assert {p["environment"]["EXACT_PROXY_NODE"] for p in proxies} == {"proxy-a", "proxy-b"}
