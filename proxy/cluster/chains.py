"""Token chains on the shared server: sealed records, their index, the refresh lease, the version CAS,
the intent record and the day's token-call count. Each operation that decides something is one Lua
script (``proxy.cluster.chains_lua``), atomic on the server, one round trip.

Contract: ``ChainStore(link)``; every call raises ``StoreDown`` when the server cannot be reached
(nothing was decided then). All keys of one app share the hash tag ``{tok|<app>}``; ``P`` is the prefix.

- ``P:{tok|a}:ch:<chain>`` HASH: ``ver`` (the rotation counter), ``rev`` (annotations since that
  rotation), ``rec`` (today's ``ChainBook.record`` as JSON: tokens and secret sealed), ``by`` (owner of
  the last rotation), ``at``, and ``moved`` (the chain that replaced it). Kept ``ttl`` after each write.
  A record is newer than another when its ``(ver, rev)`` is larger.
- ``r:<fp>``, ``a:<fp>``, ``c:<fp>``: refresh-token, access-token and code fingerprints -> chain id;
  ``u:<user>``: the user's chain. ``x:<fp>:<credentials fp>``: Exact's refusal of a code or an
  unknown refresh token (JSON), so that no other node sends it again.
- ``lease:<name>`` HASH (owner, until, fence; ``until`` on the scripts' clock, so an injected clock can
  let a dead node's lease run out) and ``fence:<name>`` (INCR per lease). ``intent:<chain>`` HASH
  (node, owner, fence, ver, at): a refresh on its way to Exact, kept 10 minutes.
- ``calls:<user>:<day>``: upstream token calls today, reserved before each call.

Operations
- ``read(app, id, ver, rev)``: None when the shared record is still ``(ver, rev)``; else ``Shared``
  (``missing`` when the server has no such chain). ``find(app, kind, fp)``: the chain an index key
  names, with its record, or None.
- ``acquire(app, id, owner, ver, rev, lease_ms, limit, user)``: atomically, when the record is still
  ``(ver, rev)`` and no live lease of another owner exists: reserve one token call (refused above
  ``limit``), take the lease with a new fence, write the intent; returns ``Acquired`` with ``state``
  ``got`` (and the intent found before, if any), ``moved`` (the newer record), ``held`` or ``spent``.
- ``commit(app, id, owner, ver_read, rec, index)``: the rotation's CAS: stored only when ``ver`` is
  still ``ver_read`` (whoever holds the lease now: Exact has rotated); bumps ``ver``, sets the index,
  drops this owner's lease and intent. Returns ``(ok, Shared)``.
- ``annotate(app, id, ver, rec)``: an annotation (a pause, needs_reauth, a 401): written only on the
  same ``ver`` (a rotation wins), ``rev`` + 1, never the rotation counter.
- ``release(app, name, owner, keep_intent, give_back, user)``: drop the lease (and intent), give the
  reserved call back when it was never sent.
- ``claim(app, fp, cred_fp, owner, lease_ms, limit)``: the lease of a code or unknown refresh token:
  ``done`` (the index names its chain), ``refused`` (Exact's refusal, shared), ``held``, ``spent`` or
  ``got`` (a call is reserved under ``(new)``). ``create(...)``: a new chain from it, the user's
  earlier chain marked ``moved``, the reserved call moved to the user. ``refuse(...)``: Exact's refusal
  stored and the claim dropped.
- ``seed(app, id, rec, index)``: a chain from this node's own file, written only if the server lacks it.
- ``calls_today(app, user)``; ``chain_ids()``: every chain the cluster knows (for the status view).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.commands.core import AsyncScript

from proxy.cluster import chains_lua as lua
from proxy.cluster.link import Link

DAY_MS = 86_400_000
INTENT_MS = 600_000
NEW_USER = "(new)"


@dataclass
class Shared:
    """A chain's record as the server holds it."""

    ver: int = 0
    rev: int = 0
    rec: dict[str, Any] | None = None
    moved: str = ""
    id: str = ""

    @property
    def missing(self) -> bool:
        return self.rec is None


@dataclass
class Acquired:
    state: str                       # got | moved | held | spent
    shared: Shared = field(default_factory=Shared)
    fence: int = 0
    holder: str = ""
    left_ms: int = 0
    used: int = 0
    prior: dict[str, str] = field(default_factory=dict)   # the intent found (a refresh before this one)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _record(raw: Any) -> dict[str, Any] | None:
    text = _text(raw) if raw is not None else ""
    if not text:
        return None
    rec = json.loads(text)
    return rec if isinstance(rec, dict) else None


