"""``exact-proxy status --watch``: the at-a-glance frame from a real proxy's status, and the redraw loop.

The live figures (bars, chains) come from a real proxy in front of the real emulator. The states that
need a person (an endpoint Exact blocked, a chain that needs reauth, the store not writing, the cluster
server unreachable) are made by editing the fetched status JSON dict, in the shape the proxy writes it.
"""

from __future__ import annotations

import asyncio
import copy
import io

import aiohttp

from proxy.ops.status_cli import fetch_live
from proxy.ops.watch import CLEAR, RED, SEPARATOR, YELLOW, bar, frame, watch


async def _live(emulator, start_proxy, calls: int = 3):
    from tests.test_token_broker_e2e import authorize

    emu = await emulator()
    proxy = await start_proxy(emu.base)
    async with aiohttp.ClientSession() as s:
        tok = await authorize(s, proxy.url())
        h = {"Authorization": f"Bearer {tok['access_token']}", "Accept": "application/json"}
        for _ in range(calls):
            async with s.get(proxy.url() + "/api/v1/77/crm/Contacts?$top=1", headers=h) as r:
                assert r.status == 200
    data = await asyncio.to_thread(fetch_live, proxy.url())
    assert data is not None
    return proxy, tok, data


def test_bar_figures_and_colours():
    assert bar(42, 60, 10) == "[#######...] 42/60"
    assert bar(0, 60, 4) == "[....] 0/60"
    assert bar(70, 60, 4) == "[####] 70/60"
    assert bar(50, 60, 4, colour=True).startswith(YELLOW)
    assert bar(60, 60, 4, colour=True).startswith(RED)
    assert "\x1b" not in bar(10, 60, 4, colour=True)


async def test_frame_from_a_live_proxy_shows_bars_and_chains(emulator, start_proxy):
    _, tok, data = await _live(emulator, start_proxy)
    text = frame(data, 140)
    assert "nothing needs a person now" in text
    line = next(x for x in text.splitlines() if x.strip().startswith("test-app 77"))
    assert "] 3/60" in line and "] 3/5000" in line and "q 0" in line
    assert "m [##" + "." * 28 + "] 3/60" in line  # 140 columns: 30 cells, 3 of 60 is 2 of them
    chain = data["token_chains"][0]
    assert f"test-app  {chain['user']}  ok  " in text
    assert tok["access_token"] not in text and tok["refresh_token"] not in text
    assert "\x1b" not in text


async def test_frame_banner_when_a_person_is_needed(emulator, start_proxy):
    _, _, live = await _live(emulator, start_proxy, calls=1)
    data = copy.deepcopy(live)  # the proxy's own status, with the states that need a person edited in
    data["token_chains"][0].update(needs_reauth=True, needs_reauth_why="refresh token rejected")
    data["error_budget"] = [{"app": "test-app", "division": 77, "endpoint": "crm/Contacts",
                             "errors_this_hour": 9, "budget": 10, "resets_at": "2030-01-01T00:00:00Z",
                             "exact_blocked_until": None},
                            {"app": "test-app", "division": 77, "endpoint": "crm/Accounts",
                             "errors_this_hour": 1, "budget": 10, "resets_at": None,
                             "exact_blocked_until": "2030-01-01T01:00:00Z"},
                            {"app": "test-app", "division": 77, "endpoint": "logistics/Items",
                             "errors_this_hour": 2, "budget": 10, "resets_at": None,
                             "exact_blocked_until": None}]
    data["state"]["healthy"] = False
    data["cluster"] = {"node": "n1", "server": "redis://10.0.0.5:6379", "reachable": False,
                       "reason": "connection refused"}
    text = frame(data, 200)
    banner = text.split("call budget")[0]
    assert "NEEDS A PERSON NOW" in banner and "nothing needs" not in banner
    assert "Exact blocked crm/Accounts for test-app division 77 until 2030-01-01T01:00:00Z" in banner
    assert f"chain {data['token_chains'][0]['chain']} (test-app" in banner and "refresh token rejected" in banner
    assert "state store not writing" in banner and "cluster server redis://10.0.0.5:6379 unreachable" in banner
    errors = text.split("error budget near the limit")[1].split("token chains")[0]
    assert "crm/Contacts: 9/10" in errors and "crm/Accounts" in errors and "logistics/Items" not in errors
    assert "NEEDS RE-AUTHORIZATION" in text.split("token chains (")[1]
    coloured = frame(data, 200, colour=True)
    assert RED in coloured and YELLOW in coloured


async def test_watch_writes_two_frames_from_the_live_proxy(emulator, start_proxy):
    proxy, _, _ = await _live(emulator, start_proxy, calls=2)
    out = io.StringIO()
    code = await asyncio.to_thread(watch, proxy.holder.current, proxy.url(), 0.1, out, 2)
    assert code == 0
    text = out.getvalue()
    assert text.count("exact-proxy status --watch") == 2 and text.count(SEPARATOR + "\n") == 1
    assert text.count("] 2/60") == 2 and CLEAR not in text


def test_watch_on_an_unreachable_proxy_says_so_and_does_not_raise(tmp_path):
    from proxy.policy import parse_policy

    policy = parse_policy(f"listeners: [{{name: a, port: 1}}]\nstate: {{path: '{tmp_path}/none.sqlite'}}\n",
                          str(tmp_path / "p.yaml"))
    out = io.StringIO()
    assert watch(policy, "http://127.0.0.1:9", 0.05, out, 2) == 0
    assert out.getvalue().count("cannot reach the proxy at http://127.0.0.1:9; retrying") == 2


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_watch_on_a_tty_clears_the_screen_and_ctrl_c_exits_0(tmp_path, monkeypatch):
    from proxy.ops import watch as watch_mod
    from proxy.policy import parse_policy

    policy = parse_policy(f"listeners: [{{name: a, port: 1}}]\nstate: {{path: '{tmp_path}/none.sqlite'}}\n",
                          str(tmp_path / "p.yaml"))

    def interrupt(_seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(watch_mod.time, "sleep", interrupt)
    out = _Tty()
    assert watch(policy, "http://127.0.0.1:9", 1.0, out) == 0
    assert out.getvalue().startswith(CLEAR) and "cannot reach" in out.getvalue()


def test_the_status_command_takes_watch_and_interval():
    from proxy.cli import build_parser

    args = build_parser().parse_args(["status", "--watch", "--interval", "0.5"])
    assert args.watch and args.interval == 0.5
    assert build_parser().parse_args(["status"]).interval == 2.0
