"""Test support: real pieces of the proxy put together for tests of one filter at a time.

- ``make_policy`` / ``make_services`` / ``Rig``: a real ``Policy`` parsed from a small YAML text, the real
  ``proxy.services.Services`` on a ``ManualClock`` (never started: no network, no store unless asked).
- ``make_ctx``: a ``Context`` around ``aiohttp.test_utils.make_mocked_request``, taken through the real
  ``route``, ``classify`` and ``read_body`` steps (or given an upstream, a classification, no body).
- ``Script``: a scripted ``call_next`` that answers as ``forward`` or an inner filter would, and records
  what it saw.
- ``capture_log``: the proxy's log lines as text.
- ``add_chain``: a token chain in the real broker's book (``tests.support.tokens``).
"""

from tests.support.context import CLASSIFY, ROUTE, Rig, capture_log, make_ctx, make_policy, make_services
from tests.support.script import Script, Seen, failure, gate, local, raises, upstream
from tests.support.tokens import add_chain

__all__ = [
    "CLASSIFY",
    "ROUTE",
    "Rig",
    "Script",
    "Seen",
    "add_chain",
    "capture_log",
    "failure",
    "gate",
    "local",
    "make_ctx",
    "make_policy",
    "make_services",
    "raises",
    "upstream",
]
