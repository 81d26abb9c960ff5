"""The OData subset real tools use: ``$filter`` parsing and evaluation, and ``$select``.

Contract: ``parse_filter(text) -> Filter`` with ``.fields`` (every field named) and ``.match(row)``;
invalid text raises ``ValueError`` naming the problem. Operators: eq ne gt ge lt le, and, or, not,
parentheses. Literals: ``guid'…'``, ``datetime'…'``, ``'string'`` (``''`` escapes a quote), integers,
decimals, Int64 ``123L``, ``true``/``false``/``null``. Guids compare case-insensitively; ``/Date(ms)/``
values compare with datetime literals as instants (UTC).
"""

from __future__ import annotations

import calendar
import re
import time
from collections.abc import Callable
from typing import Any

_TOKEN = re.compile(r"""\s*(?:
    (?P<guid>guid'[0-9a-fA-F-]{36}')
  | (?P<dt>datetime'[^']*')
  | (?P<str>'(?:[^']|'')*')
  | (?P<num>-?\d+(?:\.\d+)?[LlMmDd]?)
  | (?P<lp>\() | (?P<rp>\))
  | (?P<name>[A-Za-z_][A-Za-z0-9_/]*)
)""", re.X)

COMPARE = {"eq", "ne", "gt", "ge", "lt", "le"}
_DATE = re.compile(r"^/Date\((-?\d+)\)/$")


class Filter:
    def __init__(self, match: Callable[[dict], bool], fields: set[str]) -> None:
        self.match = match
        self.fields = fields


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ValueError(f"cannot read the $filter at position {pos}: {text[pos:pos + 20]!r}")
        kind = m.lastgroup
        assert kind is not None  # every token is a named group
        out.append((kind, m.group(kind)))
        pos = m.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return out


def _literal(kind: str, value: str) -> Any:
    if kind == "guid":
        return ("guid", value[5:-1].lower())
    if kind == "dt":
        raw = value[9:-1]
        for fmt in ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d"):
            try:
                return ("date", calendar.timegm(time.strptime(raw.split(".")[0].rstrip("Z"), fmt)) * 1000)
            except ValueError:
                continue
        raise ValueError(f"not a datetime literal: {value}")
    if kind == "str":
        return ("str", value[1:-1].replace("''", "'"))
    if kind == "num":
        v = value.rstrip("LlMmDd")
        return ("num", float(v) if "." in v else int(v))
    raise ValueError(f"not a literal: {value}")


def _value(row_value: Any, lit: tuple[str, Any]) -> tuple[Any, Any]:
    kind, v = lit
    if kind == "guid":
        return (str(row_value).lower() if row_value is not None else None), v
    if kind == "date":
        m = _DATE.match(str(row_value)) if row_value is not None else None
        return (int(m.group(1)) if m else None), v
    return row_value, v


def _compare(op: str, a: Any, b: Any) -> bool:
    if op == "eq":
        return a == b
    if op == "ne":
        return a != b
    if a is None or b is None:
        return False
    try:
        return {"gt": a > b, "ge": a >= b, "lt": a < b, "le": a <= b}[op]
    except TypeError:
        return False


def parse_filter(text: str) -> Filter:
    toks = _tokens(text)
    if not toks:
        raise ValueError("the $filter is empty")
    fields: set[str] = set()
    pos = 0

    def peek() -> tuple[str, str] | None:
        return toks[pos] if pos < len(toks) else None

    def take() -> tuple[str, str]:
        nonlocal pos
        if pos >= len(toks):
            raise ValueError("the $filter ends too early")
        pos += 1
        return toks[pos - 1]

    def expr_or() -> Callable[[dict], bool]:
        left = expr_and()
        while (t := peek()) and t == ("name", "or"):
            take()
            right = expr_and()
            left = (lambda a, b: lambda r: a(r) or b(r))(left, right)
        return left

    def expr_and() -> Callable[[dict], bool]:
        left = unary()
        while (t := peek()) and t == ("name", "and"):
            take()
            right = unary()
            left = (lambda a, b: lambda r: a(r) and b(r))(left, right)
        return left

    def unary() -> Callable[[dict], bool]:
        t = peek()
        if t == ("name", "not"):
            take()
            inner = unary()
            return lambda r: not inner(r)
        if t and t[0] == "lp":
            take()
            inner = expr_or()
            if take()[0] != "rp":
                raise ValueError("a '(' in the $filter is not closed")
            return inner
        return comparison()

    def comparison() -> Callable[[dict], bool]:
        kind, field = take()
        if kind != "name" or field in COMPARE or field in ("and", "or"):
            raise ValueError(f"expected a field name in the $filter, got {field!r}")
        kind, op = take()
        if kind != "name" or op not in COMPARE:
            raise ValueError(f"expected eq, ne, gt, ge, lt or le after {field}, got {op!r}")
        kind, raw = take()
        if kind == "name" and raw in ("true", "false", "null"):
            lit = ("raw", {"true": True, "false": False, "null": None}[raw])
        else:
            lit = _literal(kind, raw)
        fields.add(field)

        def test(row: dict) -> bool:
            a, b = _value(row.get(field), lit)
            return _compare(op, a, b)

        return test

    match = expr_or()
    if pos != len(toks):
        raise ValueError(f"unexpected {toks[pos][1]!r} in the $filter")
    return Filter(match, fields)


def select(row: dict, fields: list[str] | None) -> dict:
    if not fields:
        return row
    out = {"__metadata": row["__metadata"]} if "__metadata" in row else {}
    for f in fields:
        if f in row:
            out[f] = row[f]
    return out
