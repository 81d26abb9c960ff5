"""Minimal tests of engine parts no other test imports by name: each checks its module's contract.

``proxy.errorbudget`` (negative cache, settings, windows), ``proxy.exact`` (client ids, credentials, odd
targets, rate-limit headers) and ``proxy.limits`` (patience, windows).
"""

from __future__ import annotations

import base64
import email.utils

import pytest

from proxy.clock import ManualClock
from proxy.errorbudget.negative_cache import Cached, NegativeCache, request_key
from proxy.errorbudget.settings import ErrorBudgetSettings
from proxy.errorbudget.window import ErrorWindows, key_text, parse_key
from proxy.exact.client_id import normal_client_id
from proxy.exact.credentials import basic_credentials
from proxy.exact.odd_targets import bad_division, division_number, path_refusal, repeated
from proxy.exact.ratelimit import header_int, retry_after_seconds
from proxy.limits.patience import EVIDENCE, MIN_SECONDS, SHARE, Patience
from proxy.limits.window import Window
from tests.support import make_policy

GUID = "b81cc4de-d192-400e-bcb4-09254394c52a"


# -- proxy.errorbudget ----------------------------------------------------------------------------------
def test_request_key_normalises_encoding_order_and_case_but_keeps_app_and_format():
    a = request_key("get", "/api/v1/101/CRM/Accounts", "%24select=ID&$top=1", "app", "application/json")
    b = request_key(
        "GET", "/api/v1/101/crm/accounts", "$top=1&$select=ID", "app", "application/json; odata=verbose"
    )
    assert a == b
    assert a != request_key(
        "GET", "/api/v1/101/crm/accounts", "$top=1&$select=ID", "other", "application/json"
    )
    assert a != request_key(
        "GET", "/api/v1/101/crm/accounts", "$top=1&$select=ID", "app", "application/atom+xml"
    )


def test_the_negative_cache_keeps_entries_for_their_ttl_and_at_most_max_entries():
    cache, group = NegativeCache(), ("app", 101, "crm/accounts")
    for i in range(3):
        cache.put(("k", i), Cached(404, b"", None, 100.0 + i, group), max_entries=2)
    assert len(cache) == 2 and cache.get(("k", 0), 101, 60) is None  # the oldest went first
    assert cache.get(("k", 2), 161.9, 60).status == 404 and cache.get(("k", 2), 162, 60) is None
    assert cache.forget_group(group) == 1 and not cache.has_group(group)


def test_error_budget_settings_default_to_eight_of_exacts_ten_and_refuse_with_429():
    d = ErrorBudgetSettings()
    assert (d.budget, d.exact_limit, d.window, d.refusal_status) == (8, 10, 3600.0, 429)
    assert make_policy("error_budget: {budget: 5, statuses: [400, 404]}\n").error_budget.statuses == {
        400,
        404,
    }


def test_error_windows_roll_and_turn_into_store_values_and_back():
    w, key = ErrorWindows(60), ("app", None, "oauth2/token")
    w.add(key, 0)
    w.add(key, 30)
    assert w.count(key, 59) == 2 and w.reset_at(key, 59) == 60
    assert w.count(key, 61) == 1 and w.reset_at(key, 61) == 90
    assert w.count(key, 100) == 0 and key not in w  # empty keys are dropped
    assert w.reset_at(key, 100) == 160
    assert parse_key(key_text(key)) == key and parse_key(key_text(("a", 7, "x/y"))) == ("a", 7, "x/y")
    w.restore(key, [10, 50, 70], 100)
    assert w.times(key) == [50, 70]


# -- proxy.exact -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spelling", [GUID, GUID.upper(), "{" + GUID.upper() + "}", f"  {{{GUID}}} "])
def test_every_spelling_of_a_client_id_is_one_app(spelling):
    assert normal_client_id(spelling) == GUID


def test_basic_credentials_are_decoded_and_percent_decoded():
    header = "Basic " + base64.b64encode(b"my%20app:s%3Acret").decode()
    assert basic_credentials(header) == ("my app", "s:cret")
    assert basic_credentials("Bearer x") is None and basic_credentials("Basic !!!") is None
    assert basic_credentials(None) is None


def test_only_plain_digits_name_a_division():
    assert division_number("0555") == 555 and division_number("2147483647") == 2147483647
    for odd in ("+555", " 556", "557 ", "-1", "", "١٢٣", "2147483648", "9" * 5000):
        assert division_number(odd) is None
    assert bad_division("+555", "segment").short == "division segment '+555'"
    assert path_refusal("/api/v1/101/crm/../x").short == "dot segment in path"
    assert path_refusal("/api/v1/101/crm\\x") is not None and path_refusal("/api/v1/101/crm/Accounts") is None
    assert "Topic" in repeated("Topic").message


def test_rate_limit_headers_as_numbers():
    assert header_int(" 58 ") == 58 and header_int("x") is None and header_int(None) is None
    assert retry_after_seconds("7", 0) == 7.0 and retry_after_seconds(None, 0) is None
    when = email.utils.formatdate(1_000_060, usegmt=True)
    assert retry_after_seconds(when, 1_000_000) == 60.0 and retry_after_seconds("soon", 0) is None


# -- proxy.limits ------------------------------------------------------------------------------------------
def test_patience_is_a_share_of_the_shortest_abandoned_wait_once_seen_often_enough():
    p, tool = Patience(), ("default", "legacy/1.0")
    p.observe(tool, MIN_SECONDS / 2)  # a Ctrl-C, not patience
    for i in range(EVIDENCE):
        assert p.limit(tool) is None
        p.observe(tool, 30.0 + i)
    assert p.limit(tool) == pytest.approx(SHARE * 30.0)


def test_a_window_counts_a_minute_and_a_day_and_gives_back_a_call_never_sent():
    clock = ManualClock()
    w = Window("app", 101, make_policy("limits: {minutely: 2, pace: 0, probe: false}\n").limits, clock)
    now = clock.time()
    assert w.blocked_until(now) == (None, now)
    w.reserve()
    w.reserve()
    assert w.blocked_until(now) == ("minute", now + 60)  # the clock starts on a whole minute
    w.release()
    assert w.blocked_until(now)[0] is None and (w.minute_used, w.day_used) == (1, 1)
    assert w.blocked_until(now + 60)[0] is None and w.minute_used == 0 and w.day_used == 1


def test_a_new_window_probes_first_and_learns_exacts_limits_from_the_answer():
    clock = ManualClock()
    w = Window("app", 101, make_policy("limits: {pace: 0}\n").limits, clock)
    now = clock.time()
    w.reserve()
    assert w.blocked_until(now)[0] == "probe"
    w.answered(
        {
            "X-RateLimit-Minutely-Limit": "100",
            "X-RateLimit-Minutely-Remaining": "90",
            "X-RateLimit-Minutely-Reset": str(int((now + 60) * 1000)),
        },
        learn=True,
    )
    assert w.blocked_until(now)[0] is None and w.minute_limit == 100 and w.minute_used == 10
