"""What every Python driver shares (standard library only: it runs in each client's own environment).

A driver is ``python <driver>.py job.json``. The job names the app (``client_id``, ``secret``,
``redirect_uri``, ``division``), where to connect (``base``), the ``steps`` to run in order and what they
need (``filter``, ``key``, ``refresh_at``, ``tokens`` when the driver does not authorize itself), a
``work`` directory for the client's own files, and ``out``, where the driver writes its result:
``{"steps": {name: {"rows": n, "ids": [...], "t": epoch}}, "error": "..." | null}``.
Steps: ``authorize`` (the client's own code flow: the browser part by hand, the code exchange by the
client), ``list_all`` (unfiltered crm/Accounts, every page), ``list_filtered`` (``filter``, every page),
``get_one`` (``key``), ``wait`` (sleep until ``refresh_at``, or ``refresh_after`` seconds after
``authorize``). A repeated step is recorded as ``name#2``.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from urllib.parse import parse_qs, urlsplit


def code_from(location: str) -> str:
    """The authorization code in the redirect the browser would follow."""
    return parse_qs(urlsplit(location).query)["code"][0]


def main(client_factory) -> None:
    """``client_factory(spec) -> {step: callable() -> list[str] | None}``, built lazily by the driver."""
    spec = json.load(open(sys.argv[1]))
    result: dict = {"steps": {}, "error": None, "started": time.time()}
    try:
        steps = client_factory(spec)
        authorized_at = time.time()
        for name in spec["steps"]:
            if name == "wait":
                at = spec.get("refresh_at") or authorized_at + spec["refresh_after"]
                time.sleep(max(0.0, at - time.time()))
                continue
            ids = steps[name]()
            if name == "authorize":
                authorized_at = time.time()
            label, n = name, 2
            while label in result["steps"]:
                label, n = f"{name}#{n}", n + 1
            entry = {"t": time.time()}
            if ids is not None:
                entry.update(rows=len(ids), ids=sorted(ids))
            result["steps"][label] = entry
            print(f"step {label}: {entry.get('rows', '-')} rows", flush=True)
    except BaseException as exc:  # noqa: B036 - the result must say what stopped the client
        result["error"] = f"{type(exc).__name__}: {exc}"[:2000]
        traceback.print_exc()
    finally:
        result["ended"] = time.time()
        with open(spec["out"], "w") as fh:
            json.dump(result, fh)
    sys.exit(1 if result["error"] else 0)
