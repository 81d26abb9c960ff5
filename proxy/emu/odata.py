"""A small recursive-descent parser for the OData ``$filter`` subset real Exact clients send.

Contract
- ``parse_filter(text) -> Filter`` with ``.predicate(row) -> bool`` and ``.fields`` (the set of field
  names used). Invalid text raises ``ValueError`` with a message.
- Grammar: ``expr := and ('or' and)*``; ``and := cmp ('and' cmp)*``; ``cmp := '(' expr ')' | 'not' cmp |
  operand op operand``; op is eq ne gt ge lt le; operands are field names or literals: ``guid'…'``,
  ``datetime'…'``, ``'string'`` (``''`` escapes a quote), integers, Int64 ``123L``, decimals (``1.5``,
  ``1.5M``), ``true``/``false``/``null``.
- Comparisons: guids case-insensitively, datetimes in epoch ms (row values ``/Date(ms)/``), a comparison with
  ``null`` only for eq/ne, any other comparison with a null side is false.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

_TOKEN = re.compile(
    r"""
    \s*(?:
      (?P<lp>\() | (?P<rp>\)) |
      (?P<guid>guid'(?P<g>[0-9a-fA-F-]{36})') |
      (?P<dt>datetime'(?P<d>[^']*)') |
      (?P<str>'(?P<s>(?:[^']|'')*)') |
      (?P<num>-?\d+(?:\.\d+)?(?P<suffix>[LlMmDdFf])?)(?![\w.]) |
      (?P<word>[A-Za-z_][A-Za-z0-9_/]*)
    )""",
    re.VERBOSE,
)

OPS = {"eq", "ne", "gt", "ge", "lt", "le"}
_DATE = re.compile(r"/Date\((-?\d+)")


def parse_datetime(text: str) -> int:
    t = text.strip().rstrip("Z")
    for fmt in ("%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d"):
        try:
            return int(datetime.strptime(t, fmt).replace(tzinfo=UTC).timestamp() * 1000)
        except ValueError:
            continue
    raise ValueError(f"invalid datetime literal '{text}'")


@dataclass
class Lit:
    kind: str  # guid datetime string int decimal bool null
    value: object


@dataclass
class Filter:
    predicate: Callable[[dict], bool]
    fields: frozenset[str]


def _tokens(text: str) -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise ValueError(f"syntax error in $filter at position {pos}: {text[pos : pos + 20]!r}")
        pos = m.end()
        if m.group("lp"):
            out.append(("(", None))
        elif m.group("rp"):
            out.append((")", None))
        elif m.group("guid"):
            out.append(("lit", Lit("guid", m.group("g").lower())))
        elif m.group("dt") is not None:
            out.append(("lit", Lit("datetime", parse_datetime(m.group("d")))))
        elif m.group("str") is not None:
            out.append(("lit", Lit("string", m.group("s").replace("''", "'"))))
        elif m.group("num"):
            num, suffix = m.group("num"), (m.group("suffix") or "").lower()
            body = num[:-1] if suffix else num
            if "." in body or suffix in ("m", "d", "f"):
                out.append(("lit", Lit("decimal", float(body))))
            else:
                out.append(("lit", Lit("int", int(body))))
        else:
            w = m.group("word")
            lw = w.lower()
            if lw in OPS or lw in ("and", "or", "not"):
                out.append((lw, None))
            elif lw in ("true", "false"):
                out.append(("lit", Lit("bool", lw == "true")))
            elif lw == "null":
                out.append(("lit", Lit("null", None)))
            else:
                out.append(("field", w))
    return out


def _value(row: dict, operand, kind: str):
    if isinstance(operand, Lit):
        return operand.value
    v = row.get(operand)
    if v is None:
        return None
    if kind == "datetime" and isinstance(v, str):
        m = _DATE.match(v)
        return int(m.group(1)) if m else None
    if kind == "guid" and isinstance(v, str):
        return v.lower()
    return v


_CMP = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
}


class _Parser:
    def __init__(self, toks: list[tuple[str, object]]) -> None:
        self.toks = toks
        self.i = 0
        self.fields: set[str] = set()

    def peek(self) -> str | None:
        return self.toks[self.i][0] if self.i < len(self.toks) else None

    def take(self) -> tuple[str, object]:
        if self.i >= len(self.toks):
            raise ValueError("unexpected end of $filter")
        t = self.toks[self.i]
        self.i += 1
        return t

    def expr(self) -> Callable[[dict], bool]:
        left = self.conj()
        while self.peek() == "or":
            self.take()
            right = self.conj()
            left = (lambda a, b: lambda r: a(r) or b(r))(left, right)
        return left

    def conj(self) -> Callable[[dict], bool]:
        left = self.cmp()
        while self.peek() == "and":
            self.take()
            right = self.cmp()
            left = (lambda a, b: lambda r: a(r) and b(r))(left, right)
        return left

    def operand(self):
        kind, val = self.take()
        if kind == "lit":
            return val
        if kind == "field":
            self.fields.add(str(val))
            return str(val)
        raise ValueError(f"expected a field or a literal in $filter, got {kind!r}")

    def cmp(self) -> Callable[[dict], bool]:
        if self.peek() == "(":
            self.take()
            inner = self.expr()
            if self.take()[0] != ")":
                raise ValueError("missing ')' in $filter")
            return inner
        if self.peek() == "not":
            self.take()
            inner = self.cmp()
            return lambda r: not inner(r)
        left = self.operand()
        op = self.take()[0]
        if op not in OPS:
            raise ValueError(f"expected a comparison operator in $filter, got {op!r}")
        right = self.operand()
        lits = [x for x in (left, right) if isinstance(x, Lit)]
        kind = lits[0].kind if lits else ""
        fn = _CMP[op]
        if kind == "null":
            if op not in ("eq", "ne"):
                raise ValueError(f"operator {op} cannot compare with null")

        def pred(r: dict) -> bool:
            a, b = _value(r, left, kind), _value(r, right, kind)
            if a is None or b is None:
                return fn(a, b) if op in ("eq", "ne") else False
            try:
                return fn(a, b)
            except TypeError:
                return False

        return pred


def parse_filter(text: str) -> Filter:
    toks = _tokens(text)
    if not toks:
        raise ValueError("empty $filter")
    p = _Parser(toks)
    pred = p.expr()
    if p.i != len(toks):
        raise ValueError(f"unexpected {toks[p.i][0]!r} in $filter")
    return Filter(pred, frozenset(p.fields))
