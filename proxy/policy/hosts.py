"""Where requests come in and where they may go: the local listeners and the Exact hosts upstream,
and how ``policies.yaml`` declares them (sections ``upstreams`` and ``listeners``).

Contract
- ``Upstream``: one Exact Online host the proxy may forward to (``base_url`` is scheme and host only);
  ``is_known_exact_host`` tells a real Exact country host from, say, the emulator.
- ``Listener``: one local address and the upstream its requests go to.
- ``read_upstreams(r)`` / ``read_listeners(r, upstreams)`` read the sections with a ``policy.reader.Reader``,
  recording every problem (file, line, key, reason) on it; with no section, one NL upstream and one
  listener on 127.0.0.1:8080.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from proxy.exact.client_id import normal_client_id
from proxy.policy.reader import Reader

KNOWN_EXACT_HOSTS = frozenset({
    "start.exactonline.nl", "start.exactonline.be", "start.exactonline.de", "start.exactonline.co.uk",
    "start.exactonline.com", "start.exactonline.fr", "start.exactonline.es",
})


@dataclass(frozen=True)
class Upstream:
    """One Exact Online host the proxy may forward to."""

    name: str
    base_url: str                  # scheme://host[:port], no path, no trailing slash
    ca_bundle: str | None = None   # verify the upstream's certificate against this file (default: system)
    connect_to: str | None = None  # "host:port" to connect to instead; Host, SNI and verification keep base_url's

    host: str = field(init=False, repr=False, compare=False)
    authority: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parts = urlsplit(self.base_url)
        object.__setattr__(self, "host", (parts.hostname or "").lower())
        object.__setattr__(self, "authority", parts.netloc.lower())

    @property
    def is_known_exact_host(self) -> bool:
        return self.host in KNOWN_EXACT_HOSTS


@dataclass(frozen=True)
class Listener:
    """A local address; every request arriving on it goes to ``upstream`` unless it names another
    configured Exact host (absolute-form request line, or a ``Host`` header that is an Exact host)."""

    name: str
    host: str = "127.0.0.1"
    port: int = 8080
    upstream: str = "nl"
    public_base_url: str | None = None   # how clients reach this listener; default: from the Host header
    tls: bool = False                    # HTTPS, with a certificate from the local CA (or cert_file)
    cert_file: str | None = None         # your own certificate chain instead of the local CA's
    key_file: str | None = None
    tls_names: tuple[str, ...] = ()      # names besides localhost/127.0.0.1/::1 for the local CA's certificate
    app: str | None = None               # the Exact app (client id, normal form) of calls whose token is unknown


def read_upstreams(r: Reader) -> dict[str, Upstream]:
    items = r.items("upstreams")
    if not items:
        return {"nl": Upstream("nl", "https://start.exactonline.nl")}
    out: dict[str, Upstream] = {}
    for name, u in items:
        url = u.text("base_url")
        ca = u.text("ca_bundle", None)
        connect_to = u.text("connect_to", None)
        u.finish()
        if url is None:
            continue
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            u.problem(("base_url",), f"must be an http(s) URL like https://start.exactonline.nl, got {url!r}")
            continue
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            u.problem(("base_url",), "must be scheme and host only (no path, query or fragment)")
            continue
        if connect_to is not None:
            c_host, _, c_port = connect_to.rpartition(":")
            if not c_host or not c_port.isdigit() or not 0 < int(c_port) < 65536:
                u.problem(("connect_to",), f"must be host:port, like 127.0.0.1:9443, got {connect_to!r}")
                continue
        out[name] = Upstream(name, f"{parts.scheme}://{parts.netloc}".lower(), ca, connect_to)
    return out


def read_listeners(r: Reader, upstreams: dict[str, Upstream]) -> tuple[Listener, ...]:
    seq = r.sequence("listeners")
    if seq is None:
        first = next(iter(upstreams), "nl")
        return (Listener(name="default", upstream=first),)
    out: list[Listener] = []
    ports: set[tuple[str, int]] = set()
    names: set[str] = set()
    for i, lr in enumerate(seq):
        name = lr.text("name", f"listener{i}")
        host = lr.text("host", "127.0.0.1")
        port = lr.integer("port", 8080, minimum=0, maximum=65535)
        up = lr.text("upstream", next(iter(upstreams), "nl"))
        public = lr.text("public_base_url", None)
        tls = lr.boolean("tls", False)
        cert_file, key_file = lr.text("cert_file", None), lr.text("key_file", None)
        tls_names = lr.strings("tls_names", ())
        app = normal_client_id(lr.text("app", None)) or None
        lr.finish()
        if (cert_file is None) != (key_file is None):
            lr.problem(("cert_file",), "cert_file and key_file go together")
        if (cert_file or tls_names) and not tls:
            lr.problem(("tls",), "cert_file, key_file and tls_names need tls: true")
        if up not in upstreams:
            lr.problem(("upstream",), f"names no configured upstream (known: {', '.join(upstreams)})")
        if host:
            try:
                ipaddress.ip_address(host)
            except ValueError:
                if host != "localhost":
                    lr.problem(("host",), f"must be an IP address to bind, got {host!r}")
        if public is not None:
            p = urlsplit(public)
            if p.scheme not in ("http", "https") or not p.netloc:
                lr.problem(("public_base_url",), f"must be a URL like http://localhost:8080, got {public!r}")
            public = public.rstrip("/")
        if name in names:
            lr.problem(("name",), f"listener name {name!r} is used twice")
        names.add(name)
        if port and (host, port) in ports:
            lr.problem(("port",), f"{host}:{port} is used by two listeners")
        ports.add((host, port))
        out.append(Listener(name=name, host=host, port=port, upstream=up, public_base_url=public, tls=tls,
                            cert_file=cert_file, key_file=key_file, tls_names=tls_names, app=app))
    if not out:
        r.problem(("listeners",), "needs at least one listener")
    return tuple(out)
