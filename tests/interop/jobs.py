"""The jobs the interop tests give real clients, and how their results are judged.

A Python or Node driver (``drivers/``) runs the ``steps`` of a job file and writes what it read (see
``drivers/_job.py``); the Singer tap runs as a pipeline into target-jsonl. ``problems_of`` turns a run
and the emulator's ``/_emulator/stats`` into readable lines: an empty list is a pass.
"""

from __future__ import annotations

import json
import os
import shlex
import time

from aiohttp import web

from .conftest import ACCESS, GUID, ROWS, SECRET, World, outcomes

# Each client alone: its code flow, an unfiltered list, a filtered set over three pages, one by key; then,
# once its access token has expired, the filtered set and the key again (a refresh must happen).
STEPS = ["authorize", "list_all", "list_filtered", "get_one", "wait", "list_filtered", "get_one"]
REFRESH_AFTER = ACCESS + 2          # every client's access token has expired by then


def row_problems(w: World, run, steps) -> list[str]:
    """Steps that did not complete, or did not read exactly the rows the emulator holds."""
    want = {"list_all": w.account_ids(), "list_filtered": w.account_ids(run.job_spec["filter"]),
            "get_one": [run.job_spec["key"]]}
    problems, seen = [], {}
    for name in steps:
        if name in ("wait", "authorize"):
            continue
        seen[name] = seen.get(name, 0) + 1
        label = name if seen[name] == 1 else f"{name}#{seen[name]}"
        got = (run.result.get("steps") or {}).get(label)
        if got is None:
            problems.append(f"step {label} did not complete")
        elif got.get("ids") != want[name]:
            missing = len(set(want[name]) - set(got.get("ids") or []))
            problems.append(f"step {label}: {got.get('rows')} rows, expected {len(want[name])} ({missing} missing)")
    return problems


def run_problems(w: World, run, steps) -> list[str]:
    problems = []
    if run.rc != 0 or run.result.get("error") or run.timed_out:
        problems.append(f"{run.name} failed (exit {run.rc}{', timed out' if run.timed_out else ''}): "
                        f"{run.result.get('error')}")
    return problems + [f"{run.name}: {p}" for p in row_problems(w, run, steps)]


def exact_saw_refresh(stats: dict) -> list[str]:
    tokens = outcomes(stats, GUID, "oauth2/token")
    return [] if tokens.get("ok", 0) >= 2 else [f"no refresh reached Exact (token endpoint outcomes {tokens})"]


def report(w: World, problems: list[str], stats: dict, *runs, lines: int = 60) -> str:
    """The failure message: what went wrong, what each client printed, what Exact counted, the proxy's log."""
    return ("\n".join(problems) + "\n" + "\n".join(r.tail(2500) for r in runs) + "\n--- Exact (/_emulator/stats)\n"
            + json.dumps(stats["calls"]) + "\n--- proxy log (last lines)\n"
            + "\n".join(w.proxy_log().splitlines()[-lines:]))


def verdict(w: World, problems: list[str], stats: dict, *runs, lines: int = 60) -> None:
    """Fail with the report when anything went wrong; with INTEROP_VERBOSE=1 print it either way."""
    if os.environ.get("INTEROP_VERBOSE"):
        print(report(w, problems or ["(passed)"], stats, *runs, lines=lines))
    assert not problems, report(w, problems, stats, *runs, lines=lines)


async def drive(w: World, client, driver: str, env: dict, timeout: float = 150, **spec):
    spec.setdefault("steps", STEPS)
    spec.setdefault("refresh_after", REFRESH_AFTER)
    job = w.job(spec.pop("name", client.name), **spec)
    run = await w.drive(client, driver, job, env, timeout=timeout)
    run.job_spec = json.loads(job.read_text())
    return run


# -- the Singer tap -------------------------------------------------------------------------------------

SECRET_ID = "exact/interop-tap"


