"""``channel test``'s probe against real SMTP servers on loopback.

The sandbox and the fault server speak STARTTLS; an aiosmtpd ``Controller``
with an SSL context plays an implicit-TLS port (RFC 8314 3.3).  Every server
is started here, on 127.0.0.1, and certificates come from trustme.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from mailroom.channels.model import Security
from mailroom.delivery.probe import Direction, ProbeReport, probe, render_transcript
from mailroom.delivery.transport import Endpoint
from mailroom.errors import InputError
from mailroom.sandbox import SandboxServer
from mailroom.sandbox.server import MAX_MESSAGE_SIZE
from mailroom.secrets import PLACEHOLDER, Secret
from tests.support.faults import FaultServer
from tests.support.plugin import (
    FAULT_PASSWORD,
    FAULT_USERNAME,
    SANDBOX_PASSWORD,
    SANDBOX_USERNAME,
)
from tests.support.tls import TestCA, make_test_ca

# Set, so the client never asks the resolver for our own name.
CLIENT_NAME: Final = "client.example.com"
SENDER: Final = "sales@example.com"
# Short, so that the tests that wait for a greeting stay quick.
WAIT: Final = 1.0

EXCHANGE_AUTH_OFF: Final = (
    "535 5.7.139 Authentication unsuccessful, "
    "SmtpClientAuthentication is disabled for the Tenant."
)
SEND_AS_DENIED: Final = (
    "550 5.7.60 SMTP; Client does not have permissions to send as this sender"
)
PROBE_VERBS: Final = [
    "EHLO",
    "STARTTLS",
    "EHLO",
    "AUTH",
    "MAIL",
    "RCPT",
    "RSET",
    "QUIT",
]


# -- helpers --------------------------------------------------------------


def _endpoint(
    server: FaultServer | SandboxServer | _ImplicitTls,
    security: Security,
    ca_bundle: Path | None,
    **options: Any,
) -> Endpoint:
    settings: dict[str, Any] = {"timeout": WAIT * 5}
    settings.update(options)
    return Endpoint(
        server.host,
        server.port,
        security,
        ca_bundle=str(ca_bundle) if ca_bundle else None,
        **settings,
    )


def _fault_endpoint(server: FaultServer, ca: TestCA, **options: Any) -> Endpoint:
    settings: dict[str, Any] = {"username": FAULT_USERNAME, "secret": FAULT_PASSWORD}
    settings.update(options)
    return _endpoint(server, Security.starttls, ca.ca_path, **settings)


async def _probe(endpoint: Endpoint, recipient: str | None = None) -> ProbeReport:
    return await probe(endpoint, SENDER, recipient, local_hostname=CLIENT_NAME)


def _secret_forms(username: str, password: Secret) -> list[str]:
    """The password and every base64 form AUTH PLAIN or LOGIN would send."""
    value = password.reveal()
    encoded = [value, f"\0{username}\0{value}", f"{username}\0{username}\0{value}"]
    forms = [base64.b64encode(text.encode()).decode() for text in encoded]
    return [value, *forms]


def _assert_no_secret(report: ProbeReport, username: str, password: Secret) -> None:
    text = "\n".join(render_transcript(report)) + repr(report)
    for form in _secret_forms(username, password):
        assert form not in text


def _verbs(server: FaultServer) -> list[str]:
    [transcript] = server.transcripts
    return [line.split(" ", 1)[0] for line in transcript]


# -- an implicit-TLS server ------------------------------------------------


class _Recorder:
    """A handler that keeps every message that reaches the end of DATA."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        assert isinstance(envelope.content, bytes)
        self.messages.append(envelope.content)
        return "250 2.0.0 OK"


