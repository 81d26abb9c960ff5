"""A policies.yaml cut short is not a new policy: the reload is refused and the last good policy stays.

A file truncated at a line boundary (an editor writing in place, a half-finished copy) used to be taken,
and the sections it lost silently became defaults (``daily`` back to 5000). The running proxy watches a
real file (``reload_interval: 0.05``); the holder tests below drive ``poll()`` on a real file directly.
"""

from __future__ import annotations

import asyncio

from proxy.policy import load_policy
from proxy.policy.watch import PolicyHolder
from tests.fake_upstream import SEEN

LIMITS = "limits:\n  daily: 4000\n  max_wait: 30\n"
TAIL = "error_budget:\n  budget: 6\n" + LIMITS


async def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def started(upstream, start_proxy, tmp_path):
    proxy = await start_proxy(str(upstream.make_url("")).rstrip("/"), "reload_interval: 0.05\n" + TAIL)
    path = tmp_path / "policies.yaml"
    assert proxy.holder.current.limits.daily == 4000
    return proxy, path, path.read_text()


async def test_a_file_cut_at_a_line_boundary_is_refused(upstream, start_proxy, log_output, tmp_path):
    proxy, path, full = await started(upstream, start_proxy, tmp_path)
    holder = proxy.holder
    cut = full[:full.index("error_budget:")]  # an in-place write stopped before the last two sections
    path.write_text(cut)
    await wait_for(lambda: holder.refusals >= 1)
    lines = len(cut.splitlines())
    log = log_output.getvalue()
    for section in ("error_budget", "limits"):
        assert (f"policies.yaml:{lines}: {section}: missing here but set in the last good policy: is the file "
                f"cut short (the file ends at line {lines})? To reset it to the defaults on purpose, write "
                f"'{section}: {{}}'") in log
    assert "the last good policy stays in force" in log
    assert holder.current.limits.daily == 4000 and holder.current.error_budget.budget == 6
    assert holder.reloads == 0

    path.write_text(cut + "error_budget: {}\nlimits: {}\n")  # the reset, on purpose
    await wait_for(lambda: holder.reloads >= 1)
    assert holder.current.limits.daily == 5000 and holder.current.error_budget.budget == 8

    path.write_text(cut)  # sections that set nothing may go without notice
    await wait_for(lambda: holder.reloads >= 2)
    assert holder.refusals == 1


async def test_a_last_line_cut_mid_way_is_refused_until_the_file_ends_with_a_newline(upstream, start_proxy,
                                                                                       log_output, tmp_path):
    proxy, path, full = await started(upstream, start_proxy, tmp_path)
    holder = proxy.holder
    lines = len(full.splitlines())

    path.write_text(full[:-len("0\n")])  # "  max_wait: 3": the last value cut mid-way
    await wait_for(lambda: holder.refusals >= 1)
    assert (f"policies.yaml:{lines}: limits.max_wait: the file ends without a newline and this reads 3 where "
            "the last good policy had 30: the last line looks cut short; finish the line, or end the file with "
            "a newline to confirm the edit") in log_output.getvalue()

    path.write_text(full[:-len(" 30\n")])  # "  max_wait:": the value gone
    await wait_for(lambda: holder.refusals >= 2)
    assert (f"policies.yaml:{lines}: limits: the file ends without a newline and this section lacks "
            "limits.max_wait, set in the last good policy") in log_output.getvalue()

    path.write_text(full[:-len("\n  max_wait: 30\n")])  # a whole line and the newline before it
    await wait_for(lambda: holder.refusals >= 3)
    assert f"policies.yaml:{lines - 1}: limits: the file ends without a newline" in log_output.getvalue()
    assert holder.current.limits.max_wait == 30 and holder.reloads == 0

    path.write_text(full[:-len("0\n")] + "\n")  # the same edit, confirmed by the newline at the end
    await wait_for(lambda: holder.reloads >= 1)
    assert holder.current.limits.max_wait == 3 and holder.refusals == 3

    path.write_text(full[:-len("  max_wait: 30\n")] + "  max_wait: 45")  # an edit, not a cut: taken
    await wait_for(lambda: holder.reloads >= 2)
    assert holder.current.limits.max_wait == 45 and holder.refusals == 3


async def test_the_proxy_keeps_serving_under_the_last_good_policy(upstream, start_proxy, tmp_path):
    import aiohttp

    proxy, path, full = await started(upstream, start_proxy, tmp_path)
    path.write_text(full[:full.index("limits:")])
    await wait_for(lambda: proxy.holder.refusals >= 1)
    async with aiohttp.ClientSession() as s, s.get(proxy.url() + "/api/v1/1/crm/Contacts") as r:
        assert r.status == 200
    assert len(upstream.app[SEEN]) == 1
    assert proxy.holder.current.limits.daily == 4000


def holder_on(tmp_path, text: str) -> tuple[PolicyHolder, object]:
    path = tmp_path / "policies.yaml"
    path.write_text(text)
    return PolicyHolder(load_policy(str(path)), str(path)), path


def test_the_first_load_has_nothing_to_compare(tmp_path):
    holder, path = holder_on(tmp_path, "limits: {daily: 4000}\n")  # the proxy starts on it
    assert holder.current.limits.daily == 4000 and holder.current.error_budget.budget == 8


def test_a_copy_under_way_is_read_once_it_holds_still(tmp_path):
    holder, path = holder_on(tmp_path, TAIL)
    assert holder.poll() is False
    path.write_text(TAIL[:TAIL.index("limits:")])  # a copy half done: read now, it would be refused
    assert holder.poll() is False
    path.write_text(TAIL.replace("4000", "4500"))  # the copy done
    assert holder.poll() is False  # changed since the last look: not read yet
    assert holder.poll() is True and holder.current.limits.daily == 4500
    assert holder.refusals == 0 and holder.reloads == 1
    assert holder.poll() is False  # nothing new


def test_a_reload_compares_with_the_last_good_file_not_the_first(tmp_path):
    holder, path = holder_on(tmp_path, "limits: {daily: 4000}\n")
    path.write_text("limits: {daily: 4000}\ntokens: {daily_token_calls: 150}\n")
    assert holder.reload() is True
    path.write_text("limits: {daily: 4000}\n")  # tokens was in the last good file
    assert holder.reload() is False and holder.current.tokens.daily_token_calls == 150