class SecretsManager:
    """AWS Secrets Manager's GetSecretValue and UpdateSecret (JSON protocol) on 127.0.0.1, for boto3 pointed
    here with ``AWS_ENDPOINT_URL_SECRETS_MANAGER``, as one points it at LocalStack."""

    def __init__(self) -> None:
        self.secrets: dict[str, str] = {}
        self.calls: list[str] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        action = request.headers.get("X-Amz-Target", "").rsplit(".", 1)[-1]
        body = json.loads(await request.read() or b"{}")
        self.calls.append(action)
        sid = body.get("SecretId", "")
        arn = f"arn:aws:secretsmanager:eu-west-1:000000000000:secret:{sid}"
        kind = "application/x-amz-json-1.1"
        if sid not in self.secrets:
            return web.json_response({"__type": "ResourceNotFoundException", "message": "no such secret"},
                                     status=400, content_type=kind)
        if action == "GetSecretValue":
            out = {"ARN": arn, "Name": sid, "VersionId": str(len(self.calls)), "SecretString": self.secrets[sid],
                   "VersionStages": ["AWSCURRENT"], "CreatedDate": time.time()}
        elif action == "UpdateSecret":
            self.secrets[sid] = body["SecretString"]
            out = {"ARN": arn, "Name": sid, "VersionId": str(len(self.calls))}
        else:
            return web.json_response({"__type": "InvalidRequestException", "message": action}, status=400,
                                     content_type=kind)
        return web.json_response(out, content_type=kind)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def seed(self, tokens: dict) -> None:
        """The secret as the operator's authorization left it."""
        self.secrets[SECRET_ID] = json.dumps({
            "access_token": tokens["access_token"], "refresh_token": tokens["refresh_token"],
            "access_expiry": str(int(tokens["received_at"]) + int(tokens["expires_in"]))})

    @property
    def stored(self) -> dict:
        return json.loads(self.secrets[SECRET_ID])


class Tap:
    """tap-exactonline configured for the proxy's HTTPS listener, its accounts stream selected."""

    def __init__(self, w: World, clients, sm: SecretsManager) -> None:
        self.w, self.sm = w, sm
        self.tap, self.target = clients["tap-exactonline"], clients["target-jsonl"]
        self.dir = w.tmp / "tap"
        self.dir.mkdir(exist_ok=True)
        self.config = self.dir / "tap.json"
        self.catalog = self.dir / "catalog.json"
        self.state = self.dir / "state.json"
        self.config.write_text(json.dumps({
            "rest_url": f"{w.secure}/api", "auth_url": f"{w.secure}/api/oauth2/auth",
            "token_url": f"{w.secure}/api/oauth2/token", "base_url": "https://localhost/exact-callback",
            "client_id": GUID, "client_secret": SECRET, "secret_id": SECRET_ID, "division": 7095}))
        # The tap's bookmark is a string: an int (what the SDK itself writes for an IntegerType key) makes
        # its skiptoken code fail with len(int).
        self.state.write_text(json.dumps({"bookmarks": {"accounts": {"replication_key": "Timestamp",
                                                                     "replication_key_value": "1"}}}))

    def env(self) -> dict:
        w = self.w
        return w.env(AWS_ENDPOINT_URL_SECRETS_MANAGER=self.sm.url, AWS_ACCESS_KEY_ID="interop",
                     AWS_SECRET_ACCESS_KEY="interop", AWS_DEFAULT_REGION="eu-west-1",
                     AWS_CONFIG_FILE=str(w.tmp / "no-aws-config"), AWS_EC2_METADATA_DISABLED="true",
                     AWS_SHARED_CREDENTIALS_FILE=str(w.tmp / "no-aws-credentials"))

    async def discover(self) -> None:
        """``--discover``, then only the accounts stream selected (as ``meltano select`` would)."""
        found = await self.w.run("tap --discover", [self.tap.bin("tap-exactonline"), "--config", str(self.config),
                                                    "--discover"], self.env(), timeout=60)
        assert found.rc == 0, found.tail()
        catalog = json.loads(found.stdout)
        for stream in catalog["streams"]:
            for meta in stream["metadata"]:
                if meta["breadcrumb"] == []:
                    meta["metadata"]["selected"] = stream["tap_stream_id"] == "accounts"
        self.catalog.write_text(json.dumps(catalog))

    async def run(self, name: str):
        """One scheduled run: ``tap | target-jsonl``. Returns (Run, rows written)."""
        out = self.dir / name
        out.mkdir()
        target_cfg = out / "target.json"
        target_cfg.write_text(json.dumps({"destination_path": str(out), "do_timestamp_file": False}))
        q = shlex.quote
        line = (f"set -o pipefail; {q(self.tap.bin('tap-exactonline'))} --config {q(str(self.config))} "
                f"--catalog {q(str(self.catalog))} --state {q(str(self.state))} | "
                f"{q(self.target.bin('target-jsonl'))} --config {q(str(target_cfg))}")
        run = await self.w.run(f"tap-exactonline | target-jsonl ({name})", ["bash", "-c", line], self.env(),
                               timeout=120)
        jsonl = out / "accounts.jsonl"
        rows = [json.loads(x) for x in jsonl.read_text().splitlines() if x.strip()] if jsonl.exists() else []
        return run, rows

    def problems(self, run, rows) -> list[str]:
        got = sorted(r["ID"] for r in rows)
        if run.rc == 0 and got == self.w.account_ids():
            return []
        return [f"{run.name}: exit {run.rc}, {len(rows)} rows of {ROWS}"]


