"""The sandbox server, driven over loopback by a real SMTP client (aiosmtplib)."""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import ipaddress
import logging
import mailbox
import re
import socket
import ssl
import stat
import time
from pathlib import Path

import aiosmtplib
import pytest
from cryptography import x509

from mailroom.clock import FakeClock
from mailroom.errors import InputError
from mailroom.sandbox import SandboxServer, ensure_certificate
from mailroom.sandbox.server import MAX_MESSAGE_SIZE
from mailroom.secrets import Secret
from tests.support.plugin import SANDBOX_PASSWORD, SANDBOX_USERNAME, connected
from tests.support.tls import TestCA

# Set, so the client never asks the resolver for our own name.
CLIENT_NAME = "client.example.com"
SIMPLE = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: hi\r\n\r\nHello\r\n"


def _client(server: SandboxServer, **options: object) -> aiosmtplib.SMTP:
    """A client that verifies the sandbox against its own CA."""
    settings: dict[str, object] = {
        "hostname": server.host,
        "port": server.port,
        "local_hostname": CLIENT_NAME,
        "start_tls": True,
        "validate_certs": True,
        "cert_bundle": str(server.ca_path),
        "timeout": 5,
    }
    settings.update(options)
    return aiosmtplib.SMTP(**settings)  # type: ignore[arg-type]


def _maildir_messages(server: SandboxServer) -> list[bytes]:
    box = mailbox.Maildir(server.maildir_path, create=False)
    return [box.get_bytes(key) for key in box.iterkeys()]


async def _send(
    server: SandboxServer,
    rcpts: list[str],
    data: bytes = SIMPLE,
    options: list[str] | None = None,
) -> str:
    async with connected(_client(server)) as client:
        await client.login(SANDBOX_USERNAME, SANDBOX_PASSWORD.reveal())
        errors, reply = await client.sendmail(
            "a@example.com", rcpts, data, mail_options=options or []
        )
    assert errors == {}
    return reply


# -- certificate ------------------------------------------------------------


def test_certificate_names_the_loopback_and_is_reused(tmp_path: Path) -> None:
    first = ensure_certificate(tmp_path)
    pem = first.cert.read_bytes()
    second = ensure_certificate(tmp_path)

    assert second == first
    assert second.cert.read_bytes() == pem
    cert = x509.load_pem_x509_certificate(pem)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert names.value.get_values_for_type(x509.DNSName) == ["localhost"]
    assert set(names.value.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }


def test_key_file_is_private(tmp_path: Path) -> None:
    paths = ensure_certificate(tmp_path)

    assert stat.S_IMODE(paths.key.stat().st_mode) == 0o600


def test_ca_may_only_vouch_for_loopback_names(tmp_path: Path) -> None:
    ca = x509.load_pem_x509_certificate(ensure_certificate(tmp_path).ca.read_bytes())

    constraints = ca.extensions.get_extension_for_class(x509.NameConstraints)
    assert constraints.critical
    assert x509.DNSName("localhost") in (constraints.value.permitted_subtrees or [])
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_mismatched_files_are_made_again(tmp_path: Path) -> None:
    first = ensure_certificate(tmp_path)
    old_ca = first.ca.read_bytes()
    other = ensure_certificate(tmp_path / "other")
    first.key.write_bytes(other.key.read_bytes())

    again = ensure_certificate(tmp_path)

    assert again.ca.read_bytes() != old_ca
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(again.cert, again.key)


# -- TLS and AUTH -----------------------------------------------------------


async def test_auth_is_neither_offered_nor_accepted_before_starttls(
    sandbox_server: SandboxServer,
) -> None:
    async with connected(_client(sandbox_server, start_tls=False)) as client:
        await client.ehlo()
        assert client.supports_extension("starttls")
        assert not client.supports_extension("auth")

        plain = base64.b64encode(b"\0sandbox\0" + SANDBOX_PASSWORD.reveal().encode())
        refused = await client.execute_command(b"AUTH", b"PLAIN", plain)

    assert refused.code == 530


