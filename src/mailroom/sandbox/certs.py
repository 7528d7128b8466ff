"""The sandbox server's own TLS certificate, made once and kept on disk.

``ensure_certificate`` creates a private CA and a server certificate for the
loopback names (``localhost``, ``127.0.0.1``, ``::1``).  Clients trust the
sandbox by loading the CA file; verification is never turned off.

Two choices keep the CA harmless if someone adds it to a trust store: it is
name-constrained to the loopback names (RFC 5280 4.2.1.10), and its private key
is never written to disk, so it cannot sign anything after the first run.  When
the server certificate nears its end, both are made afresh.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = logging.getLogger("mailroom.sandbox")

CA_FILE: Final = "sandbox-ca.pem"
CERT_FILE: Final = "sandbox-cert.pem"
KEY_FILE: Final = "sandbox-key.pem"

DNS_NAMES: Final = ("localhost",)
IP_ADDRESSES: Final = (
    ipaddress.ip_address("127.0.0.1"),
    ipaddress.ip_address("::1"),
)

# Apple platforms refuse TLS server certificates valid for more than 825 days;
# a year keeps well inside that and any other client's limit.
LIFETIME: Final = timedelta(days=365)
# Renew a little before the end so a running demo never meets an expired cert.
RENEW_BEFORE: Final = timedelta(days=7)
# Allow for clocks that run slightly behind ours.
BACKDATE: Final = timedelta(minutes=5)


def tls_folder(sandbox_folder: Path) -> Path:
    """Where a sandbox kept in ``sandbox_folder`` keeps its certificates."""
    return sandbox_folder / "tls"


@dataclass(frozen=True)
class CertPaths:
    """Where the sandbox's CA, server certificate and server key live."""

    ca: Path
    cert: Path
    key: Path


def ensure_certificate(folder: Path) -> CertPaths:
    """Return the sandbox certificate files in ``folder``, creating them if needed.

    Files that exist, match each other and stay valid for more than a week are
    reused, so clients that already trust ``ca`` keep working across restarts.
    """
    paths = CertPaths(folder / CA_FILE, folder / CERT_FILE, folder / KEY_FILE)
    if _usable(paths):
        return paths

    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    _create(paths)
    log.info("sandbox certificate created in %s", folder)
    return paths


def _usable(paths: CertPaths) -> bool:
    """Whether the stored files are present, paired and not about to expire."""
    try:
        ca = x509.load_pem_x509_certificate(paths.ca.read_bytes())
        cert = x509.load_pem_x509_certificate(paths.cert.read_bytes())
        key = serialization.load_pem_private_key(paths.key.read_bytes(), None)
    except (OSError, ValueError):
        return False

    fresh = cert.not_valid_after_utc - RENEW_BEFORE > datetime.now(UTC)
    ours = _public_bytes(key.public_key())
    paired = ours is not None and ours == _public_bytes(cert.public_key())
    return fresh and paired and cert.issuer == ca.subject


def _public_bytes(key: object) -> bytes | None:
    """An EC public key in a comparable form; None for any other kind."""
    if not isinstance(key, ec.EllipticCurvePublicKey):
        return None
    return key.public_bytes(
        serialization.Encoding.DER,
        serialization.PublicFormat.SubjectPublicKeyInfo,
    )


def _create(paths: CertPaths) -> None:
    """Make a fresh CA and server certificate and write them out."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _ca_certificate(ca_key, now)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = _server_certificate(server_key, ca_cert, ca_key, now)

    # The key goes first, so that a crash part-way leaves files that do not
    # pair up and are therefore made again on the next start.
    key_pem = server_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_private(paths.key, key_pem)
    _write(paths.cert, server_cert.public_bytes(serialization.Encoding.PEM))
    _write(paths.ca, ca_cert.public_bytes(serialization.Encoding.PEM))


def _ca_certificate(key: ec.EllipticCurvePrivateKey, now: datetime) -> x509.Certificate:
    """A CA that may only vouch for loopback names (RFC 5280 4.2.1.10)."""
    name = _name("mailroom sandbox CA")
    permitted: list[x509.GeneralName] = [x509.DNSName(n) for n in DNS_NAMES]
    permitted += [x509.IPAddress(ipaddress.ip_network(ip)) for ip in IP_ADDRESSES]
    public = key.public_key()
    return (
        _base_builder(name, name, public, now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.NameConstraints(permitted, None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(public),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )


def _server_certificate(
    key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    now: datetime,
) -> x509.Certificate:
    """A server certificate for the loopback names, signed by the sandbox CA."""
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in DNS_NAMES]
    names += [x509.IPAddress(ip) for ip in IP_ADDRESSES]
    builder = _base_builder(_name("localhost"), ca_cert.subject, key.public_key(), now)
    return (
        builder.add_extension(
            x509.BasicConstraints(ca=False, path_length=None), critical=True
        )
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )


def _base_builder(
    subject: x509.Name,
    issuer: x509.Name,
    public: ec.EllipticCurvePublicKey,
    now: datetime,
) -> x509.CertificateBuilder:
    """Fields every certificate here shares."""
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + LIFETIME)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(public), critical=False
        )
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mailroom sandbox"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    """Signing certificates for the CA, handshake signatures for the server."""
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _write_private(path: Path, data: bytes) -> None:
    """Write a file readable by the owner only (mode 0600), replacing any old one."""
    _write(path, data, mode=0o600)


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write through a temporary file so readers never see half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(tmp, path)
