"""Odd spellings of a division, through the real proxy in front of the emulator (issue 14, item 1).

Exact, like .NET's ``int.Parse``, reads ``+555``, `` 556`` and ``557 `` as divisions (so does the
emulator). The proxy forwards a division call only when its division segment (or ``_Division_``) is
plain ASCII digits, and budgets it as that number (leading zeros included: ``0558`` is 558 for every
parser). Any other spelling, an empty division segment, and a path with dot segments or backslashes
(which Exact's web server folds into another path) get a local 400 naming the cause; nothing reaches
the emulator, and no error is spent.
"""

from __future__ import annotations

import asyncio
import json

import aiohttp

from proxy.clock import ManualClock

START = 1_790_000_000.0


async def setup(emulator, start_proxy):
    clock = ManualClock(start=START)
    emu = await emulator(clock=clock)
    proxy = await start_proxy(emu.base, clock=clock, log_format="json")
    token = emu.state.issue_tokens("test-app")["access_token"]
    return emu, proxy, token


async def raw_get(proxy, target: str, token: str) -> tuple[int, dict, bytes]:
    """Send ``target`` byte for byte (an HTTP client library would re-quote it)."""
    host, port = proxy.bound["default"]
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
                 "Accept: application/json\r\nConnection: close\r\n\r\n".encode("latin-1"))
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


async def budget_rows(proxy) -> dict[int, str]:
    async with aiohttp.ClientSession() as s, s.get(proxy.url() + "/_proxy/status") as r:
        status = await r.json()
    return {row["division"]: row["today"] for row in status["call_budget"]}


def sent_by_division(log_output) -> dict[int | None, int]:
    """Calls the proxy sent to Exact, per division it classified them under (from its JSON log)."""
    sent: dict[int | None, int] = {}
    for line in log_output.getvalue().splitlines():
        rec = json.loads(line)
        if rec.get("event") == "request" and rec["attempts"]:
            sent[rec["division"]] = sent.get(rec["division"], 0) + rec["attempts"]
    return sent


def decisions(log_output) -> list[str]:
    return [d for line in log_output.getvalue().splitlines() for d in json.loads(line).get("decision") or ()]


def message(body: bytes) -> str:
    return json.loads(body)["error"]["message"]["value"]


ODD_DIVISIONS = {
    # division segment as sent -> what the refusal names (decoded)
    "+555": "'+555'",
    "%2B555": "'+555'",
    "%20556": "' 556'",
    "557%20": "'557 '",
    "557%09": "'557\\t'",
    "566%0A": "'566\\n'",
    "-567": "'-567'",
    "5_59": "'5_59'",
    "%D9%A5%D9%A5%D9%A5": "'٥٥٥'",          # Arabic-Indic digits: Python's int() reads them
    "%EF%BC%95%EF%BC%95%EF%BC%95": "'５５５'",  # full-width digits
    "555.0": "'555.0'",
    "555;x": "'555;x'",
    "2147483648": "'2147483648'",           # beyond Int32: no such division
    "9" * 5000: "'99999",                  # beyond what int() converts
    "current%20": "'current '",
}


async def test_odd_division_spellings_are_refused_naming_the_segment(emulator, start_proxy, log_output):
    emu, proxy, token = await setup(emulator, start_proxy)
    for segment, named in ODD_DIVISIONS.items():
        status, headers, body = await raw_get(proxy, f"/api/v1/{segment}/crm/Contacts?$top=1", token)
        assert status == 400, (segment, status, body[:200])
        assert headers.get("X-Exact-Proxy") == "local", segment
        text = message(body)
        assert text.startswith("exact-proxy: ") and "division segment" in text and named in text, (segment, text)
        assert "plain digits" in text, text
    assert emu.state.count() == 0, emu.state.stats()
    assert await budget_rows(proxy) == {}
    assert sum(d.startswith("refused (division segment") for d in decisions(log_output)) == len(ODD_DIVISIONS)


async def test_an_empty_division_segment_is_refused(emulator, start_proxy):
    emu, proxy, token = await setup(emulator, start_proxy)
    status, _, body = await raw_get(proxy, "/api/v1//563/crm/Contacts?$top=1", token)
    assert status == 400 and "division segment is empty" in message(body)
    assert emu.state.count() == 0


