"""Minimal tests of ``proxy.errors`` and ``proxy.policy.hosts``, against their contracts."""

from __future__ import annotations

import json

import pytest

from proxy.errors import exact_error
from proxy.policy import PolicyError, parse_policy
from proxy.policy.hosts import KNOWN_EXACT_HOSTS, Listener, Upstream
from tests.support import make_policy


def test_a_local_error_is_in_exacts_envelope_and_marked_local():
    reply = exact_error(429, "budget spent", {"Retry-After": "5"})
    assert json.loads(reply.body) == {
        "error": {"code": "", "message": {"lang": "", "value": "exact-proxy: budget spent"}}
    }
    assert reply.local and reply.length == len(reply.body) and reply.headers["Retry-After"] == "5"
    assert reply.headers["X-Exact-Proxy"] == "local" and reply.headers["Content-Type"].startswith(
        "application/json"
    )


def test_upstreams_are_scheme_and_host_and_know_a_real_exact_host():
    up = Upstream("be", "https://start.exactonline.be")
    assert (up.host, up.authority, up.is_known_exact_host) == (
        "start.exactonline.be",
        "start.exactonline.be",
        True,
    )
    assert not Upstream("emu", "http://127.0.0.1:9000").is_known_exact_host
    assert "start.exactonline.nl" in KNOWN_EXACT_HOSTS


def test_without_sections_there_is_one_nl_upstream_and_one_listener_on_8080():
    policy = parse_policy("{}", "<t>")
    assert list(policy.upstreams) == ["nl"] and policy.listeners == (Listener(name="default", upstream="nl"),)
    assert (policy.listeners[0].host, policy.listeners[0].port) == ("127.0.0.1", 8080)


@pytest.mark.parametrize(
    "upstreams, listeners, problem",
    [
        ("upstreams:\n  x: {base_url: 'https://start.exactonline.nl/api'}\n", None, "scheme and host only"),
        ("upstreams:\n  x: {base_url: 'ftp://start.exactonline.nl'}\n", None, "must be an http\\(s\\) URL"),
        (None, "listeners:\n  - {name: a, port: 0, upstream: nowhere}\n", "names no configured upstream"),
        (
            None,
            "listeners:\n  - {name: a, port: 0, upstream: exact, host: example.com}\n",
            "must be an IP address",
        ),
        (
            None,
            "listeners:\n  - {name: a, port: 81, upstream: exact}\n  - {name: b, port: 81, upstream: exact}\n",
            "used by two listeners",
        ),
    ],
)
def test_upstream_and_listener_problems_are_named(upstreams, listeners, problem):
    with pytest.raises(PolicyError, match=problem):
        make_policy(upstreams_yaml=upstreams, listeners_yaml=listeners)
