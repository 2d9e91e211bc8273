"""TLS for the manager: a self-signed certificate made at start, its SHA-256 fingerprint,
and SSL contexts — the server's, and a client's that trusts either a CA file or exactly
one pinned certificate fingerprint (how a node reaches a manager whose certificate is
self-signed). Verification is never silently off: a pinned context checks the peer's
certificate against the pin at the end of every handshake and fails the handshake on a
mismatch.
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


class TlsConfigError(ValueError):
    """A TLS option is unusable (a malformed fingerprint, both a CA file and a pin...)."""


class FingerprintMismatch(ssl.SSLCertVerificationError):
    """The peer's certificate is not the pinned one."""


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


def _colon_hex(digest: bytes) -> str:
    return ":".join(f"{b:02X}" for b in digest)


def fingerprint_sha256(cert: x509.Certificate | bytes) -> str:
    """SHA-256 of the certificate's DER form in colon hex ("AB:CD:..."); `cert` is a
    certificate object, PEM bytes or DER bytes."""
    if isinstance(cert, x509.Certificate):
        der = cert.public_bytes(serialization.Encoding.DER)
    elif cert.lstrip().startswith(b"-----BEGIN"):
        der = x509.load_pem_x509_certificate(cert).public_bytes(serialization.Encoding.DER)
    else:
        der = cert
    return _colon_hex(hashlib.sha256(der).digest())


def parse_fingerprint(text: str) -> bytes:
    """The 32 bytes of a SHA-256 fingerprint written in hex, with or without colons,
    in either case, optionally prefixed "sha256:"; TlsConfigError otherwise."""
    digits = text.strip()
    if digits.lower().startswith("sha256:"):
        digits = digits[len("sha256:") :]
    digits = digits.replace(":", "")
    try:
        digest = bytes.fromhex(digits)
    except ValueError:
        raise TlsConfigError(f"not a hex SHA-256 fingerprint: {text!r}") from None
    if len(digest) != 32:
        raise TlsConfigError(f"a SHA-256 fingerprint has 32 bytes, not {len(digest)}: {text!r}")
    return digest


def server_context(cert_file: str | os.PathLike[str], key_file: str | os.PathLike[str]) -> ssl.SSLContext:
    """The manager's server context: TLS 1.2 or later, the given certificate and key."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context


def _check_pin(peer_der: bytes | None, context: ssl.SSLContext) -> None:
    pinned: bytes = context.pinned_sha256  # type: ignore[attr-defined]
    if peer_der is None:
        raise FingerprintMismatch("the peer sent no certificate")
    actual = hashlib.sha256(peer_der).digest()
    if actual != pinned:
        raise FingerprintMismatch(
            f"certificate fingerprint {_colon_hex(actual)} is not the pinned {_colon_hex(pinned)}"
        )


class _PinnedSSLObject(ssl.SSLObject):
    """An SSLObject (asyncio's TLS) that checks the pin once the handshake completes."""

    def do_handshake(self) -> None:
        super().do_handshake()
        _check_pin(self.getpeercert(binary_form=True), self.context)


class _PinnedSSLSocket(ssl.SSLSocket):
    """An SSLSocket (blocking sockets) that checks the pin once the handshake completes."""

    def do_handshake(self, block: bool = False) -> None:
        super().do_handshake(block)
        _check_pin(self.getpeercert(binary_form=True), self.context)


class _PinnedContext(ssl.SSLContext):
    """A client context that trusts exactly one certificate, by its SHA-256 fingerprint:
    chain and hostname checks are replaced by the pin, which every handshake checks."""

    pinned_sha256: bytes

    sslobject_class = _PinnedSSLObject
    sslsocket_class = _PinnedSSLSocket


def client_context(*, ca_file: str | os.PathLike[str] | None = None, fingerprint: str | None = None) -> ssl.SSLContext:
    """A client context for reaching a manager: with `fingerprint`, trust exactly that
    certificate (pinning, for a self-signed one); with `ca_file`, verify the chain and
    the host name against that CA (or self-signed certificate) file; with neither, the
    system's CAs. Both at once is a TlsConfigError."""
    if ca_file is not None and fingerprint is not None:
        raise TlsConfigError("give a CA file or a fingerprint to pin, not both")
    if fingerprint is None:
        context = ssl.create_default_context(cafile=None if ca_file is None else os.fspath(ca_file))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context
    context = _PinnedContext(ssl.PROTOCOL_TLS_CLIENT)
    context.pinned_sha256 = parse_fingerprint(fingerprint)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the pin, checked after every handshake, verifies
    return context
