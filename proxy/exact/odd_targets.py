"""Request targets that Exact could read differently from the proxy: what is refused, and why.

Exact reads a division the way .NET's ``int.Parse`` does: ``+555``, `` 556`` and ``557 `` are divisions
555, 556 and 557, and its web server resolves ``..`` and ``\\`` in a path before any routing. A call the
proxy cannot tie to the division Exact will charge it to must not leave uncounted, so the proxy
accepts one spelling and refuses the rest with a 400 that names the cause (``Refusal.message``, for the
tool; ``Refusal.short``, for the log's decision). A whitelist, not a model of .NET's parser: nothing
the proxy would have to guess right reaches Exact.

Contract
- ``division_number(text)``: the division for a division segment or ``_Division_`` value (already
  percent-decoded) when it is plain ASCII digits, leading zeros allowed (``0555`` is 555 for every
  parser), at most Exact's Int32 maximum; else None. Never raises, whatever the length.
- ``bad_division(text, where)``: the refusal for a division segment (``where="segment"``) or a
  ``_Division_`` value (``where="query"``) that ``division_number`` does not accept.
- ``path_refusal(path)``: for a decoded path with a dot segment (``.`` or ``..``) or a backslash, the
  refusal; else None. Cheap for ordinary paths (two substring tests).
- ``repeated(name)``: the refusal for a classification parameter (``_Division_``, ``Topic``) given more
  than once, which Exact and the proxy could each read differently.
"""

from __future__ import annotations

from dataclasses import dataclass

INT32_MAX = 2**31 - 1
_SHOWN = 40  # characters of a client's text quoted in a message


@dataclass(frozen=True, slots=True)
class Refusal:
    short: str      # for the log: ``refused (<short>)``
    message: str    # for the tool, in Exact's error envelope


def division_number(text: str) -> int | None:
    if not (text.isascii() and text.isdigit()):
        return None
    digits = text.lstrip("0")
    if len(digits) > 10:  # also keeps int() away from its 4300-digit limit
        return None
    number = int(digits or "0")
    return number if number <= INT32_MAX else None


def _quoted(text: str) -> str:
    return repr(text[:_SHOWN]) + ("…" if len(text) > _SHOWN else "")


def bad_division(text: str, where: str) -> Refusal:
    shown = _quoted(text)
    rule = ("a division is plain digits (like 555), at most 2147483647; exact-proxy refuses other "
            "spellings (signs, spaces, other digits), which Exact may read as a division the proxy "
            "would not count")
    if where == "query":
        return Refusal(f"_Division_ {shown}", f"_Division_ value {shown} is not a division number: {rule}")
    if not text:
        return Refusal("division segment empty", "the division segment is empty (/api/v1//…): " + rule)
    return Refusal(f"division segment {shown}",
                   f"the division segment {shown} of /api/v1/{{division}}/… is not a division number: {rule}")


def path_refusal(path: str) -> Refusal | None:
    if "\\" in path:
        return Refusal("backslash in path", "the path holds a backslash, which Exact's web server reads as "
                       "'/': write the path with '/' only")
    if "/." not in path:
        return None
    if any(seg in (".", "..") for seg in path.split("/")):
        return Refusal("dot segment in path", "the path holds a dot segment ('.' or '..'), which Exact's web "
                       "server resolves into another path: send the path it stands for")
    return None


def repeated(name: str) -> Refusal:
    return Refusal(f"{name} repeated", f"{name} is given more than once; Exact and exact-proxy could "
                   "each read a different one: give it once")