async def test_auth_is_offered_after_starttls(sandbox_server: SandboxServer) -> None:
    async with connected(_client(sandbox_server)) as client:
        # RFC 3207 4.2: the client forgets what it knew and says EHLO again.
        await client.ehlo()
        assert client.get_transport_info("sslcontext") is not None
        assert client.supports_extension("auth")
        assert {"plain", "login"} <= set(client.supported_auth_methods)
        reply = await client.login(SANDBOX_USERNAME, SANDBOX_PASSWORD.reveal())

    assert reply.code == 235


async def test_client_with_another_ca_cannot_start_tls(
    sandbox_server: SandboxServer, tls_ca: TestCA, caplog: pytest.LogCaptureFixture
) -> None:
    client = _client(sandbox_server, start_tls=False, cert_bundle=str(tls_ca.ca_path))

    with caplog.at_level(logging.WARNING):
        async with connected(client):
            with pytest.raises(ssl.SSLCertVerificationError) as caught:
                await client.starttls()
        await _logged(caplog, "does it trust the sandbox CA?")

    assert caught.value.verify_message == "unable to get local issuer certificate"
    # The operator reads one line about it, not a traceback.
    assert not any(record.exc_info for record in caplog.records)


async def _logged(caplog: pytest.LogCaptureFixture, text: str) -> None:
    # The sandbox logs from its own thread, a moment after the client gave up.
    async with asyncio.timeout(5):
        while text not in caplog.text:
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("method", ["auth_plain", "auth_login"])
async def test_wrong_password_is_refused_with_535(
    sandbox_server: SandboxServer, method: str
) -> None:
    async with connected(_client(sandbox_server)) as client:
        await client.ehlo()
        with pytest.raises(aiosmtplib.SMTPAuthenticationError) as caught:
            await getattr(client, method)(SANDBOX_USERNAME, "not-the-password")
        mail = await client.execute_command(b"MAIL", b"FROM:<a@example.com>")

    assert caught.value.code == 535
    assert caught.value.message.startswith("5.7.8")
    assert mail.code == 530


