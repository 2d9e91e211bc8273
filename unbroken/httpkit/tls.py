"""Client-side TLS trust for a stream manager, shared by everything that reaches one (a
node registering, the Python SDK asking for routes, tools): an SSL context that trusts
either a CA file or exactly one pinned certificate (its SHA-256 fingerprint, how a
self-signed manager is trusted). Verification is never silently off: a pinned context
checks the peer's certificate against the pin at the end of every handshake and fails the
handshake on a mismatch.

Only the standard library here: a client need not install what the manager uses to make
certificates (`unbroken.manager.tls` does that, and re-exports these names).
"""

from __future__ import annotations

import hashlib
import os
import ssl

__all__ = [
    "FingerprintMismatch",
    "TlsConfigError",
    "client_context",
    "colon_hex",
    "parse_fingerprint",
]


class TlsConfigError(ValueError):
    """A TLS option is unusable (a malformed fingerprint, both a CA file and a pin...)."""


class FingerprintMismatch(ssl.SSLCertVerificationError):
    """The peer's certificate is not the pinned one."""


def colon_hex(digest: bytes) -> str:
    """Bytes as upper-case colon hex ("AB:CD:..."), how fingerprints are written."""
    return ":".join(f"{b:02X}" for b in digest)


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


def _check_pin(peer_der: bytes | None, context: ssl.SSLContext) -> None:
    pinned: bytes = context.pinned_sha256  # type: ignore[attr-defined]
    if peer_der is None:
        raise FingerprintMismatch("the peer sent no certificate")
    actual = hashlib.sha256(peer_der).digest()
    if actual != pinned:
        raise FingerprintMismatch(
            f"certificate fingerprint {colon_hex(actual)} is not the pinned {colon_hex(pinned)}"
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
