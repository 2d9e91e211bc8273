"""TLS for the manager: a self-signed certificate made at start, its SHA-256 fingerprint,
and the server's SSL context. The client side (a context that trusts a CA file or exactly
one pinned fingerprint) lives in `unbroken.httpkit.tls`, where nodes and the SDK find it
without importing the manager; its names are re-exported here.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from unbroken.httpkit.tls import (
    FingerprintMismatch,
    TlsConfigError,
    client_context,
    colon_hex,
    parse_fingerprint,
)

__all__ = [
    "FingerprintMismatch",
    "SelfSignedCertificate",
    "TlsConfigError",
    "client_context",
    "create_self_signed",
    "fingerprint_sha256",
    "parse_fingerprint",
    "server_context",
]

DEFAULT_VALID_DAYS = 365


@dataclass(frozen=True, slots=True)
class SelfSignedCertificate:
    """A certificate and its private key (PEM), with the certificate's SHA-256
    fingerprint in colon hex (what clients pin, and what the manager prints)."""

    cert_pem: bytes
    key_pem: bytes
    fingerprint: str

    def write(self, directory: str | os.PathLike[str]) -> tuple[Path, Path]:
        """Write cert.pem and key.pem (owner-only) into `directory`; their paths."""
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        cert_path, key_path = folder / "cert.pem", folder / "key.pem"
        cert_path.write_bytes(self.cert_pem)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(self.key_pem)
        return cert_path, key_path


def _subject_names(host: str) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for name in ("localhost", "127.0.0.1", "::1", host):
        if not name or name in ("0.0.0.0", "::"):
            continue
        try:
            entry: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(name))
        except ValueError:
            entry = x509.DNSName(name)
        if entry not in names:
            names.append(entry)
    return names


def create_self_signed(
    host: str, *, valid_days: int = DEFAULT_VALID_DAYS, now: datetime.datetime | None = None
) -> SelfSignedCertificate:
    """A self-signed certificate (ECDSA P-256, SHA-256) for `host`, valid for
    `valid_days`, whose names are localhost, 127.0.0.1, ::1 and the host (a DNS name or
    an IP address; a wildcard listen address adds nothing)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = now or datetime.datetime.now(datetime.timezone.utc)
    common_name = host if host and host not in ("0.0.0.0", "::") else "localhost"
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64]),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "unbroken stream manager"),
        ]
    )
    public_key = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=valid_days))
        .add_extension(x509.SubjectAlternativeName(_subject_names(host)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False)
        .sign(key, hashes.SHA256())
    )
    return SelfSignedCertificate(
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        fingerprint=fingerprint_sha256(cert),
    )


def fingerprint_sha256(cert: x509.Certificate | bytes) -> str:
    """SHA-256 of the certificate's DER form in colon hex ("AB:CD:..."); `cert` is a
    certificate object, PEM bytes or DER bytes."""
    if isinstance(cert, x509.Certificate):
        der = cert.public_bytes(serialization.Encoding.DER)
    elif cert.lstrip().startswith(b"-----BEGIN"):
        der = x509.load_pem_x509_certificate(cert).public_bytes(serialization.Encoding.DER)
    else:
        der = cert
    return colon_hex(hashlib.sha256(der).digest())


def server_context(cert_file: str | os.PathLike[str], key_file: str | os.PathLike[str]) -> ssl.SSLContext:
    """The manager's server context: TLS 1.2 or later, the given certificate and key."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context
