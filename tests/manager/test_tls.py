"""TLS: the self-signed certificate, its fingerprint, and client contexts that pin it or
trust it as a CA file — over asyncio, aiohttp and blocking sockets."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import ssl
import stat

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from unbroken.manager.tls import (
    FingerprintMismatch,
    TlsConfigError,
    client_context,
    create_self_signed,
    fingerprint_sha256,
    parse_fingerprint,
    server_context,
)

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(scope="module")
def certificate():
    return create_self_signed("manager.example")


@pytest.fixture(scope="module")
def cert_files(certificate, tmp_path_factory):
    return certificate.write(tmp_path_factory.mktemp("tls"))


@pytest.fixture
async def tls_server(cert_files):
    """An asyncio TLS echo server on a free port with the self-signed certificate."""

    async def echo(reader, writer):
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=server_context(*cert_files))
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


def test_certificate_names_fingerprint_and_files(certificate, cert_files):
    cert = x509.load_pem_x509_certificate(certificate.cert_pem)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {"localhost", "manager.example"}
    assert {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}
    der = cert.public_bytes(serialization.Encoding.DER)
    assert certificate.fingerprint == ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())
    assert fingerprint_sha256(certificate.cert_pem) == fingerprint_sha256(der) == certificate.fingerprint
    cert_path, key_path = cert_files
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert cert_path.read_bytes() == certificate.cert_pem


def test_an_ip_host_is_an_ip_name_and_a_wildcard_adds_none():
    cert = x509.load_pem_x509_certificate(create_self_signed("10.1.2.3").cert_pem)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "10.1.2.3" in {str(ip) for ip in names.get_values_for_type(x509.IPAddress)}
    cert = x509.load_pem_x509_certificate(create_self_signed("0.0.0.0").cert_pem)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}


def test_parse_fingerprint_forms(certificate):
    digest = parse_fingerprint(certificate.fingerprint)
    assert len(digest) == 32
    assert parse_fingerprint(certificate.fingerprint.replace(":", "").lower()) == digest
    assert parse_fingerprint("sha256:" + certificate.fingerprint) == digest
    for bad in ("", "zz", "AB:CD", certificate.fingerprint + ":00"):
        with pytest.raises(TlsConfigError):
            parse_fingerprint(bad)


def test_a_ca_file_and_a_pin_together_are_refused(cert_files, certificate):
    with pytest.raises(TlsConfigError):
        client_context(ca_file=cert_files[0], fingerprint=certificate.fingerprint)


async def _echo(port: int, context: ssl.SSLContext, server_hostname: str = "localhost") -> bytes:
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname=server_hostname), 5
    )
    writer.write(b"hello\n")
    line = await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    return line


async def test_pinned_fingerprint_connects(tls_server, certificate):
    assert await _echo(tls_server, client_context(fingerprint=certificate.fingerprint)) == b"hello\n"


async def test_wrong_pin_fails_the_handshake(tls_server):
    other = create_self_signed("other")
    with pytest.raises(FingerprintMismatch):
        await _echo(tls_server, client_context(fingerprint=other.fingerprint))


@pytest.mark.parametrize("hostname", ["localhost", "127.0.0.1", "manager.example"])
async def test_ca_file_verifies_chain_and_host(tls_server, cert_files, hostname):
    context = client_context(ca_file=cert_files[0])
    context.verify_flags |= ssl.VERIFY_X509_STRICT  # the stricter checks newer Pythons apply
    assert await _echo(tls_server, context, hostname) == b"hello\n"


async def test_ca_file_refuses_another_host_and_default_cas_refuse_self_signed(tls_server, cert_files):
    with pytest.raises(ssl.SSLCertVerificationError):
        await _echo(tls_server, client_context(ca_file=cert_files[0]), "not-the-manager")
    with pytest.raises(ssl.SSLCertVerificationError):
        await _echo(tls_server, client_context())


async def test_aiohttp_client_with_a_pinned_context(cert_files, certificate):
    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context(*cert_files))
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            pinned = client_context(fingerprint=certificate.fingerprint)
            async with http.get(f"https://127.0.0.1:{port}/healthz", ssl=pinned) as response:
                assert await response.json() == {"ok": True}
            wrong = client_context(fingerprint=create_self_signed("x").fingerprint)
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await http.get(f"https://127.0.0.1:{port}/healthz", ssl=wrong)
    finally:
        await runner.cleanup()


async def test_blocking_socket_with_a_pinned_context(tls_server, certificate):
    def connect(fingerprint: str) -> None:
        context = client_context(fingerprint=fingerprint)
        with socket.create_connection(("127.0.0.1", tls_server), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"x\n")

    await asyncio.to_thread(connect, certificate.fingerprint)
    with pytest.raises(FingerprintMismatch):
        await asyncio.to_thread(connect, create_self_signed("y").fingerprint)
