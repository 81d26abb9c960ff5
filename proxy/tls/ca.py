"""The local certificate authority: create or load it, and issue server certificates from it.

Contract
- ``LocalCA.create(directory, clock)`` writes ``ca.pem`` (certificate, world-readable: tools import it)
  and ``ca-key.pem`` (private key, mode 0600, created with O_EXCL so nothing else can have opened it).
  It refuses with ``CAExists`` when either file is there, unless ``force=True``; a forced create keeps
  the old pair as ``*.old``. Nothing is ever overwritten silently.
- ``LocalCA.load(directory, clock)`` reads the pair; ``CAMissing`` when absent, ``CAError`` when
  unreadable or when the key does not belong to the certificate. A key readable by group or others is
  logged as a warning.
- The CA is limited by X.509 name constraints to loopback (localhost, 127.0.0.0/8, ::1), the Exact
  Online host names and the ``permitted`` names given at creation. A leaked or trusted-by-accident CA
  key therefore cannot mint a certificate any client accepts for other sites.
- ``leaf(names)`` returns a server certificate (EC P-256, serverAuth, SAN = the names; IP literals
  become IP SANs) plus key and the CA in the chain, as PEM. Its subject's CN is the first DNS name;
  a leaf for IP addresses only has no CN (subject ``O=exact-proxy``): with no DNS name in the SAN,
  OpenSSL checks a CN such as ``127.0.0.1`` against the CA's DNS name constraints and fails the chain. Leaves are cached in memory and issued again
  when less than ``RENEW_BEFORE`` of their life is left. Leaves never touch the disk here.
- Every date comes from the injected clock.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import logging
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from proxy.clock import Clock
from proxy.policy.hosts import KNOWN_EXACT_HOSTS

log = logging.getLogger("exact_proxy.tls")

CERT_FILE = "ca.pem"
KEY_FILE = "ca-key.pem"
CA_LIFETIME = 10 * 365 * 86400.0
LEAF_LIFETIME = 90 * 86400.0
RENEW_BEFORE = 30 * 86400.0
BACKDATE = 2 * 86400.0          # tolerate clocks that run behind the proxy's
LOOPBACK_NAMES = ("localhost",)
LOOPBACK_NETS = ("127.0.0.0/8", "::1/128")


class CAError(Exception):
    """The local CA cannot be used; the message says what to do."""


class CAExists(CAError):
    pass


class CAMissing(CAError):
    pass


@dataclass(frozen=True)
class Leaf:
    names: tuple[str, ...]
    chain_pem: bytes      # leaf certificate, then the CA certificate
    key_pem: bytes
    not_after: float      # epoch seconds


def _when(epoch: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(int(epoch), tz=dt.UTC)


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name.strip("[]")))
    except ValueError:
        return x509.DNSName(name.lower())


class LocalCA:
    def __init__(self, directory: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate,
                 clock: Clock) -> None:
        self.directory = directory
        self.key = key
        self.cert = cert
        self.clock = clock
        self._leaves: dict[tuple[str, ...], Leaf] = {}

    # -- files ------------------------------------------------------------------------------------
    @property
    def cert_path(self) -> str:
        return os.path.join(self.directory, CERT_FILE)

    @property
    def key_path(self) -> str:
        return os.path.join(self.directory, KEY_FILE)

    @staticmethod
    def exists(directory: str) -> bool:
        return any(os.path.exists(os.path.join(directory, f)) for f in (CERT_FILE, KEY_FILE))

    @classmethod
    def create(cls, directory: str, clock: Clock, *, permitted: Iterable[str] = (),
               force: bool = False) -> LocalCA:
        cert_path, key_path = os.path.join(directory, CERT_FILE), os.path.join(directory, KEY_FILE)
        if cls.exists(directory):
            if not force:
                raise CAExists(f"a local CA already exists in {directory}; it was left untouched. Replace "
                               "it with --force (every tool that trusts the old one must then trust the new)")
            for path in (cert_path, key_path):
                if os.path.exists(path):
                    os.replace(path, path + ".old")
        os.makedirs(directory, mode=0o755, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        now = clock.time()
        host = os.uname().nodename if hasattr(os, "uname") else "localhost"
        name = x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "exact-proxy"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"exact-proxy local CA {host} {_when(now):%Y-%m-%d}"),
        ])
        permitted_names: list[x509.GeneralName] = [x509.DNSName(n) for n in (*LOOPBACK_NAMES, *sorted(KNOWN_EXACT_HOSTS))]
        permitted_names += [x509.IPAddress(ipaddress.ip_network(n)) for n in LOOPBACK_NETS]
        for extra in permitted:
            gn = _general_name(extra)
            if isinstance(gn, x509.IPAddress):
                gn = x509.IPAddress(ipaddress.ip_network(gn.value))
            if gn not in permitted_names:
                permitted_names.append(gn)
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (x509.CertificateBuilder()
                .subject_name(name).issuer_name(name)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(_when(now - BACKDATE))
                .not_valid_after(_when(now + CA_LIFETIME))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                             key_encipherment=False, data_encipherment=False,
                                             key_agreement=False, key_cert_sign=True, crl_sign=True,
                                             encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.NameConstraints(permitted_subtrees=permitted_names,
                                                    excluded_subtrees=None), critical=True)
                .add_extension(ski, critical=False)
                .sign(key, hashes.SHA256()))
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, key_pem)
        finally:
            os.close(fd)
        with open(cert_path, "wb") as fh:
            fh.write(cert.public_bytes(serialization.Encoding.PEM))
        return cls(directory, key, cert, clock)

    @classmethod
    def load(cls, directory: str, clock: Clock) -> LocalCA:
        cert_path, key_path = os.path.join(directory, CERT_FILE), os.path.join(directory, KEY_FILE)
        if not (os.path.exists(cert_path) and os.path.exists(key_path)):
            raise CAMissing(f"no local CA in {directory}: create one with 'exact-proxy ca init', then trust "
                            "it as 'exact-proxy ca show' explains")
        try:
            mode = os.stat(key_path).st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                log.warning("%s is readable by others (mode %o): chmod 600 it", key_path, mode & 0o777)
            with open(key_path, "rb") as fh:
                key = serialization.load_pem_private_key(fh.read(), password=None)
            with open(cert_path, "rb") as fh:
                cert = x509.load_pem_x509_certificate(fh.read())
        except (OSError, ValueError, TypeError) as exc:
            raise CAError(f"cannot read the local CA in {directory}: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
            raise CAError(f"{key_path} does not belong to {cert_path}")
        return cls(directory, key, cert, clock)

    # -- facts ------------------------------------------------------------------------------------
    def fingerprint(self) -> str:
        digest = hashlib.sha256(self.cert.public_bytes(serialization.Encoding.DER)).hexdigest().upper()
        return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))

    @property
    def subject(self) -> str:
        return self.cert.subject.rfc4514_string()

    @property
    def not_after(self) -> float:
        return self.cert.not_valid_after_utc.timestamp()

    def permits(self, name: str) -> bool:
        """Whether the CA's name constraints allow a certificate for ``name``."""
        try:
            nc = self.cert.extensions.get_extension_for_class(x509.NameConstraints).value
        except x509.ExtensionNotFound:
            return True
        gn = _general_name(name)
        for sub in nc.permitted_subtrees or ():
            if isinstance(gn, x509.IPAddress) and isinstance(sub, x509.IPAddress):
                net = sub.value  # a name constraint's IP is a network
                if isinstance(net, ipaddress.IPv4Network | ipaddress.IPv6Network) and gn.value in net:
                    return True
            elif isinstance(gn, x509.DNSName) and isinstance(sub, x509.DNSName):
                base = sub.value.lower().lstrip(".")
                if gn.value == base or gn.value.endswith("." + base):
                    return True
        return False

    # -- leaves -----------------------------------------------------------------------------------
    def leaf(self, names: Iterable[str]) -> Leaf:
        key_names = tuple(dict.fromkeys(n.lower().strip("[]") for n in names if n))
        if not key_names:
            raise ValueError("a certificate needs at least one name")
        now = self.clock.time()
        cached = self._leaves.get(key_names)
        if cached is not None and cached.not_after - now > RENEW_BEFORE:
            return cached
        refused = [n for n in key_names if not self.permits(n)]
        if refused:
            raise CAError(f"the local CA may not issue for {', '.join(refused)} (name constraints); "
                          "recreate it with 'exact-proxy ca init --force --permit NAME'")
        leaf = self._issue(key_names, now)
        self._leaves[key_names] = leaf
        return leaf

    def _issue(self, names: tuple[str, ...], now: float) -> Leaf:
        key = ec.generate_private_key(ec.SECP256R1())
        dns_first = next((n for n in names if isinstance(_general_name(n), x509.DNSName)), None)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_first)] if dns_first else
                            [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "exact-proxy")])
        not_after = min(now + LEAF_LIFETIME, self.not_after)
        ca_ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        cert = (x509.CertificateBuilder()
                .subject_name(subject)
                .issuer_name(self.cert.subject)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(_when(now - BACKDATE))
                .not_valid_after(_when(not_after))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                             key_encipherment=False, data_encipherment=False,
                                             key_agreement=False, key_cert_sign=False, crl_sign=False,
                                             encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .add_extension(x509.SubjectAlternativeName([_general_name(n) for n in names]), critical=False)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                               critical=False)
                .sign(self.key, hashes.SHA256()))
        chain = cert.public_bytes(serialization.Encoding.PEM) + self.cert.public_bytes(serialization.Encoding.PEM)
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        return Leaf(names=names, chain_pem=chain, key_pem=key_pem, not_after=not_after)