class _ImplicitTls(Controller):
    """aiosmtpd's threaded controller on a system-chosen loopback port."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.recorder = _Recorder()
        super().__init__(
            self.recorder, hostname="127.0.0.1", port=0, ssl_context=context
        )

    @property
    def host(self) -> str:
        return str(self.hostname)

    def _trigger_server(self) -> None:
        # Port 0 asks the system for a free port; read back the one it gave
        # before the controller makes its own first connection to it.
        assert isinstance(self.server, asyncio.Server)
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]  # aiosmtpd: untyped


@pytest.fixture
def implicit_tls(tls_ca: TestCA) -> Iterator[_ImplicitTls]:
    server = _ImplicitTls(tls_ca.server_context())
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _implicit_server(ca: TestCA, *names: str, **dates: Any) -> _ImplicitTls:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.ca.issue_cert(*names, **dates).configure_cert(context)
    return _ImplicitTls(context)


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that is bound but not listening: connections are refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


# -- a channel that works ---------------------------------------------------


async def test_sandbox_passes_and_reads_the_size(sandbox_server: SandboxServer) -> None:
    endpoint = _endpoint(
        sandbox_server,
        Security.starttls,
        sandbox_server.ca_path,
        username=SANDBOX_USERNAME,
        secret=SANDBOX_PASSWORD,
    )

    report = await _probe(endpoint)

    assert report.ok, report.diagnosis
    assert report.diagnosis is None
    assert report.size_limit == MAX_MESSAGE_SIZE
    assert {"PLAIN", "LOGIN"} <= set(report.auth_mechanisms)
    assert "STARTTLS" not in report.extensions  # the last EHLO is the one over TLS
    assert report.tls is not None
    assert report.tls.version.startswith("TLSv1.")
    assert report.tls.subject is not None and "CN=localhost" in report.tls.subject
    assert sandbox_server.delivered() == []


async def test_sandbox_transcript_shows_no_credentials(
    sandbox_server: SandboxServer,
) -> None:
    endpoint = _endpoint(
        sandbox_server,
        Security.starttls,
        sandbox_server.ca_path,
        username=SANDBOX_USERNAME,
        secret=SANDBOX_PASSWORD,
    )

    report = await _probe(endpoint)
    lines = render_transcript(report)

    assert report.ok, report.diagnosis
    assert lines[0].startswith("* connecting to 127.0.0.1")
    assert lines[1].startswith("S: 220 ")
    assert f"C: EHLO {CLIENT_NAME}" in lines
    assert f"C: AUTH PLAIN {PLACEHOLDER}" in lines
    assert any(line.startswith("* TLS 1.") and "CN=localhost" in line for line in lines)
    assert lines[-2:] == ["C: QUIT", lines[-1]] and lines[-1].startswith("S: 221")
    _assert_no_secret(report, SANDBOX_USERNAME, SANDBOX_PASSWORD)


async def test_fault_server_sees_no_data_and_a_reset(
    fault_server_tls: FaultServer, tls_ca: TestCA
) -> None:
    report = await _probe(_fault_endpoint(fault_server_tls, tls_ca), "b@example.com")

    assert report.ok, report.diagnosis
    assert _verbs(fault_server_tls) == PROBE_VERBS
    assert fault_server_tls.transcripts[0][5] == "RCPT TO:<b@example.com>"
    assert fault_server_tls.received == []


# -- the server refuses ------------------------------------------------------


async def test_refused_credentials_are_named(
    fault_server_tls: FaultServer, tls_ca: TestCA
) -> None:
    fault_server_tls.script("AUTH", EXCHANGE_AUTH_OFF)

    report = await _probe(_fault_endpoint(fault_server_tls, tls_ca))

    assert not report.ok
    assert report.diagnosis is not None
    assert "refused the credentials" in report.diagnosis
    assert "535 5.7.139" in report.diagnosis
    assert report.reply is not None and report.reply.enhanced == "5.7.139"
    assert "MAIL" not in _verbs(fault_server_tls)
    _assert_no_secret(report, FAULT_USERNAME, FAULT_PASSWORD)


async def test_wrong_password_is_refused(
    fault_server_tls: FaultServer, tls_ca: TestCA
) -> None:
    wrong = Secret("fake-wrong-password")
    endpoint = _fault_endpoint(fault_server_tls, tls_ca, secret=wrong)

    report = await _probe(endpoint)

    assert not report.ok
    assert report.diagnosis is not None
    assert "refused the credentials (535 5.7.8" in report.diagnosis
    _assert_no_secret(report, FAULT_USERNAME, wrong)


async def test_send_as_denied_names_the_sender(
    fault_server_tls: FaultServer, tls_ca: TestCA
) -> None:
    fault_server_tls.script("MAIL", SEND_AS_DENIED, match=SENDER)

    report = await _probe(_fault_endpoint(fault_server_tls, tls_ca))

    assert not report.ok
    assert report.diagnosis is not None
    assert report.diagnosis.startswith(
        f"the server does not let this mailbox send as {SENDER}"
    )
    assert "DATA" not in _verbs(fault_server_tls)
    assert fault_server_tls.received == []


async def test_refused_recipient_is_named(
    fault_server_tls: FaultServer, tls_ca: TestCA
) -> None:
    fault_server_tls.script("RCPT", "550 5.7.1 Relaying denied")

    report = await _probe(_fault_endpoint(fault_server_tls, tls_ca))

    assert not report.ok
    assert report.diagnosis == (
        f"the server refused the recipient {SENDER}: 550 5.7.1 Relaying denied"
    )
    assert fault_server_tls.received == []


async def test_missing_starttls_is_named(fault_server: FaultServer) -> None:
    endpoint = _endpoint(fault_server, Security.starttls, None)

    report = await _probe(endpoint)

    assert not report.ok
    assert report.diagnosis is not None
    assert report.diagnosis.startswith("the server does not offer STARTTLS")
    assert "MAIL" not in _verbs(fault_server)


async def test_xoauth2_not_offered_asks_for_no_token(
    fault_server_tls: FaultServer, tls_ca: TestCA
) -> None:
    asked: list[bool] = []

    async def token() -> str:
        asked.append(True)
        return "fake-token"

    endpoint = _fault_endpoint(fault_server_tls, tls_ca, token_source=token)

    report = await _probe(endpoint)

    assert not report.ok
    assert report.diagnosis is not None
    assert report.diagnosis.endswith("but not XOAUTH2")
    assert asked == []


async def test_control_characters_are_refused_before_connecting(
    fault_server: FaultServer,
) -> None:
    endpoint = _endpoint(fault_server, Security.none, None)

    with pytest.raises(InputError, match="sender"):
        await probe(endpoint, "sales@example.com\r\nRCPT TO:<x@example.com>")

    assert fault_server.connections == 0


# -- the wrong TLS mode ------------------------------------------------------


async def test_implicit_tls_against_a_starttls_port(
    sandbox_server: SandboxServer,
) -> None:
    endpoint = _endpoint(sandbox_server, Security.tls, sandbox_server.ca_path)

    report = await _probe(endpoint)

    assert not report.ok
    assert report.diagnosis == (
        "the server speaks plain SMTP on this port; use security 'starttls'"
    )


async def test_starttls_against_an_implicit_tls_port(
    implicit_tls: _ImplicitTls, tls_ca: TestCA
) -> None:
    endpoint = _endpoint(implicit_tls, Security.starttls, tls_ca.ca_path, timeout=WAIT)

    report = await _probe(endpoint)

    assert not report.ok
    assert report.diagnosis == "this port expects implicit TLS; use security 'tls'"
    assert "TLS handshake succeeded" in render_transcript(report)[-1]


async def test_implicit_tls_port_works_in_tls_mode(
    implicit_tls: _ImplicitTls, tls_ca: TestCA
) -> None:
    endpoint = _endpoint(implicit_tls, Security.tls, tls_ca.ca_path)

    report = await _probe(endpoint)

    assert report.ok, report.diagnosis
    assert report.tls is not None
    notes = [line for line in report.transcript if line.direction is Direction.note]
    assert notes[1].text.startswith("TLS 1.")
    assert implicit_tls.recorder.messages == []


# -- certificates ------------------------------------------------------------


async def test_unknown_ca_over_starttls(
    fault_server_tls: FaultServer, tmp_path: Path
) -> None:
    stranger = make_test_ca(tmp_path)
    endpoint = _fault_endpoint(fault_server_tls, stranger)

    report = await _probe(endpoint)

    assert not report.ok
    assert report.diagnosis is not None
    assert "CA this system does not trust" in report.diagnosis
    assert "--ca-bundle" in report.diagnosis
    assert "AUTH" not in _verbs(fault_server_tls)


async def test_unknown_ca_over_implicit_tls(
    implicit_tls: _ImplicitTls, tmp_path: Path
) -> None:
    stranger = make_test_ca(tmp_path)
    endpoint = _endpoint(implicit_tls, Security.tls, stranger.ca_path)

    report = await _probe(endpoint)

    assert not report.ok
    assert report.diagnosis is not None
    assert "--ca-bundle" in report.diagnosis


async def test_hostname_mismatch(tls_ca: TestCA) -> None:
    server = _implicit_server(tls_ca, "mail.example.com")
    server.start()
    try:
        report = await _probe(_endpoint(server, Security.tls, tls_ca.ca_path))
    finally:
        server.stop()

    assert not report.ok
    assert report.diagnosis is not None
    assert "not valid for the name '127.0.0.1'" in report.diagnosis


async def test_expired_certificate(tls_ca: TestCA) -> None:
    now = datetime.datetime.now(datetime.UTC)
    dates = {
        "not_before": now - datetime.timedelta(days=30),
        "not_after": now - datetime.timedelta(days=1),
    }
    server = _implicit_server(tls_ca, "127.0.0.1", **dates)
    server.start()
    try:
        report = await _probe(_endpoint(server, Security.tls, tls_ca.ca_path))
    finally:
        server.stop()

    assert not report.ok
    assert report.diagnosis is not None
    assert "certificate has expired" in report.diagnosis


# -- nobody there ------------------------------------------------------------


async def test_connection_refused(closed_port: int) -> None:
    endpoint = Endpoint("127.0.0.1", closed_port, Security.starttls, timeout=WAIT)

    report = await _probe(endpoint)

    assert not report.ok
    assert report.diagnosis == (
        f"127.0.0.1:{closed_port} refused the connection; check the port and "
        "that the server is running"
    )
    assert [line.direction for line in report.transcript] == [Direction.note]
