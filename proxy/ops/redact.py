"""Keep secrets out of every log line.

Contract
- ``redact_query(raw_query)`` masks the values of parameters that carry secrets (codes, tokens, client
  secrets) while keeping every other byte as sent.
- ``scrub(text)`` masks anything that looks like a credential in free text: ``Bearer …``/``Basic …``
  values, ``name=value`` and ``"name":"value"`` pairs for secret names, and every value registered with
  ``remember_secret`` (the token broker registers the tokens it sees). The log formatter applies it to
  every line, as a last line of defence.
"""

from __future__ import annotations

import re
import threading

MASK = "***"
SECRET_NAMES = ("code", "access_token", "refresh_token", "client_secret", "id_token", "token",
                "password", "assertion", "client_assertion", "authorization", "secret")

_names = "|".join(sorted(SECRET_NAMES, key=len, reverse=True))
_QUERY_PARAM = re.compile(r"(^|&)((?:%[0-9a-fA-F]{2}|[^&=])*?)=([^&]*)")
_PAIR = re.compile(r"(?i)\b((?:%s))(=|%%3D)([^&\s\"',;]+)" % _names)
_JSON_PAIR = re.compile(r"(?i)(\"(?:%s)\"\s*:\s*\")([^\"]*)(\")" % _names)
_AUTH = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9\-._~+/!=%]{4,}")

# Words without which no text can hold a credential. ``_suspect`` checks them with substring search on
# the lower-cased text: a case-insensitive regex alternation cost 15 us a log line, this about 1 us.
_SUSPECT_WORDS = ("bearer", "basic", "code", "token", "secret", "password", "assertion", "authorization",
                  "%5f")


def _suspect(text: str) -> bool:
    low = text.lower()
    for word in _SUSPECT_WORDS:
        if word in low:
            return True
    return False


# Registered secrets (tokens, codes, client secrets) are found as *runs*: maximal stretches of the
# characters a token is made of, between separators (space, quotes, ``&``, ``=``, ``,``, ``%XX``...). A
# run is masked when it is a registered secret, or when it starts with the first ``PREFIX`` characters
# of one (a token cut short in a message). Set lookups keep the cost per line flat however many
# secrets are registered; one big regex alternation cost 50 us a line at 200 secrets, and compiling it
# blocked the event loop for tens of milliseconds at every token refresh.
PREFIX = 24
KNOWN_LIMIT = 4096  # the newest secrets; older tokens have long expired
_RUN = re.compile(r"[A-Za-z0-9\-._~+/!*%]{6,}")
_known: dict[str, None] = {}  # registered runs, insertion-ordered: the oldest goes first
_keys: dict[str, int] = {}  # a registered run, cut to PREFIX -> how many registered runs share it
_lock = threading.Lock()


def remember_secret(value: str | None) -> None:
    """Mask this value wherever it appears as a run in later log lines (the newest ``KNOWN_LIMIT``), in
    its own case and lower-cased (endpoint keys are case-folded)."""
    if not value or len(value) < 6:
        return
    with _lock:
        for run in _pieces(value) + _pieces(value.lower()):  # with separators inside: piece by piece
            if run in _known:
                continue
            _known[run] = None
            key = run[:PREFIX]
            _keys[key] = _keys.get(key, 0) + 1
        while len(_known) > KNOWN_LIMIT:
            old = next(iter(_known))
            del _known[old]
            key = old[:PREFIX]
            _keys[key] -= 1
            if not _keys[key]:
                del _keys[key]


_SEPARATORS = re.compile(r"(/|%[0-9A-Fa-f]{2})")


def _pieces(text: str) -> list[str]:
    """The runs of a text, with ``/`` and percent-escapes taken as separators (``/api/v1/current/TOKEN``
    and ``%20TOKEN`` hold ``TOKEN``)."""
    out = []
    for run in _RUN.findall(text):
        if "%" not in run and "/" not in run:
            out.append(run)
            continue
        out.extend(piece for piece in _SEPARATORS.split(run)[::2] if len(piece) >= 6)
    return out


def _holds_known(run: str, keys: dict[str, int]) -> bool:
    if "%" not in run and "/" not in run:
        return run[:PREFIX] in keys
    return any(piece[:PREFIX] in keys for piece in _pieces(run))


def _mask_run(run: str, keys: dict[str, int]) -> str:
    if "%" not in run and "/" not in run:
        return MASK if run[:PREFIX] in keys else run
    parts = _SEPARATORS.split(run)  # pieces at even places, separators between them
    return "".join(MASK if i % 2 == 0 and len(p) >= 6 and p[:PREFIX] in keys else p for i, p in enumerate(parts))


def _mask_known(text: str) -> str:
    keys = _keys
    if not keys:
        return text
    for run in _RUN.findall(text):
        if _holds_known(run, keys):
            break
    else:
        return text  # no registered secret: the common case
    return _RUN.sub(lambda m: _mask_run(m.group(0), keys), text)


def redact_query(raw_query: str) -> str:
    if not raw_query or not _suspect(raw_query):
        return raw_query

    def mask(m: re.Match[str]) -> str:
        name = m.group(2)
        plain = name.lower().replace("%5f", "_")
        return f"{m.group(1)}{name}={MASK}" if plain in SECRET_NAMES else m.group(0)

    return _QUERY_PARAM.sub(mask, raw_query)


def scrub(text: str) -> str:
    if _suspect(text):  # else nothing that names a credential: the common case, kept cheap
        text = _AUTH.sub(lambda m: f"{m.group(1)} {MASK}", text)
        text = _PAIR.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
        text = _JSON_PAIR.sub(lambda m: f"{m.group(1)}{MASK}{m.group(3)}", text)
    return _mask_known(text)

