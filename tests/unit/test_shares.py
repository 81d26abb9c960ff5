"""Shares of the day (proxy/limits/shares.py, proxy/limits/share_settings.py) on a ManualClock, without
HTTP: reserves, caps and paces in one division's queue, and the validation of ``limits.shares``."""

from __future__ import annotations

import asyncio

import pytest

from proxy.clock import ManualClock
from proxy.limits.book import Book
from proxy.limits.division import Division, Refusal
from proxy.limits.settings import LimitSettings
from proxy.limits.share_settings import Pace, Share, cap_of, share_index
from proxy.limits.shares import ShareBoard
from proxy.policy import PolicyError, parse_policy
from proxy.policy.matching import Match

DAY0 = 1_795_564_800.0  # 2026-11-25T00:00:00Z
EXCEL = Match(user_agent="*excel*")
ETL = Match(listener="etl")


def settings(*shares: Share, **kw: object) -> LimitSettings:
    return LimitSettings(pace=0, probe=False, shares=shares, **kw)  # type: ignore[arg-type]


def make(s: LimitSettings, start: float = DAY0 + 10 * 3600) -> tuple[ManualClock, Division, Book]:
    clock = ManualClock(start=start)
    book = Book(clock)
    return clock, book.division("app", 7, s), book


async def settle(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def test_the_first_share_that_matches_a_request_is_its_share():
    shares = (Share("interactive", EXCEL, reserve_day=10), Share("etl", ETL, cap_day=5))
    assert share_index(shares, "etl", {"User-Agent": "Microsoft Excel"}) == 0
    assert share_index(shares, "etl", {"User-Agent": "curl"}) == 1
    assert share_index(shares, "default", {"User-Agent": "curl"}) == -1
    assert cap_of(0.6, 5000) == 3000 and cap_of(3000, 5000) == 3000 and cap_of(None, 5000) is None


async def test_a_day_reserve_keeps_the_last_calls_for_its_share():
    s = settings(Share("interactive", EXCEL, reserve_day=10), daily=30, minutely=1000)
    clock, d, book = make(s)
    other = book.share_gate(d, s, -1)
    mine = book.share_gate(d, s, 0)
    assert other is not None and mine is not None
    for _ in range(20):
        assert d.acquire_now((other,))
    assert not d.acquire_now((other,))  # 10 left, all reserved
    got = await d.acquire(0, clock.time() + 60, (other,))
    assert isinstance(got, Refusal) and got.reason == "max_wait"
    assert other.blocked()[0] == "reserve" and other.blocked()[1] == DAY0 + 86400
    for _ in range(10):
        assert d.acquire_now((mine,))
    assert d.blocked_until(clock.time())[0] == "daily"
    await clock.set_time(DAY0 + 86400 + 1)  # a new day: the reserve is held in full again
    assert d.acquire_now((other,)) and book.boards[("app", 7)].day_used == [0]


async def test_the_reserving_share_uses_its_reserve_and_what_else_is_free():
    s = settings(Share("interactive", EXCEL, reserve_day=10), daily=30, minutely=1000)
    _, d, book = make(s)
    mine, other = book.share_gate(d, s, 0), book.share_gate(d, s, -1)
    assert mine is not None and other is not None
    for _ in range(15):
        assert d.acquire_now((mine,))  # 15 of its own: the reserve is used up, the rest is free to all
    for _ in range(15):
        assert d.acquire_now((other,))
    assert not d.acquire_now((other,)) and d.blocked_until(d.clock.time())[0] == "daily"


async def test_a_minute_reserve_holds_others_until_the_next_minute_while_its_share_passes():
    s = settings(Share("interactive", EXCEL, reserve_minute=10))
    clock, d, book = make(s)
    mine, other = book.share_gate(d, s, 0), book.share_gate(d, s, -1)
    assert mine is not None and other is not None
    for _ in range(50):
        assert d.acquire_now((other,))
    waiting = asyncio.ensure_future(d.acquire(0, clock.time() + 120, (other,)))
    await settle()
    assert not waiting.done() and len(d.waiters) == 1
    excel = asyncio.ensure_future(d.acquire(0, clock.time() + 120, (mine,)))  # behind it, yet it goes
    await settle()
    assert excel.done() and excel.result() == 0.0
    await clock.advance(60)
    await settle()
    assert waiting.done() and waiting.result() == pytest.approx(60)


async def test_a_cap_stops_its_share_for_the_day_and_a_fraction_is_of_the_divisions_day():
    s = settings(Share("etl", ETL, cap_day=0.6), daily=10, minutely=1000)
    clock, d, book = make(s)
    etl, other = book.share_gate(d, s, 0), book.share_gate(d, s, -1)
    assert etl is not None and other is None  # no share holds a reserve: unshared calls pass no gate
    for _ in range(6):
        assert d.acquire_now((etl,))
    assert not d.acquire_now((etl,))
    assert etl.blocked() == ("cap", DAY0 + 86400, "etl")
    assert d.acquire_now(())  # other calls go on
    etl.give_back()  # a call that was never sent is given back to its share too
    assert d.acquire_now((etl,))


async def test_a_pace_spreads_the_shares_calls_evenly_over_its_window():
    pace = Pace(calls=7, start=0.0, length=7 * 3600.0)  # 00:00-07:00, one call an hour
    s = settings(Share("etl", ETL, pace=pace))
    clock, d, book = make(s, start=DAY0)
    etl = book.share_gate(d, s, 0)
    assert etl is not None
    times = []
    for _ in range(7):
        got = await asyncio.wait_for(_acquire_advancing(clock, d, (etl,)), 10)
        assert not isinstance(got, Refusal)
        times.append(clock.time() - DAY0)
    assert times == pytest.approx([0, 3600, 7200, 10800, 14400, 18000, 21600], abs=1)
    assert etl.blocked()[:2] == ("pace", DAY0 + 7 * 3600)  # its calls of the window are used
    await clock.set_time(DAY0 + 7 * 3600)
    assert etl.blocked()[0] is None  # outside its window a share is not paced


async def test_a_pace_that_fell_behind_catches_up_evenly_never_in_a_burst():
    pace = Pace(calls=4, start=0.0, length=4 * 3600.0)
    s = settings(Share("etl", ETL, pace=pace))
    clock, d, book = make(s, start=DAY0 + 2 * 3600)  # the job starts halfway through its window
    etl = book.share_gate(d, s, 0)
    assert etl is not None
    assert d.acquire_now((etl,))
    _, until, _ = etl.blocked()
    assert until - clock.time() == pytest.approx(2 * 3600 / 4)  # 3 calls left over 2 h: every 40 min


async def test_a_window_past_midnight_and_a_share_held_keeps_its_place_while_others_pass():
    pace = Pace(calls=2, start=23 * 3600.0, length=2 * 3600.0)  # 23:00-01:00
    s = settings(Share("etl", ETL, pace=pace))
    clock, d, book = make(s, start=DAY0 + 23.5 * 3600)
    etl = book.share_gate(d, s, 0)
    assert etl is not None
    assert d.acquire_now((etl,))
    reason, until, _ = etl.blocked()  # one call left over 1.5 h: spread, it goes after 45 minutes
    assert reason == "pace" and until - DAY0 == pytest.approx(23.5 * 3600 + 2700, abs=0.01)
    held = asyncio.ensure_future(d.acquire(0, clock.time() + 3600, (etl,)))
    await settle()
    assert not held.done()
    assert await d.acquire(0, clock.time() + 10, ()) == 0.0  # an unshared call passes the held one
    await settle()  # the pump sleeps again before the clock moves
    await clock.advance(2700)  # past midnight, in the same window
    await settle()
    assert held.done() and held.result() == pytest.approx(2700)
    assert pace.window(DAY0 + 86400, DAY0 + 86400 + 600) == DAY0 + 23 * 3600


async def test_a_reload_keeps_the_counts_of_shares_of_the_same_name():
    s = settings(Share("etl", ETL, cap_day=3))
    _, d, book = make(s)
    gate = book.share_gate(d, s, 0)
    assert gate is not None
    for _ in range(3):
        assert d.acquire_now((gate,))
    s2 = settings(Share("interactive", EXCEL, reserve_day=5), Share("etl", ETL, cap_day=4))
    gate = book.share_gate(book.division("app", 7, s2), s2, 1)
    assert gate is not None and gate.board.day_used == [0, 3]
    assert d.acquire_now((gate,)) and not d.acquire_now((gate,))


async def test_status_and_metrics_show_each_shares_use_per_division():
    s = settings(Share("interactive", EXCEL, reserve_day=10, reserve_minute=2), Share("etl", ETL, cap_day=3))
    _, d, book = make(s)
    for i in (0, 1, 1):
        gate = book.share_gate(d, s, i)
        assert gate is not None and d.acquire_now((gate,))
    rows = book.snapshot()[0]["shares"]
    assert rows[0] == {"share": "interactive", "today": 1, "minute": 1, "reserve_left": "1/9"}
    assert rows[1] == {"share": "etl", "today": 2, "minute": 2, "cap_day": 3}
    metrics = {(m[2]["share"], m[2]["window"]): m[3] for m in book.metric_rows() if m[0] == "exact_proxy_share_calls"}
    assert metrics == {("interactive", "minute"): 1, ("interactive", "day"): 1, ("etl", "minute"): 2,
                       ("etl", "day"): 2}


def test_no_shares_no_board():
    s = settings()
    _, d, book = make(s)
    assert d.acquire_now(()) and book.snapshot()[0].get("shares") is None and not book.boards
    assert ShareBoard(d, ()).blocked(-1, d.clock.time())[0] is None


async def _acquire_advancing(clock: ManualClock, d: Division, buckets: tuple) -> float | Refusal:
    task = asyncio.ensure_future(d.acquire(0, clock.time() + 86400, buckets))
    await settle()
    while not task.done():
        nxt = clock.next_deadline()
        assert nxt is not None
        await clock.set_monotonic(nxt)
        await settle()
    return task.result()


# -- limits.shares in policies.yaml -------------------------------------------------------------------------
def problems(text: str) -> list[str]:
    with pytest.raises(PolicyError) as exc:
        parse_policy(text, "policies.yaml")
    return [str(p) for p in exc.value.problems]


GOOD = """limits:
  shares:
    - {name: interactive, match: {user_agent: "*Excel*"}, reserve: {day: 1000, minute: 10}}
    - name: replication
      match: {listener: etl}
      cap: {day: 0.8}
      pace: {calls: 3000, from: "00:00", to: "07:00"}
"""


def test_shares_are_read_from_the_limits_section():
    shares = parse_policy(GOOD, "policies.yaml").limits.shares
    assert shares[0] == Share("interactive", Match(user_agent="*Excel*"), 1000, 10)
    assert shares[1] == Share("replication", Match(listener="etl"), cap_day=0.8, pace=Pace(3000, 0.0, 7 * 3600.0))
    assert parse_policy("{}", "p").limits.shares == ()


@pytest.mark.parametrize(("text", "expected"), [
    ("limits:\n  shares:\n    - {name: a, match: {listener: x}, reserve: {day: 3000}}\n"
     "    - {name: b, match: {listener: y}, reserve: {day: 2500}}\n",
     "policies.yaml:2: limits.shares: the reserves add up to 5500 calls a day, more than the day's budget of 5000 "
     "(limits.minutely and limits.daily)"),
    ("limits:\n  shares:\n    - {name: a, match: {listener: x}, reserve: {minute: 61}}\n",
     "policies.yaml:2: limits.shares: the reserves add up to 61 calls a minute, more than the minute's budget of 60 "
     "(limits.minutely and limits.daily)"),
    ("limits:\n  divisions: {123: {daily: 900}}\n  shares:\n    - {name: a, match: {listener: x}, reserve: {day: 1000}}\n",
     "policies.yaml:3: limits.shares: the reserves add up to 1000 calls a day, more than the day's budget of 900 "
     "(division 123)"),
    ("limits:\n  shares:\n    - {name: a, match: {listener: x}, reserve: {day: 1000}, cap: {day: 0.1}}\n",
     "policies.yaml:3: limits.shares[0].cap.day: share 'a': a cap of 500 calls a day (limits.minutely and "
     "limits.daily) is below its reserve of 1000"),
    ("limits:\n  shares:\n    - {name: a, match: {listener: x}, pace: {calls: 10, from: '07:00', to: '07:00'}}\n",
     "policies.yaml:3: limits.shares[0].pace.to: the pace window from 07:00 to 07:00 is empty"),
    ("limits:\n  shares:\n    - {name: a, match: {listener: x}, pace: {calls: 10, from: 10:30, to: '12:00'}}\n",
     "policies.yaml:3: limits.shares[0].pace.from: must be a UTC time in quotes, like \"07:00\" (got 630; YAML "
     "reads an unquoted 10:30 as a number)"),
    ("limits:\n  shares:\n    - {name: a, match: {listener: x}, pace: {calls: 10, from: '7h', to: '12:00'}}\n",
     "policies.yaml:3: limits.shares[0].pace.from: must be a UTC time like \"07:00\" or \"24:00\", got '7h'"),
    ("limits:\n  shares:\n    - {name: a, match: {listener: x}, cap: {day: 100}, pace: {calls: 200, from: '00:00', "
     "to: '07:00'}}\n",
     "policies.yaml:3: limits.shares[0].pace.calls: share 'a': a pace of 200 calls is above its cap of 100 a day "
     "(limits.minutely and limits.daily)"),
    ("limits:\n  shares:\n    - {name: i, match: {listener: y}, reserve: {day: 2000}}\n"
     "    - {name: a, match: {listener: x}, pace: {calls: 4000, from: '00:00', to: '07:00'}}\n",
     "policies.yaml:4: limits.shares[1].pace.calls: share 'a': a pace of 4000 calls does not fit in the day's "
     "budget of 5000 less the other shares' reserves of 2000 (limits.minutely and limits.daily)"),
    ("limits:\n  shares:\n    - {name: a, match: {listener: x}, pace: {calls: 4000, from: '00:00', to: '01:00'}}\n",
     "policies.yaml:3: limits.shares[0].pace.calls: share 'a': 4000 calls in 1 h are 67 a minute, more than the "
     "60 a minute left to it (limits.minutely and limits.daily)"),
    ("limits:\n  shares:\n    - {name: a, match: {listener: x}}\n",
     "policies.yaml:3: limits.shares[0]: share 'a' needs a reserve, a cap or a pace"),
    ("limits:\n  shares:\n    - {name: a, reserve: {day: 1}}\n",
     "policies.yaml:3: limits.shares[0].match: is required: the tools this share is for (listener, user_agent, "
     "header)"),
    ("limits:\n  shares:\n    - {name: a, match: {listener: x}, reserve: {day: 1}, cap: {day: 1.5}}\n",
     "policies.yaml:3: limits.shares[0].cap.day: must be a whole number of calls or a fraction below 1 (like "
     "0.6), got 1.5"),
    ("limits:\n  shares:\n    - {name: a, match: {listener: x}, reserve: {day: 1, hour: 2}}\n",
     "policies.yaml:3: limits.shares[0].reserve.hour: unknown setting (known here: day, minute)"),
])
def test_shares_that_cannot_add_up_are_refused_with_file_line_and_reason(text, expected):
    assert expected in problems(text)
