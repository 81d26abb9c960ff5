"""Streaming replacement of Exact's absolute base URL by the proxy's own, in bodies and headers.

Contract
- ``LinkRewriter(upstream_base, public_base)`` replaces every occurrence of the upstream base URL
  (``https://start.exactonline.nl``), also in its JSON-escaped form (``https:\\/\\/start…``), by the
  public base URL. Nothing else in the body changes.
- ``feed(chunk)`` returns what can be sent now; ``close()`` returns the rest. A URL split across two
  chunks is still found: the rewriter holds back at most ``len(longest needle) - 1`` bytes, never the
  body. Output equals ``body.replace(...)`` of the whole body, whatever the chunking.
- ``BodyCodec`` undoes and redoes ``Content-Encoding: gzip`` or ``deflate`` around the rewriter, chunk
  by chunk, so compressed answers are rewritten too.
"""

from __future__ import annotations

import functools
import zlib


@functools.lru_cache(maxsize=256)
def _plan(upstream_base: str, public_base: str) -> tuple[dict[bytes, bytes], tuple[bytes, ...], int]:
    """What to replace by what, the needles, and how many bytes a chunk boundary may hide (computed
    once per pair of base URLs: a rewriter is made for every answer)."""
    old = upstream_base.rstrip("/").encode()
    new = public_base.rstrip("/").encode()
    pairs = {old: new, old.replace(b"/", b"\\/"): new.replace(b"/", b"\\/")}
    return pairs, tuple(pairs), max(len(n) for n in pairs) - 1


def plan(upstream_base: str, public_base: str) -> dict[bytes, bytes]:
    """The replacements for one pair of base URLs (cached), for ``replace_all``."""
    return _plan(upstream_base, public_base)[0]


def replace_all(pairs: dict[bytes, bytes], data: bytes) -> tuple[bytes, int]:
    """``data`` with every replacement made, and how many were made: a whole body in one pass."""
    n = 0
    for old, new in pairs.items():  # bytes.replace runs at memchr speed; no per-match Python
        found = data.count(old)
        if found:
            data = data.replace(old, new)
            n += found
    return data, n


class LinkRewriter:
    def __init__(self, upstream_base: str, public_base: str) -> None:
        self._map, self._needles, self._keep = _plan(upstream_base, public_base)
        self._buf = b""
        self.replaced = 0

    def rewrite_all(self, data: bytes) -> bytes:
        return self._replace(data)

    def feed(self, chunk: bytes) -> bytes:
        data = self._buf + chunk if self._buf else chunk
        cut = len(data) - self._keep
        if cut <= 0:
            self._buf = data
            return b""
        # A needle that starts before the cut but ends after it is taken whole; anything later waits.
        for needle in self._needles:
            at = data.find(needle, max(0, cut - self._keep), cut + len(needle))
            if at != -1 and at < cut:
                cut = max(cut, at + len(needle))
        self._buf = data[cut:]
        return self._replace(data[:cut] if cut < len(data) else data)

    def _replace(self, data: bytes) -> bytes:
        data, n = replace_all(self._map, data)
        self.replaced += n
        return data

    def close(self) -> bytes:
        rest, self._buf = self._buf, b""
        return self.rewrite_all(rest)

    def header(self, value: str) -> str:
        for old, new in self._map.items():
            value = value.replace(old.decode(), new.decode())
        return value


# Re-compression level: 1 costs a fifth of the CPU of level 6 for a body a few per cent larger, and the
# hop from the proxy to the tool is local.
LEVEL = 1


class BodyCodec:
    """Decode then re-encode a body chunk by chunk for ``gzip``/``deflate``; identity passes."""

    _d: zlib._Decompress | None
    _c: zlib._Compress | None

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        if encoding == "gzip":
            self._d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            self._c = zlib.compressobj(LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._d = zlib.decompressobj()
            self._c = zlib.compressobj(LEVEL, zlib.DEFLATED)
        else:
            self._d = self._c = None

    @staticmethod
    def supports(encoding: str) -> bool:
        return encoding in ("", "identity", "gzip", "deflate")

    def decode(self, chunk: bytes) -> bytes:
        return self._d.decompress(chunk) if self._d else chunk

    def decode_end(self) -> bytes:
        return self._d.flush() if self._d else b""

    def encode(self, data: bytes) -> bytes:
        return self._c.compress(data) if self._c else data

    def encode_end(self) -> bytes:
        return self._c.flush() if self._c else b""