def _shared(reply: Sequence[Any], at: int = 1) -> Shared:
    return Shared(int(reply[at]), int(reply[at + 1]), _record(reply[at + 2]))


def _day(now_ms: float) -> int:
    return int(now_ms // DAY_MS)


class ChainStore:
    def __init__(self, link: Link) -> None:
        self.link = link
        self._scripts: dict[str, AsyncScript] = {}

    # -- keys ------------------------------------------------------------------------------------
    def k(self, app: str, *parts: object) -> str:
        return self.link.key(self.link.tag("tok", app), *parts)

    def calls_key(self, app: str, user: str) -> str:
        return self.k(app, "calls", user, _day(self.link.time() * 1000))

    def _script(self, name: str) -> AsyncScript:
        script = self._scripts.get(name)
        if script is None:
            script = self._scripts[name] = self.link.script(getattr(lua, name))
        return script

    async def _run(self, name: str, keys: Sequence[str], args: Sequence[str | int | float]) -> Any:
        return await self.link.run(self._script(name), keys, args)

    @staticmethod
    def _index_parts(index: dict[str, float]) -> tuple[list[str], list[int]]:
        return list(index), [max(1000, int(ttl * 1000)) for ttl in index.values()]

    # -- reading ---------------------------------------------------------------------------------
    async def read(self, app: str, chain_id: str, ver: int, rev: int) -> Shared | None:
        reply = await self._run("READ", [self.k(app, "ch", chain_id)], [ver, rev])
        if int(reply[0]) == 1:
            return None
        if int(reply[0]) == 0:
            return Shared(id=chain_id)
        got = _shared(reply)
        got.moved, got.id = _text(reply[4]), chain_id
        return got

    async def find(self, app: str, kind: str, fp: str) -> Shared | None:
        reply = await self._run("FIND", [self.k(app, kind, fp)], [self.k(app, "ch", "")])
        if int(reply[0]) == 0:
            return None
        got = _shared(reply)
        got.moved, got.id = _text(reply[4]), _text(reply[5])
        return got

    async def calls_today(self, app: str, user: str) -> int:
        return int(await self.link.command("GET", self.calls_key(app, user)) or 0)

    async def chain_ids(self) -> list[tuple[str, str]]:
        members = await self.link.command("SMEMBERS", self.link.key("tokchains"))
        out = []
        for m in members or []:
            app, _, chain_id = _text(m).partition("\t")
            out.append((app, chain_id))
        return sorted(out)

    async def record(self, app: str, chain_id: str) -> Shared:
        got = await self.read(app, chain_id, -1, -1)
        return got or Shared(id=chain_id)

    # -- the refresh lease and the rotation ------------------------------------------------------
    async def acquire(self, app: str, chain_id: str, owner: str, ver: int, rev: int, lease_ms: int,
                      limit: int, user: str) -> Acquired:
        keys = [self.k(app, "ch", chain_id), self.k(app, "lease", chain_id), self.k(app, "fence", chain_id),
                self.k(app, "intent", chain_id), self.calls_key(app, user)]
        reply = await self._run("ACQUIRE", keys, [owner, ver, rev, lease_ms, limit, 2 * DAY_MS, INTENT_MS,
                                                  self.link.node])
        state = _text(reply[0])
        got = Acquired(state, Shared(int(reply[1]), int(reply[2]), None, id=chain_id))
        if state == "moved":
            got.shared.rec = _record(reply[3])
        elif state == "held":
            got.holder, got.left_ms = _text(reply[3]), int(reply[4])
        elif state == "spent":
            got.used = int(reply[3])
        else:
            got.fence = int(reply[3])
            rest = [_text(v) for v in reply[4:]]
            got.prior = dict(zip(rest[::2], rest[1::2], strict=False))
        return got

    async def commit(self, app: str, chain_id: str, owner: str, ver_read: int, rec: dict[str, Any],
                     index: dict[str, float], ttl: float) -> tuple[bool, Shared]:
        names, ttls = self._index_parts(index)
        keys = [self.k(app, "ch", chain_id), self.k(app, "lease", chain_id), self.k(app, "intent", chain_id),
                *(self.k(app, *name.split(":", 1)) for name in names)]
        reply = await self._run("COMMIT", keys, [owner, ver_read, json.dumps(rec), chain_id, int(ttl * 1000), *ttls])
        return bool(int(reply[0])), _shared(reply)

    async def annotate(self, app: str, chain_id: str, ver: int, rec: dict[str, Any], ttl: float) -> tuple[bool, Shared]:
        reply = await self._run("ANNOTATE", [self.k(app, "ch", chain_id)], [ver, json.dumps(rec), int(ttl * 1000)])
        return bool(int(reply[0])), _shared(reply)

    async def release(self, app: str, chain_id: str, owner: str, keep_intent: bool, give_back: bool,
                      user: str) -> None:
        await self._run("RELEASE", [self.k(app, "lease", chain_id), self.k(app, "intent", chain_id),
                                    self.calls_key(app, user)], [owner, int(keep_intent), int(give_back)])

    async def intent(self, app: str, chain_id: str) -> dict[str, str]:
        rows = await self.link.command("HGETALL", self.k(app, "intent", chain_id))
        if isinstance(rows, dict):
            return {_text(k): _text(v) for k, v in rows.items()}
        rest = [_text(v) for v in rows or []]
        return dict(zip(rest[::2], rest[1::2], strict=False))

    # -- codes and refresh tokens the cluster has not seen ---------------------------------------
    def _claim_keys(self, app: str, kind: str, fp: str, cred_fp: str) -> list[str]:
        return [self.k(app, "lease", kind, fp), self.k(app, "fence", kind, fp), self.calls_key(app, NEW_USER),
                self.k(app, kind, fp), self.k(app, "x", fp, cred_fp)]

    async def claim(self, app: str, kind: str, fp: str, cred_fp: str, owner: str, lease_ms: int,
                    limit: int) -> tuple[str, str]:
        """(state, detail): done (chain id), refused (JSON), held (owner), spent (count), got (fence)."""
        reply = await self._run("CLAIM", self._claim_keys(app, kind, fp, cred_fp), [owner, lease_ms, limit,
                                                                                   2 * DAY_MS])
        return _text(reply[0]), _text(reply[1])

    async def create(self, app: str, chain_id: str, user: str | None, owner: str, kind: str, fp: str,
                     rec: dict[str, Any], index: dict[str, float], ttl: float, presented_ttl: float) -> str:
        """The new chain; returns the user's earlier chain id ('' when none)."""
        names, ttls = self._index_parts(index)
        user_key = self.k(app, "u", user or "")
        calls_user = self.calls_key(app, user or f"chain:{chain_id}")
        keys = [self.k(app, "ch", chain_id), user_key, self.k(app, "lease", kind, fp), self.calls_key(app, NEW_USER),
                calls_user, self.k(app, kind, fp), *(self.k(app, *name.split(":", 1)) for name in names)]
        old = await self._run("CREATE", keys, [owner, json.dumps(rec), chain_id, int(ttl * 1000), 2 * DAY_MS,
                                               max(1000, int(presented_ttl * 1000)), int(user is not None),
                                               self.k(app, "ch", ""), *ttls])
        await self.link.command("SADD", self.link.key("tokchains"), f"{app}\t{chain_id}")
        return _text(old) if old else ""

    async def refuse(self, app: str, kind: str, fp: str, cred_fp: str, owner: str, refusal: dict[str, Any] | None,
                     ttl: float, give_back: bool) -> None:
        keys = self._claim_keys(app, kind, fp, cred_fp)
        await self._run("REFUSE", [keys[0], keys[4], keys[2]], [owner, json.dumps(refusal) if refusal else "",
                                                                max(1000, int(ttl * 1000)), int(give_back)])

    # -- start -----------------------------------------------------------------------------------
    async def seed(self, app: str, chain_id: str, rec: dict[str, Any], index: dict[str, float], ttl: float) -> bool:
        names, ttls = self._index_parts(index)
        keys = [self.k(app, "ch", chain_id), *(self.k(app, *name.split(":", 1)) for name in names)]
        seeded = bool(int(await self._run("SEED", keys, [json.dumps(rec), chain_id, int(ttl * 1000), *ttls])))
        await self.link.command("SADD", self.link.key("tokchains"), f"{app}\t{chain_id}")
        return seeded