async def test_plain_digits_are_budgeted_as_that_division_leading_zeros_too(emulator, start_proxy, log_output):
    emu, proxy, token = await setup(emulator, start_proxy)
    for segment in ("558", "0558", "000000000000000558", "%35%35%38"):
        status, _, body = await raw_get(proxy, f"/api/v1/{segment}/crm/Contacts?$top=1", token)
        assert status == 200, (segment, body[:200])
    assert emu.state.count(division=558, outcome="ok") == 4
    assert await budget_rows(proxy) == {558: "4/5000"}
    assert sent_by_division(log_output) == {558: 4}


async def test_dot_segments_and_backslashes_are_refused(emulator, start_proxy):
    """Exact's web server resolves ``..`` and reads ``\\`` as ``/``: such a path could reach a division
    other than the one it starts with, or one the proxy never saw."""
    emu, proxy, token = await setup(emulator, start_proxy)
    targets = ["/api/v1/555/../560/crm/Contacts", "/api/v1/555/crm/Contacts/../../560/crm/Contacts",
               "/api/v1/x/%2e%2E/561/crm/Contacts", "/api/v1/555/./crm/Contacts", "/x/../api/v1/562/crm/Contacts",
               "/api/v1/555%2F..%2F563/crm/Contacts", "/api/v1/564/crm%5CContacts",
               "/docs/x/../XMLDownload.aspx?Topic=Items&_Division_=565"]
    for target in targets:
        status, headers, body = await raw_get(proxy, target, token)
        assert status == 400, (target, status, body[:200])
        text = message(body)
        assert "dot segment" in text or "backslash" in text, (target, text)
    assert emu.state.count() == 0
    assert await budget_rows(proxy) == {}


async def test_xml_division_spellings(emulator, start_proxy, log_output):
    emu, proxy, token = await setup(emulator, start_proxy)
    base = "/docs/XMLDownload.aspx?Topic=Items&_Division_="
    odd = {"+572": "' 572'", "%2B572": "'+572'", "572%20": "'572 '", "-572": "'-572'", "": "''",
           "572&_Division_=573": "more than once", "572&_division_=572": "more than once"}
    for value, named in odd.items():
        status, headers, body = await raw_get(proxy, base + value, token)
        assert status == 400 and headers.get("X-Exact-Proxy") == "local", (value, status, body[:200])
        text = message(body)
        assert "_Division_" in text and named in text, (value, text)
    status, _, body = await raw_get(proxy, "/docs/XMLDownload.aspx?Topic=Items&Topic=Accounts&_Division_=572",
                                    token)
    assert status == 400 and "Topic" in message(body) and "more than once" in message(body)
    assert emu.state.count() == 0
    for value in ("574", "0574", "%35%37%34"):
        status, _, body = await raw_get(proxy, base + value, token)
        assert status == 200, (value, body[:200])
    assert emu.state.count(division=574, endpoint="xml/download/items") == 3
    assert await budget_rows(proxy) == {574: "3/5000"}


async def test_every_call_the_emulator_counts_against_a_division_was_budgeted(emulator, start_proxy, log_output):
    """The invariant behind item 1, over a mix of spellings: per division, the emulator never counts more
    calls than the proxy reserved."""
    emu, proxy, token = await setup(emulator, start_proxy)
    targets = [f"/api/v1/{seg}/crm/Contacts?$top=1" for seg in (*ODD_DIVISIONS, "580", "0580", "%35%38%30")]
    targets += ["/api/v1/581/../582/crm/Contacts", "/docs/XMLDownload.aspx?Topic=Items&_Division_=+583",
                "/docs/XMLDownload.aspx?Topic=Items&_Division_=584", "/api/v1/585/crm/Contacts/$count"]
    for target in targets:
        await raw_get(proxy, target, token)
    sent = sent_by_division(log_output)
    seen = {d for (_app, d, _ep, _outcome) in emu.state.counter.counts if d is not None}
    assert seen == {580, 584, 585}
    for division in seen:
        assert emu.state.count(division=division) <= sent.get(division, 0), division
    assert None not in sent
