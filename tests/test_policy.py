"""policies.yaml validation: every problem named with file, line, key and reason."""

from __future__ import annotations

import pytest

from proxy.cli import main
from proxy.policy import Policy, PolicyError, load_policy, parse_policy


def problems(text: str) -> list[str]:
    with pytest.raises(PolicyError) as exc:
        parse_policy(text, "policies.yaml")
    return [str(p) for p in exc.value.problems]


def test_repo_default_policy_is_valid_and_matches_defaults():
    policy = load_policy("policies.yaml")
    defaults = Policy.defaults()
    assert policy.listeners[0].host == "127.0.0.1" and policy.listeners[0].port == 8080
    assert policy.upstreams["nl"].base_url == "https://start.exactonline.nl"
    assert policy.forwarding == defaults.forwarding
    assert policy.log == defaults.log
    assert policy.mandatory_filters == defaults.mandatory_filters
    assert policy.links == defaults.links


@pytest.mark.parametrize(("text", "expected"), [
    ("listeners:\n  - port: eighty\n", "policies.yaml:2: listeners[0].port: must be a whole number, got 'eighty'"),
    ("listeners:\n  - port: 70000\n", "policies.yaml:2: listeners[0].port: must be at most 65535, got 70000"),
    ("forwarding:\n  conect_timeout: 3\n",
     "policies.yaml:2: forwarding.conect_timeout: unknown setting; did you mean 'connect_timeout'?"),
    ("forwarding:\n  total_timeout: -1\n", "policies.yaml:2: forwarding.total_timeout: must be greater than 0"),
    ("upstreams:\n  nl: {base_url: ftp://x}\n", "policies.yaml:2: upstreams.nl.base_url: must be an http(s) URL"),
    ("upstreams:\n  nl: {base_url: 'https://x/api'}\n", "upstreams.nl.base_url: must be scheme and host only"),
    ("listeners:\n  - {upstream: be}\n", "policies.yaml:2: listeners[0].upstream: names no configured upstream"),
    ("log:\n  format: xml\n", "policies.yaml:2: log.format: must be one of text, json, got 'xml'"),
    ("forwarding:\n  max_request_body: lots\n", "policies.yaml:2: forwarding.max_request_body: must be a size"),
    ("log: {level: info}\nlog: {level: debug}\n", "policies.yaml:2: log: duplicate key"),
    ("listeners: [\n", "policies.yaml:2: not valid YAML"),
    ("listeners:\n  - {host: example.com}\n", "policies.yaml:2: listeners[0].host: must be an IP address"),
    ("listeners:\n  - {port: 1}\n  - {port: 1}\n", "policies.yaml:3: listeners[1]"),
    ("- a\n- b\n", "policies.yaml:1: must be a mapping of settings"),
    ("", "policies.yaml:1: the file is empty"),
    ("   \n\n", "policies.yaml:1: the file is empty"),
])
def test_problems_name_file_line_key_and_reason(text, expected):
    found = problems(text)
    assert any(p.startswith(expected) or expected in p for p in found), found


def test_every_problem_is_reported_at_once():
    found = problems("listeners:\n  - port: x\nforwarding:\n  pool_size: 0\nbogus: 1\n")
    assert len(found) == 3


def test_sizes_and_relative_paths(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("forwarding: {max_request_body: 2 MiB}\nstate: {path: s.sqlite}\nlog: {file: x.log}\n")
    policy = load_policy(str(path))
    assert policy.forwarding.max_request_body == 2 * 1024 * 1024
    assert policy.state.path == str(tmp_path / "s.sqlite")
    assert policy.log.file == str(tmp_path / "x.log")


def test_check_config_command(tmp_path, capsys):
    good = tmp_path / "good.yaml"
    good.write_text("{}\n")
    assert main(["check-config", str(good)]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("forwarding:\n  pool_size: many\n")
    assert main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:2: forwarding.pool_size: must be a whole number" in err
    assert main(["check-config", str(tmp_path / "missing.yaml")]) == 2
    assert "file not found" in capsys.readouterr().err
