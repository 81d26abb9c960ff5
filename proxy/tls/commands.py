"""``exact-proxy ca init`` and ``exact-proxy ca show``.

Contract
- The CA directory is ``--dir`` when given, else ``ca.dir`` of the policy (``--config``, default
  ``$EXACT_PROXY_CONFIG`` or ``./policies.yaml``; relative to the policy file), else ``./ca``.
- ``ca init`` creates the CA and exits 0; when one exists it changes nothing and exits 1, unless
  ``--force`` (the old pair is kept as ``*.old``). ``--permit NAME`` adds names (or IPs) the CA may vouch
  for besides loopback and the Exact hosts, e.g. a LAN name of the machine running the proxy.
- ``ca show`` prints the CA's facts and how to trust it (Python tools, Debian/Ubuntu, Windows) and
  exits 0; 1 when there is no CA.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from proxy.clock import SystemClock
from proxy.tls.ca import CAError, CAExists, LocalCA


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="ca_command", required=True)
    init = sub.add_parser("init", help="create the local CA (key readable by you only)")
    show = sub.add_parser("show", help="print the CA and how to make tools trust it")
    for p in (init, show):
        p.add_argument("--config", help="policy file whose ca.dir to use (default: $EXACT_PROXY_CONFIG or "
                       "./policies.yaml)")
        p.add_argument("--dir", help="CA directory (overrides the policy's ca.dir)")
    init.add_argument("--force", action="store_true", help="replace an existing CA (kept as *.old)")
    init.add_argument("--permit", action="append", default=[], metavar="NAME",
                      help="another host name or IP the CA may issue for (repeatable)")
    init.set_defaults(func=cmd_init)
    show.set_defaults(func=cmd_show)


def ca_dir(args: argparse.Namespace) -> str | None:
    if args.dir:
        return os.path.abspath(args.dir)
    from proxy.policy import PolicyError, load_policy

    path = args.config or os.environ.get("EXACT_PROXY_CONFIG") or "policies.yaml"
    if not os.path.exists(path):
        if args.config:
            print(f"exact-proxy: {path} not found", file=sys.stderr)
            return None
        return os.path.abspath("ca")
    try:
        return os.path.abspath(load_policy(path).ca.dir)
    except PolicyError as exc:
        print(f"exact-proxy: {path} is not a valid policy:\n{exc}", file=sys.stderr)
        return None


def cmd_init(args: argparse.Namespace) -> int:
    directory = ca_dir(args)
    if directory is None:
        return 2
    try:
        ca = LocalCA.create(directory, SystemClock(), permitted=args.permit, force=args.force)
    except CAExists as exc:
        print(f"exact-proxy: {exc}", file=sys.stderr)
        return 1
    except (CAError, OSError) as exc:
        print(f"exact-proxy: cannot create the CA: {exc}", file=sys.stderr)
        return 1
    print(f"created {ca.cert_path} (certificate) and {ca.key_path} (key, mode 0600)")
    print("next: make your tools trust it; 'exact-proxy ca show' explains how")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    directory = ca_dir(args)
    if directory is None:
        return 2
    try:
        ca = LocalCA.load(directory, SystemClock())
    except CAError as exc:
        print(f"exact-proxy: {exc}", file=sys.stderr)
        return 1
    print(instructions(ca))
    return 0


def _constraints(ca: LocalCA) -> str:
    try:
        nc = ca.cert.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return "any name"
    return ", ".join(str(getattr(n, "value", n)) for n in nc.permitted_subtrees or ())


def instructions(ca: LocalCA) -> str:
    pem, key = ca.cert_path, ca.key_path
    until = dt.datetime.fromtimestamp(ca.not_after, tz=dt.UTC).strftime("%Y-%m-%d")
    value = ca.cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    cn = value if isinstance(value, str) else value.decode()
    return f"""\
Local CA of exact-proxy
  certificate:  {pem}
  private key:  {key}   (keep it readable by you only: chmod 600)
  subject:      {ca.subject}
  SHA-256:      {ca.fingerprint()}
  SHA-1:        {ca.cert.fingerprint(hashes.SHA1()).hex().upper()}   (the thumbprint Windows shows)
  valid until:  {until}
  may vouch for: {_constraints(ca)}
  (X.509 name constraints: clients that honour them, such as OpenSSL/Python, Windows and browsers,
   accept it for no other site, even if its key leaked)

The proxy uses it for
  - HTTPS listeners (tls: true in policies.yaml): point the tool at https://localhost:8443;
  - CONNECT interception: run the tool with HTTPS_PROXY=http://localhost:8080 and leave its
    base URL at https://start.exactonline.nl (or .be, ...).
The tool must trust this CA. Pick what fits:

Python tools (requests, ossobv/exactonline and the Singer taps built on it, httpx, aiohttp, urllib):
  export SSL_CERT_FILE={pem}
  export REQUESTS_CA_BUNDLE={pem}
  These replace the default trust store for that process. If the tool also talks to other https
  sites directly, give it a bundle with both instead:
    cat /etc/ssl/certs/ca-certificates.crt {pem} > ~/exact-proxy-bundle.pem
    export SSL_CERT_FILE=~/exact-proxy-bundle.pem REQUESTS_CA_BUNDLE=~/exact-proxy-bundle.pem
Node.js tools:  export NODE_EXTRA_CA_CERTS={pem}
curl:           curl --cacert {pem} ...

Debian / Ubuntu system trust store (everything that uses it: curl, wget, apt, most non-Python tools):
  sudo cp {pem} /usr/local/share/ca-certificates/exact-proxy.crt
  sudo update-ca-certificates
  (requests still uses its own certifi bundle: add
   REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt for Python tools)
  To remove it: sudo rm /usr/local/share/ca-certificates/exact-proxy.crt && sudo update-ca-certificates --fresh

Windows (Excel add-in, Power Query, .NET tools), for the current user, no administrator needed:
  copy ca.pem to the Windows machine as exact-proxy-ca.crt, then in cmd or PowerShell:
    certutil -addstore -user Root exact-proxy-ca.crt
  or: certmgr.msc > Trusted Root Certification Authorities > Certificates > All Tasks > Import...
  Windows asks to confirm: the thumbprint it shows must be the SHA-1 above.
  To remove it: certutil -delstore -user Root "{cn}"
  The add-in then uses https://localhost:8443 (HTTPS listener), or the Windows proxy setting
  http://localhost:8080 (CONNECT interception).
"""
