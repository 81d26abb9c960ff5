"""The interop suite: real, unmodified third-party Exact Online clients through the real proxy, in front of
the real emulator.

Each client lives in its own environment under ``.interop/`` (git-ignored), made once and reused; the
directory name carries a hash of what is installed there, so a change of version installs anew. The
clients run as subprocesses, configured only as a user would (environment, config files, constructor
arguments in a small driver script of ours in ``drivers/``); the emulator and the proxy run in the test's
event loop on real sockets, with real TLS:

- the emulator is ``https://start.exactonline.nl`` and ``https://start.exactonline.be`` by certificate (a
  test CA), on 127.0.0.1; the proxy reaches it through ``connect_to`` and trusts only that test CA;
- the proxy has a plain listener (``http://127.0.0.1:…``, also the ``HTTPS_PROXY`` that intercepts
  ``CONNECT start.exactonline.nl/.be``) and an HTTPS listener with a certificate from its local CA, which
  the clients trust through ``SSL_CERT_FILE``/``REQUESTS_CA_BUNDLE``/``NODE_EXTRA_CA_CERTS``.

Clocks are real (the clients compute token expiry from their own clock), so the token lifetimes are
made short in the emulator and in the proxy's policy instead: ``ACCESS`` seconds a token, a new one
``MIN_REFRESH`` seconds after the last (Exact: 600 and 570).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("EXACT_PROXY_INTEROP_CACHE", ROOT / ".interop"))
DRIVERS = Path(__file__).resolve().parent / "drivers"

# The app as Exact's app centre shows it, and the spellings clients are given.
GUID = "b81cc4de-d192-400e-bcb4-09254394c52a"
SECRET = "interop-secret-7Gq!x"
BRACED = "{" + GUID + "}"
UPPER = GUID.upper()
DIVISION = 7095               # the emulator's CurrentDivision of current/Me
REDIRECT = "https://localhost/exact-callback"
ROWS = 150                    # crm/accounts rows: three pages of 60
FILTER = "Country eq 'NL' or IsSupplier eq false"   # 136 of the 150, three pages again

ACCESS = 24.0                 # access-token lifetime in the emulator (Exact: 600)
MIN_REFRESH = 16.0            # a new token only this long after the last (Exact: 570)
# A refresh goes upstream from when Exact allows one, as with Exact's 600 s and 570 s and the default
# refresh_margin of 30 s. On this compressed clock that needs the whole lifetime: ossobv asks for a
# refresh within its last 30 s, which is always here.
MARGIN = ACCESS
ERRORS_PER_ENDPOINT = 8       # what Exact may see per app and endpoint (its own limit is 10)
EXACT_HOSTS = ("start.exactonline.nl", "start.exactonline.be")
REQUEST_LINE = re.compile(r"^\S+ (GET|POST|PUT|DELETE|HEAD|PATCH|OPTIONS|CONNECT) \S+ status=")


# -- the clients' environments -----------------------------------------------------------------------

@dataclass(frozen=True)
class Client:
    name: str
    kind: str                         # "pip" or "npm"
    packages: tuple[str, ...]
    pip_flags: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        text = json.dumps([self.kind, self.packages, self.pip_flags, sys.version_info[:2]])
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def home(self) -> Path:
        return CACHE / f"{self.name}-{self.key}"

    def bin(self, name: str) -> str:
        return str(self.home / "bin" / name)

    @property
    def python(self) -> str:
        return self.bin("python")


CLIENTS = {c.name: c for c in (
    Client("exact-online-sdk", "pip", ("exact-online-sdk==2.0.0",)),
    Client("exactonline", "pip", ("exactonline==0.4.0",)),
    Client("python-exact-online", "pip", ("python-exact-online==1.1.0",)),
    # tap-exactonline declares Requires-Python <3.11 (its template's default); this machine has 3.11 only.
    # Its own dependencies install and run on 3.11. target-jsonl pins versions that conflict with the
    # tap's, so it has its own environment, as Singer taps and targets usually do.
    Client("tap-exactonline", "pip", ("tap-exactonline==0.2.24",), ("--ignore-requires-python",)),
    Client("target-jsonl", "pip", ("target-jsonl==0.1.4",)),
    # Node 20's fetch ignores HTTPS_PROXY; the driver routes it through undici's ProxyAgent (the undici
    # that Node 20.20 bundles is 6.24).
    Client("quantix", "npm", ("@quantix-ict/exact-online@1.1.0", "undici@6.24.1")),
)}


def _install(client: Client) -> tuple[str, float]:
    """Make the client's environment unless a complete one for these pins exists. Returns (name, seconds)."""
    t0 = time.monotonic()
    marker = client.home / ".complete"
    if marker.exists():
        return client.name, 0.0
    for stale in CACHE.glob(f"{client.name}-*"):  # other pins, or an install that did not finish
        shutil.rmtree(stale, ignore_errors=True)
    client.home.mkdir(parents=True)
    log = client.home / "install.log"
    with open(log, "w") as out:
        def run(cmd: list[str]) -> None:
            out.write("$ " + " ".join(cmd) + "\n")
            out.flush()
            done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=client.home, timeout=900)
            if done.returncode:
                raise RuntimeError(f"installing {client.name} failed ({' '.join(cmd)}); see {log}:\n"
                                   + log.read_text()[-3000:])

        if client.kind == "pip":
            base = getattr(sys, "_base_executable", sys.executable)
            run([base, "-m", "venv", str(client.home)])
            run([client.python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                 *client.pip_flags, *client.packages])
        else:
            (client.home / "package.json").write_text('{"name": "interop-client", "private": true}\n')
            run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error", *client.packages])
    marker.write_text(json.dumps({"packages": client.packages, "seconds": round(time.monotonic() - t0, 1)}))
    return client.name, time.monotonic() - t0