async def test_password_never_reaches_the_logs(
    sandbox_server: SandboxServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await _send(sandbox_server, ["b@example.com"])

    password = SANDBOX_PASSWORD.reveal()
    encoded = base64.b64encode(f"\0sandbox\0{password}".encode()).decode()
    assert "sandbox delivered" in caplog.text
    assert password not in caplog.text
    assert encoded not in caplog.text


# -- delivery ---------------------------------------------------------------


async def test_message_lands_in_the_maildir_with_its_envelope(
    sandbox_server: SandboxServer,
) -> None:
    # The Bcc recipient is in the envelope only, never in the headers.
    rcpts = ["b@example.com", "hidden@example.com"]
    reply = await _send(sandbox_server, rcpts)

    assert reply.startswith("2.0.0")
    [stored] = _maildir_messages(sandbox_server)
    message = email.message_from_bytes(stored, policy=email.policy.default)
    assert message["Return-Path"] == "<a@example.com>"
    assert message.get_all("X-Sandbox-Rcpt") == [
        "<b@example.com>",
        "<hidden@example.com>",
    ]
    assert message["Subject"] == "hi"
    assert stored.endswith(b"\n\nHello\n")


async def test_delivered_lists_each_transaction_in_order(
    sandbox_server: SandboxServer,
) -> None:
    await _send(sandbox_server, ["b@example.com"])
    await _send(sandbox_server, ["c@example.com", "d@example.com"])

    delivered = sandbox_server.delivered()
    assert [m.envelope_rcpts for m in delivered] == [
        ("b@example.com",),
        ("c@example.com", "d@example.com"),
    ]
    assert delivered[0].envelope_from == "a@example.com"
    assert delivered[0].data == SIMPLE


async def test_japanese_utf8_message_survives(sandbox_server: SandboxServer) -> None:
    data = (
        "From: 山田太郎 <山田@example.com>\r\n"
        "To: 佐藤 <佐藤@example.com>\r\n"
        "Subject: ご提案のお礼\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
        "\r\n"
        "先日はお時間をいただき、ありがとうございました。\r\n"
    ).encode()

    async with connected(_client(sandbox_server)) as client:
        await client.ehlo()
        assert client.supports_extension("smtputf8")
        assert client.supports_extension("8bitmime")
        await client.login(SANDBOX_USERNAME, SANDBOX_PASSWORD.reveal())
        await client.sendmail(
            "山田@example.com",
            ["佐藤@example.com"],
            data,
            mail_options=["SMTPUTF8", "BODY=8BITMIME"],
        )

    [delivered] = sandbox_server.delivered()
    assert delivered.envelope_from == "山田@example.com"
    assert delivered.envelope_rcpts == ("佐藤@example.com",)
    assert delivered.data == data
    [stored] = _maildir_messages(sandbox_server)
    message = email.message_from_bytes(stored, policy=email.policy.default)
    assert message["X-Sandbox-Rcpt"] == "<佐藤@example.com>"
    assert message["Subject"] == "ご提案のお礼"
    assert "ありがとうございました" in message.get_content()


async def test_size_is_advertised_and_enforced(sandbox_server: SandboxServer) -> None:
    async with connected(_client(sandbox_server)) as client:
        await client.ehlo()
        advertised = client.esmtp_extensions["size"]
        await client.login(SANDBOX_USERNAME, SANDBOX_PASSWORD.reveal())
        too_big = f"FROM:<a@example.com> SIZE={MAX_MESSAGE_SIZE + 1}"
        refused = await client.execute_command(b"MAIL", too_big.encode())

    assert advertised == str(MAX_MESSAGE_SIZE)
    assert refused.code == 552


# -- rate limit and lifecycle -----------------------------------------------


async def test_per_minute_limit_throttles_then_recovers(tmp_path: Path) -> None:
    clock = FakeClock()
    server = SandboxServer(
        tmp_path, password=SANDBOX_PASSWORD, per_minute_limit=2, clock=clock
    )
    with server:
        await _send(server, ["b@example.com"])
        await _send(server, ["b@example.com"])
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as caught:
            await _send(server, ["b@example.com"])

        clock.advance(61)
        await _send(server, ["b@example.com"])

    assert caught.value.code == 451
    assert caught.value.message.startswith("4.7.1")
    assert len(server.delivered()) == 3


async def test_runs_on_the_current_event_loop(tmp_path: Path) -> None:
    async with SandboxServer(tmp_path, password=Secret("fake-password-2")) as server:
        port = server.port
        async with connected(_client(server)) as client:
            reply = await client.login(SANDBOX_USERNAME, "fake-password-2")

    assert port != 0
    assert reply.code == 235
    with pytest.raises(aiosmtplib.SMTPConnectError):
        await _client(server, start_tls=False).connect()


def test_stop_ends_open_connections(tmp_path: Path) -> None:
    server = SandboxServer(tmp_path, password=SANDBOX_PASSWORD)
    server.start()
    with socket.create_connection((server.host, server.port), timeout=5) as peer:
        greeting = peer.recv(1024)
        server.stop()
        closed = peer.recv(1024)

    assert greeting.startswith(b"220 ")
    assert closed == b""


def _read_reply(sock: socket.socket) -> bytes:
    """Read up to the last line of a reply (RFC 5321 4.2.1: code and space)."""
    data = b""
    while not re.search(rb"(?:^|\n)[0-9]{3} [^\n]*\n\Z", data):
        chunk = sock.recv(1024)
        if not chunk:
            break
        data += chunk
    return data


def test_stop_cuts_off_a_tls_peer_that_stays_silent(tmp_path: Path) -> None:
    server = SandboxServer(tmp_path, password=SANDBOX_PASSWORD)
    server.start()
    context = ssl.create_default_context(cafile=server.ca_path)
    with socket.create_connection((server.host, server.port), timeout=5) as raw:
        for command in (b"EHLO client.example.com\r\n", b"STARTTLS\r\n"):
            _read_reply(raw)
            raw.sendall(command)
        assert _read_reply(raw).startswith(b"220 ")
        with context.wrap_socket(raw, server_hostname=server.host):
            # The peer never reads, so it never answers the close_notify.
            started = time.monotonic()
            server.stop()
            took = time.monotonic() - started

    assert took < 5


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.1", "localhost"])
def test_only_loopback_addresses_are_accepted(tmp_path: Path, host: str) -> None:
    with pytest.raises(InputError, match="loopback"):
        SandboxServer(tmp_path, host=host, password=SANDBOX_PASSWORD)


def test_limit_below_one_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="per_minute_limit"):
        SandboxServer(tmp_path, password=SANDBOX_PASSWORD, per_minute_limit=0)
