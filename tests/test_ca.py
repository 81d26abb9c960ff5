"""The local CA: files and permissions, no silent overwrite, leaves, name constraints, the ca commands."""

from __future__ import annotations

import os
import stat

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from proxy.cli import main
from proxy.clock import ManualClock, SystemClock
from proxy.tls.ca import CERT_FILE, KEY_FILE, LEAF_LIFETIME, CAError, CAExists, CAMissing, LocalCA


def test_key_file_is_owner_only_even_with_a_careless_umask(tmp_path):
    old = os.umask(0)
    try:
        ca = LocalCA.create(str(tmp_path / "ca"), SystemClock())
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(ca.key_path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(ca.cert_path).st_mode) & 0o044  # the certificate is meant to be shared
    assert b"PRIVATE KEY" in open(ca.key_path, "rb").read()
    assert b"PRIVATE" not in open(ca.cert_path, "rb").read()


def test_create_twice_refuses_and_changes_nothing(tmp_path):
    d = str(tmp_path / "ca")
    LocalCA.create(d, SystemClock())
    before = {f: open(os.path.join(d, f), "rb").read() for f in (CERT_FILE, KEY_FILE)}
    with pytest.raises(CAExists):
        LocalCA.create(d, SystemClock())
    assert {f: open(os.path.join(d, f), "rb").read() for f in (CERT_FILE, KEY_FILE)} == before


def test_force_keeps_the_old_pair(tmp_path):
    d = str(tmp_path / "ca")
    old = LocalCA.create(d, SystemClock())
    new = LocalCA.create(d, SystemClock(), force=True)
    assert new.fingerprint() != old.fingerprint()
    kept = x509.load_pem_x509_certificate(open(os.path.join(d, CERT_FILE + ".old"), "rb").read())
    assert kept == old.cert
    assert os.path.exists(os.path.join(d, KEY_FILE + ".old"))
    assert LocalCA.load(d, SystemClock()).fingerprint() == new.fingerprint()


def test_load_missing_and_mismatched(tmp_path):
    with pytest.raises(CAMissing, match="ca init"):
        LocalCA.load(str(tmp_path / "nothing"), SystemClock())
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    LocalCA.create(a, SystemClock())
    LocalCA.create(b, SystemClock())
    os.replace(os.path.join(b, KEY_FILE), os.path.join(a, KEY_FILE))
    with pytest.raises(CAError, match="does not belong"):
        LocalCA.load(a, SystemClock())


def test_ca_certificate_is_a_constrained_ca(tmp_path):
    ca = LocalCA.create(str(tmp_path / "ca"), SystemClock(), permitted=["accounting-pc", "192.168.1.20"])
    bc = ca.cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    nc = ca.cert.extensions.get_extension_for_class(x509.NameConstraints)
    assert nc.critical
    for name in ("localhost", "127.0.0.1", "::1", "start.exactonline.nl", "start.exactonline.co.uk",
                 "accounting-pc", "192.168.1.20"):
        assert ca.permits(name), name
    for name in ("example.com", "exactonline.nl.evil.example", "10.0.0.1", "notlocalhost"):
        assert not ca.permits(name), name
    with pytest.raises(CAError, match="name constraints"):
        ca.leaf(["www.google.com"])


def test_leaf_names_usage_and_cache(tmp_path):
    clock = ManualClock(start=SystemClock().time())
    ca = LocalCA.create(str(tmp_path / "ca"), clock)
    leaf = ca.leaf(["localhost", "127.0.0.1", "::1"])
    assert ca.leaf(["localhost", "127.0.0.1", "::1"]) is leaf  # cached in memory
    cert = x509.load_pem_x509_certificates(leaf.chain_pem)
    assert len(cert) == 2 and cert[1] == ca.cert
    san = cert[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    eku = cert[0].extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not cert[0].extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert sorted(os.listdir(tmp_path / "ca")) == [KEY_FILE, CERT_FILE]  # leaves stay in memory


async def test_leaf_is_renewed_before_it_expires(tmp_path):
    clock = ManualClock(start=SystemClock().time())
    ca = LocalCA.create(str(tmp_path / "ca"), clock)
    first = ca.leaf(["start.exactonline.nl"])
    await clock.advance(LEAF_LIFETIME / 2)
    assert ca.leaf(["start.exactonline.nl"]) is first
    await clock.advance(LEAF_LIFETIME / 2 - 86400)  # one day left: renewed
    second = ca.leaf(["start.exactonline.nl"])
    assert second is not first and second.not_after > first.not_after


def test_cli_init_twice_and_show(tmp_path, capsys):
    d = str(tmp_path / "ca")
    assert main(["ca", "init", "--dir", d]) == 0
    key = open(os.path.join(d, KEY_FILE), "rb").read()
    assert main(["ca", "init", "--dir", d]) == 1
    err = capsys.readouterr().err
    assert "already exists" in err and "--force" in err
    assert open(os.path.join(d, KEY_FILE), "rb").read() == key
    assert main(["ca", "show", "--dir", d]) == 0
    out = capsys.readouterr().out
    for needle in ("SSL_CERT_FILE=", "REQUESTS_CA_BUNDLE=", "/usr/local/share/ca-certificates",
                   "update-ca-certificates", "certutil -addstore -user Root", "certmgr", "HTTPS_PROXY"):
        assert needle in out, needle
    assert os.path.join(d, CERT_FILE) in out
    assert "PRIVATE KEY" not in out


def test_cli_uses_the_policy_ca_dir(tmp_path, capsys):
    (tmp_path / "policies.yaml").write_text("ca: {dir: mine}\n")
    assert main(["ca", "init", "--config", str(tmp_path / "policies.yaml")]) == 0
    assert (tmp_path / "mine" / CERT_FILE).exists()
    assert main(["ca", "show", "--dir", str(tmp_path / "nothing")]) == 1
    assert "ca init" in capsys.readouterr().err