@pytest.fixture(scope="session")
def clients() -> dict[str, Client]:
    """Every client installed (in parallel, the first time), keyed by name."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(CLIENTS)) as pool:
        for name, seconds in pool.map(_install, CLIENTS.values()):
            if seconds:
                print(f"\ninterop: installed {name} in {seconds:.0f} s", file=sys.stderr)
    return CLIENTS


# -- the world: emulator + proxy ---------------------------------------------------------------------

@dataclass
class Run:
    """What a client's process did: exit code, output, and the result its driver wrote."""

    name: str
    rc: int | None
    stdout: str
    stderr: str
    result: dict = field(default_factory=dict)
    seconds: float = 0.0
    timed_out: bool = False

    def tail(self, n: int = 4000) -> str:
        return (f"[{self.name}] rc={self.rc} timed_out={self.timed_out} after {self.seconds:.1f} s\n"
                f"--- result\n{json.dumps(self.result)[:n]}\n--- stdout\n{self.stdout[-n:]}\n"
                f"--- stderr\n{self.stderr[-n:]}")


class World:
    """The emulator and the proxy of one test, and what a test asks of them."""

    def __init__(self, tmp: Path, emu, proxy, log_output, test_ca: str, proxy_ca: str) -> None:
        self.tmp, self.emu, self.proxy, self.log_output = tmp, emu, proxy, log_output
        self.test_ca, self.proxy_ca = test_ca, proxy_ca
        self.plain = proxy.url("plain")          # http://127.0.0.1:p, also the HTTPS_PROXY
        self.secure = proxy.url("secure")        # https://127.0.0.1:q, local CA
        self._emu_ssl = ssl.create_default_context(cafile=test_ca)
        self._proxy_ssl = ssl.create_default_context(cafile=proxy_ca)

    # emulator control, over HTTP as any tool would -------------------------------------------------
    async def _emu(self, method: str, path: str, body: dict | None = None) -> dict:
        async with aiohttp.ClientSession() as s, s.request(
                method, self.emu.base_url + path, json=body, ssl=self._emu_ssl,
                headers={"Host": EXACT_HOSTS[0]}) as r:
            assert r.status == 200, await r.text()
            return await r.json()

    async def stats(self) -> dict:
        return await self._emu("GET", "/_emulator/stats")

    async def unauthorized(self, on: bool) -> dict:
        return await self._emu("POST", "/_emulator/unauthorized", {"on": on})

    async def revoke(self, client_id: str | None = None, refresh: bool = False) -> dict:
        return await self._emu("POST", "/_emulator/revoke", {"client_id": client_id, "refresh": refresh})

    # what the emulator holds ---------------------------------------------------------------------
    def account_ids(self, flt: str | None = None) -> list[str]:
        from proxy.emulator.data import ENTITIES
        from proxy.emulator.odata import parse_filter

        rows = self.emu.state.data.rows(DIVISION, ENTITIES["crm/accounts"])
        match = parse_filter(flt).match if flt else (lambda r: True)
        return sorted(r["ID"] for r in rows if match(r))

    # the proxy -------------------------------------------------------------------------------------
    async def proxy_requests(self) -> int:
        """Requests the proxy has answered so far (all listeners, the admin endpoints excluded)."""
        async with aiohttp.ClientSession() as s, s.get(self.plain + "/_proxy/metrics") as r:
            text = await r.text()
        total = 0.0
        for line in text.splitlines():
            if line.startswith("exact_proxy_requests_total{"):
                total += float(line.rsplit(" ", 1)[1])
        return int(total)

    def proxy_log(self) -> str:
        return self.log_output.getvalue()

    def log_mark(self) -> int:
        return len(self.log_output.getvalue())

    def requests_since(self, mark: int) -> list[str]:
        """The proxy's request lines logged after ``mark`` (its own /_proxy/ endpoints left out)."""
        lines = self.log_output.getvalue()[mark:].splitlines()
        return [ln for ln in lines if REQUEST_LINE.match(ln) and " /_proxy/" not in ln and " /metrics" not in ln]

    # a code flow through the proxy, as an operator's one-off script would do it ---------------------
    async def authorize(self, client_id: str = GUID, via: str | None = None) -> dict:
        base = via or self.plain
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{base}/api/oauth2/auth", params={"client_id": client_id, "redirect_uri": REDIRECT,
                                                                "response_type": "code"},
                             allow_redirects=False, ssl=self._proxy_ssl) as r:
                assert r.status in (302, 303), await r.text()
                code = parse_qs(urlsplit(r.headers["Location"]).query)["code"][0]
            form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
                    "client_id": client_id, "client_secret": SECRET}
            async with s.post(f"{base}/api/oauth2/token", data=form, ssl=self._proxy_ssl) as r:
                body = await r.json(content_type=None)
                assert r.status == 200, body
        body["received_at"] = time.time()
        return body

    # clients ---------------------------------------------------------------------------------------
    def env(self, intercept: bool = False, **extra: str) -> dict[str, str]:
        """A client's environment: trusts the proxy's CA only; ``HTTPS_PROXY`` when it keeps Exact's URLs."""
        env = {k: v for k, v in os.environ.items()
               if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
               and not k.startswith(("PYTHON", "VIRTUAL_ENV", "PYTEST", "NODE_"))}
        env.update(SSL_CERT_FILE=self.proxy_ca, REQUESTS_CA_BUNDLE=self.proxy_ca, NODE_EXTRA_CA_CERTS=self.proxy_ca,
                   PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1")
        if intercept:
            env.update(HTTPS_PROXY=self.plain, https_proxy=self.plain, NO_PROXY="", no_proxy="")
        env.update(extra)
        return env

    def job(self, name: str, **spec) -> Path:
        """Write a driver's job file; the driver writes its result next to it."""
        spec.setdefault("client_id", GUID)
        spec.setdefault("secret", SECRET)
        spec.setdefault("division", DIVISION)
        spec.setdefault("redirect_uri", REDIRECT)
        spec.setdefault("filter", FILTER)
        spec.setdefault("key", self.account_ids()[ROWS // 2])
        work = self.tmp / name
        work.mkdir(exist_ok=True)
        spec["work"] = str(work)
        spec["out"] = str(work / "result.json")
        path = work / "job.json"
        path.write_text(json.dumps(spec, indent=1))
        return path

    async def run(self, name: str, cmd: list[str], env: dict[str, str], timeout: float = 120.0,
                  result: Path | None = None, shell: bool = False) -> Run:
        t0 = time.monotonic()
        if shell:
            proc = await asyncio.create_subprocess_shell(cmd[0], env=env, stdout=asyncio.subprocess.PIPE,
                                                         stderr=asyncio.subprocess.PIPE, start_new_session=True)
        else:
            proc = await asyncio.create_subprocess_exec(*cmd, env=env, stdout=asyncio.subprocess.PIPE,
                                                        stderr=asyncio.subprocess.PIPE, start_new_session=True)
        timed_out = False
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            timed_out = True
            try:
                os.killpg(proc.pid, 9)
            except ProcessLookupError:
                pass
            out, err = await proc.communicate()
        run = Run(name, proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"),
                  seconds=time.monotonic() - t0, timed_out=timed_out)
        if result is not None and result.exists():
            run.result = json.loads(result.read_text() or "{}")
        return run

    async def drive(self, client: Client, driver: str, job: Path, env: dict[str, str],
                    timeout: float = 120.0) -> Run:
        interpreter = "node" if driver.endswith((".js", ".cjs", ".mjs")) else client.python
        if interpreter == "node":
            env = {**env, "NODE_PATH": str(client.home / "node_modules")}
        return await self.run(job.parent.name, [interpreter, str(DRIVERS / driver), str(job)], env, timeout,
                              result=job.parent / "result.json")


def exact_problems(stats: dict) -> list[str]:
    """What Exact must never see through the proxy: 429s, too-early or old-refresh-token refreshes, and more
    than ``ERRORS_PER_ENDPOINT`` errors (400, 401, 403, 404) per app and endpoint."""
    problems = []
    errors: dict[tuple, int] = {}
    for row in stats["calls"]:
        outcome, n = row["outcome"], row["count"]
        if outcome.endswith("_429") or outcome in ("error_block", "token_daily_limit"):
            problems.append(f"Exact answered 429 ({outcome}) x{n} to app {row['app']} on {row['endpoint']}")
        if outcome in ("too_early", "old_refresh_token"):
            problems.append(f"Exact saw {outcome} x{n} from app {row['app']}")
        if outcome not in ("ok", "created", "updated", "deleted") and not outcome.endswith("_429") \
                and outcome not in ("error_block", "token_daily_limit"):
            key = (row["app"], row["endpoint"])
            errors[key] = errors.get(key, 0) + n
    for (app, endpoint), n in sorted(errors.items(), key=str):
        if n > ERRORS_PER_ENDPOINT:
            problems.append(f"Exact counted {n} errors for app {app} on {endpoint} (at most {ERRORS_PER_ENDPOINT})")
    return problems


def outcomes(stats: dict, app: str | None = GUID, endpoint: str | None = None) -> dict[str, int]:
    out: dict[str, int] = {}
    for row in stats["calls"]:
        if (app is None or row["app"] == app) and (endpoint is None or row["endpoint"] == endpoint):
            out[row["outcome"]] = out.get(row["outcome"], 0) + row["count"]
    return out


def calls_by(stats: dict, app: str = GUID) -> int:
    return sum(row["count"] for row in stats["calls"] if row["app"] == app)


@pytest.fixture
async def world(start_proxy, log_output, tmp_path):
    """``await world(**emulator_settings) -> World``: a fresh emulator and proxy for the test."""
    from proxy.clock import SystemClock
    from proxy.emulator.config import EmulatorConfig
    from proxy.emulator.runner import start_emulator
    from proxy.tls.ca import LocalCA

    started = []

    async def make(proxy_yaml: str = "", **settings) -> World:
        test_ca = LocalCA.create(str(tmp_path / "exact-test-ca"), SystemClock())
        leaf = test_ca.leaf((*EXACT_HOSTS, "127.0.0.1"))   # 127.0.0.1: the control calls
        (tmp_path / "exact-leaf.pem").write_bytes(leaf.chain_pem)
        (tmp_path / "exact-leaf.key").write_bytes(leaf.key_pem)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(tmp_path / "exact-leaf.pem", tmp_path / "exact-leaf.key")
        config = {"clients": {BRACED: SECRET}, "rows": {"crm/accounts": ROWS},
                  "access_token_lifetime": ACCESS, "min_refresh_interval": MIN_REFRESH,
                  "request_log": str(tmp_path / "exact-calls.jsonl"), **settings}
        emu = await start_emulator(EmulatorConfig.from_dict(config), ssl_context=ctx)
        started.append(emu)
        port = emu.base_url.rsplit(":", 1)[1]
        upstreams = "upstreams:\n" + "".join(
            f"  {h.rsplit('.', 1)[1]}: {{base_url: 'https://{h}', connect_to: '127.0.0.1:{port}', "
            f"ca_bundle: '{test_ca.cert_path}'}}\n" for h in EXACT_HOSTS)
        listeners = ("listeners:\n  - {name: plain, port: 0, upstream: nl}\n"
                     "  - {name: secure, port: 0, upstream: nl, tls: true}\n")
        LocalCA.create(str(tmp_path / "ca"), SystemClock())
        extra = (f"ca: {{dir: '{tmp_path / 'ca'}'}}\n"
                 f"tokens: {{min_refresh_interval: {MIN_REFRESH}, refresh_margin: {MARGIN}}}\n" + proxy_yaml)
        proxy = await start_proxy("", extra_yaml=extra, listeners_yaml=listeners, upstreams_yaml=upstreams)
        return World(tmp_path, emu, proxy, log_output, test_ca.cert_path, str(tmp_path / "ca" / "ca.pem"))

    yield make
    for emu in started:
        await emu.stop()


async def sleep_until(epoch: float) -> None:
    await asyncio.sleep(max(0.0, epoch - time.time()))


@pytest.fixture
async def secrets_manager():
    """A local AWS Secrets Manager for the Singer tap (``jobs.SecretsManager``)."""
    from .jobs import SecretsManager

    sm = SecretsManager()
    await sm.start()
    yield sm
    await sm.stop()
