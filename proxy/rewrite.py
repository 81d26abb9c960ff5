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

import re
import zlib


class LinkRewriter:
    def __init__(self, upstream_base: str, public_base: str) -> None:
        old = upstream_base.rstrip("/").encode()
        new = public_base.rstrip("/").encode()
        pairs = {old: new, old.replace(b"/", b"\\/"): new.replace(b"/", b"\\/")}
        self._map = pairs
        self._needles = tuple(pairs)
        self._re = re.compile(b"|".join(re.escape(n) for n in sorted(pairs, key=len, reverse=True)))
        self._keep = max(len(n) for n in pairs) - 1
        self._buf = b""
        self.replaced = 0

    def rewrite_all(self, data: bytes) -> bytes:
        if not any(n in data for n in self._needles):
            return data
        out, count = self._re.subn(lambda m: self._map[m.group(0)], data)
        self.replaced += count
        return out

    def feed(self, chunk: bytes) -> bytes:
        data = self._buf + chunk if self._buf else chunk
        cut = len(data) - self._keep
        if cut <= 0:
            self._buf = data
            return b""
        out: list[bytes] = []
        pos = 0
        for m in self._re.finditer(data):
            if m.start() >= cut:
                break
            out.append(data[pos:m.start()])
            out.append(self._map[m.group(0)])
            pos = m.end()
            self.replaced += 1
        cut = max(cut, pos)
        out.append(data[pos:cut])
        self._buf = data[cut:]
        return b"".join(out)

    def close(self) -> bytes:
        rest, self._buf = self._buf, b""
        return self.rewrite_all(rest)

    def header(self, value: str) -> str:
        for old, new in self._map.items():
            value = value.replace(old.decode(), new.decode())
        return value


class BodyCodec:
    """Decode then re-encode a body chunk by chunk for ``gzip``/``deflate``; identity passes."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        if encoding == "gzip":
            self._d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            self._c = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._d = zlib.decompressobj()
            self._c = zlib.compressobj(6, zlib.DEFLATED)
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
