"""``mailroom channel test``: check a channel's settings without sending mail.

The probe walks the first half of a submission the way delivery would: connect,
secure the connection, log in, offer the sender and one recipient.  It then
resets the transaction (RFC 5321 4.1.1.5) and quits, so DATA is never sent and
no message can leave.  Each step is kept in a transcript with the credentials
blanked out, and a failure becomes one line that says what is wrong and what to
change.

A probe that passes does not prove every message will go through: Exchange
Online, for one, checks send-as permission (5.7.60 SendAsDenied) only after
DATA, which a probe never reaches.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import enum
import logging
import socket
import ssl
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Final

import aiosmtplib
from cryptography import x509

from mailroom.addresses import parse_address
from mailroom.channels.model import Security
from mailroom.delivery.replies import Reply, ReplyClass, classify
from mailroom.delivery.transport import Endpoint, TokenSource, tls_context
from mailroom.errors import MailroomError
from mailroom.secrets import PLACEHOLDER, Secret

log = logging.getLogger("mailroom.delivery")

# A person waits on the answer, and a healthy server replies within a second.
PROBE_TIMEOUT: Final = 10.0

_MODES: Final = {
    Security.starttls: "plain, then STARTTLS",
    Security.tls: "implicit TLS",
    Security.none: "no TLS",
}

# How long closing waits for the socket to go, polled in small steps.
_CLOSE_POLLS: Final = 100
_CLOSE_POLL_SECONDS: Final = 0.01

# RFC 8314 3.3: port 465 is submission over implicit TLS.
_IMPLICIT_TLS_PORT: Final = 465

# OpenSSL reasons seen when the bytes that came back are not TLS at all: the
# plain "220 ..." greeting of an SMTP server read as a TLS record header.
_NOT_TLS_REASONS: Final = frozenset(
    {
        "WRONG_VERSION_NUMBER",
        "UNKNOWN_PROTOCOL",
        "PACKET_LENGTH_TOO_LONG",
        "RECORD_LAYER_FAILURE",
        "HTTP_REQUEST",
    }
)

# OpenSSL X509_V_ERR_* codes (x509_vfy.h) for a chain that ends at no CA we
# trust, and for the validity period.
_UNKNOWN_CA_CODES: Final = frozenset({2, 18, 19, 20, 21})
_EXPIRED: Final = 10
_NOT_YET_VALID: Final = 9
_HOSTNAME_MISMATCH: Final = 62
_IP_MISMATCH: Final = 64

# Exchange Online 5.7.60 and 5.2.252 SendAsDenied (see the replies README).
_SEND_AS_ENHANCED: Final = frozenset({"5.7.60", "5.2.252"})
_SEND_AS_WORDS: Final = ("sendasdenied", "send as", "send-as")


class Direction(enum.StrEnum):
    """Who a transcript line comes from."""

    client = "C"
    server = "S"
    # A remark of the probe's own: TLS details, what it tried, what it skipped.
    note = "*"


@dataclass(frozen=True, slots=True)
class TranscriptLine:
    """One line of the conversation, credentials already blanked out."""

    direction: Direction
    text: str


@dataclass(frozen=True, slots=True)
class TlsInfo:
    """The negotiated protocol and cipher, and who the certificate names."""

    version: str
    cipher: str
    # RFC 4514 form, e.g. ``CN=smtp.example.com``; None when no certificate.
    subject: str | None

    def describe(self) -> str:
        text = f"{self.version.replace('TLSv', 'TLS ')} {self.cipher}"
        if self.subject:
            text += f", certificate {self.subject}"
        return text


@dataclass(slots=True)
class ProbeReport:
    """What a probe found; ``diagnosis`` is set exactly when ``ok`` is False."""

    ok: bool = False
    transcript: list[TranscriptLine] = field(default_factory=list)
    tls: TlsInfo | None = None
    # RFC 1870 SIZE from the last EHLO; None when the server names no limit.
    size_limit: int | None = None
    # EHLO keywords (upper case) and their parameters, from the last EHLO.
    extensions: dict[str, str] = field(default_factory=dict)
    auth_mechanisms: list[str] = field(default_factory=list)
    diagnosis: str | None = None
    # The server's reply behind the diagnosis, when a reply caused it.
    reply: Reply | None = None


async def probe(
    endpoint: Endpoint,
    sender: str,
    recipient: str | None = None,
    *,
    local_hostname: str | None = None,
) -> ProbeReport:
    """Talk to the channel's server up to RCPT, then RSET and QUIT.

    The recipient defaults to the sender.  Every wait is bounded by the
    endpoint's timeout, capped at ``PROBE_TIMEOUT``.  Raises ``InputError`` for
    an address that is not one; everything the server does is reported.
    """
    sender = parse_address(sender, "sender").addr_spec
    recipient = parse_address(recipient or sender, "recipient").addr_spec

    run = _Probe(endpoint, local_hostname)
    try:
        await run.walk(sender, recipient)
    except _Stop as stop:
        run.stopped(stop)
    finally:
        await run.quit()

    log.info(
        "channel probe host=%s port=%d security=%s ok=%s",
        endpoint.host,
        endpoint.port,
        endpoint.security,
        run.report.ok,
    )
    return run.report


def render_transcript(report: ProbeReport) -> list[str]:
    """The transcript as text lines: ``S: 220 ...``, ``C: EHLO ...``, ``* ...``."""
    return [_render(line) for line in report.transcript]


def _render(line: TranscriptLine) -> str:
    if line.direction is Direction.note:
        return f"* {line.text}"
    return f"{line.direction}: {line.text}"


class _Stop(Exception):
    """Ends the walk; carries the one-line diagnosis."""

    def __init__(self, diagnosis: str, reply: Reply | None = None) -> None:
        super().__init__(diagnosis)
        self.diagnosis = diagnosis
        self.reply = reply


class _Probe:
    """One probe: the client, the report being written, and the steps."""

    def __init__(self, endpoint: Endpoint, local_hostname: str | None) -> None:
        self.endpoint = endpoint
        self.timeout = min(endpoint.timeout, PROBE_TIMEOUT)
        self.report = ProbeReport()
        self._hidden: set[str] = set()
        self._client: aiosmtplib.SMTP | None = None
        # The newest transport, TLS or not; closing it releases the socket.
        self._transport: asyncio.BaseTransport | None = None
        self._local_hostname = local_hostname

        if endpoint.secret is not None:
            self._hide_password(endpoint.username, endpoint.secret)

    @property
    def client(self) -> aiosmtplib.SMTP:
        assert self._client is not None, "walk() makes the client first"
        return self._client

    # -- the walk ----------------------------------------------------------

    async def walk(self, sender: str, recipient: str) -> None:
        self._client = self._make_client()
        await self._connect()
        await self._ehlo()
        await self._maybe_starttls()
        await self._maybe_authenticate()
        await self._offer_envelope(sender, recipient)
        await self._reset()
        self.report.ok = True

    def stopped(self, stop: _Stop) -> None:
        self.report.ok = False
        self.report.diagnosis = self._scrub(stop.diagnosis)
        self.report.reply = stop.reply

    async def quit(self) -> None:
        """QUIT politely if the connection is still up; close it in any case."""
        if self._client is not None and self._client.is_connected:
            with contextlib.suppress(_Stop):
                await self._exchange("QUIT", self._client.quit())
            self._client.close()

        if self._transport is not None:
            await _let_go(self._transport)

    # -- steps -------------------------------------------------------------

    def _make_client(self) -> aiosmtplib.SMTP:
        endpoint = self.endpoint
        try:
            context = tls_context(endpoint)
        except (OSError, ssl.SSLError) as exc:
            raise _Stop(
                f"cannot load the CA bundle {endpoint.ca_bundle}: {_reason(exc)}"
            ) from None

        # start_tls=False: this probe runs STARTTLS itself, to record it.
        return aiosmtplib.SMTP(
            hostname=endpoint.host,
            port=endpoint.port,
            use_tls=endpoint.security is Security.tls,
            start_tls=False,
            tls_context=context,
            timeout=self.timeout,
            local_hostname=self._local_hostname,
        )

    async def _connect(self) -> None:
        endpoint = self.endpoint
        mode = _MODES[endpoint.security]
        self._note(f"connecting to {endpoint.host} port {endpoint.port} ({mode})")

        try:
            greeting = await self.client.connect()
        except aiosmtplib.SMTPConnectResponseError as exc:
            reply = self._heard(exc.code, exc.message)
            raise _Stop(f"the server refused the connection: {reply}", reply) from None
        except aiosmtplib.SMTPConnectTimeoutError as exc:
            raise _Stop(await self._connect_timeout(exc)) from None
        except aiosmtplib.SMTPConnectError as exc:
            raise _Stop(self._connect_failure(exc)) from None

        self._note_tls()
        self._heard(greeting.code, greeting.message)

    async def _ehlo(self) -> None:
        name = self.client.local_hostname
        reply = await self._exchange(f"EHLO {name}", self.client.ehlo())
        if not reply.is_success:
            raise _Stop(f"the server refused EHLO: {reply}", reply)

        self._read_capabilities()

    async def _maybe_starttls(self) -> None:
        if self.endpoint.security is not Security.starttls:
            return
        if not self.client.supports_extension("starttls"):
            raise _Stop(
                "the server does not offer STARTTLS on this port, so the login "
                "would travel in clear; use the provider's submission port "
                "(587), or implicit TLS on 465 with security 'tls'"
            )

        await self._starttls()
        self._note_tls()
        # RFC 3207 4.2: forget what the server said before TLS and ask again.
        await self._ehlo()

    async def _starttls(self) -> None:
        self._said("STARTTLS")
        try:
            response = await self.client.starttls()
        except aiosmtplib.SMTPResponseException as exc:
            reply = self._heard(exc.code, exc.message)
            raise _Stop(f"the server refused STARTTLS: {reply}", reply) from None
        except (ssl.SSLError, aiosmtplib.SMTPException) as exc:
            # RFC 3207 4.1: after a failed negotiation, say nothing more in clear.
            self.client.close()
            raise _Stop(self._starttls_failure(exc)) from None

        self._heard(response.code, response.message)

    async def _maybe_authenticate(self) -> None:
        endpoint = self.endpoint
        if endpoint.token_source is not None:
            await self._authenticate_oauth(endpoint.token_source)
            return
        if not endpoint.username or endpoint.secret is None:
            self._note("no credentials on this channel; AUTH skipped")
            return

        mechanism = self._password_mechanism()
        await self._authenticate(mechanism, endpoint.username, endpoint.secret)

    async def _authenticate(
        self, mechanism: str, username: str, secret: Secret
    ) -> None:
        # RFC 4954 4: the initial response carries the credentials, so the
        # transcript names the mechanism and shows a placeholder instead.
        if mechanism == "PLAIN":
            step = self.client.auth_plain(username, secret.reveal())
        else:
            step = self.client.auth_login(username, secret.reveal())

        reply = await self._exchange(f"AUTH {mechanism} {PLACEHOLDER}", step)
        if not reply.is_success:
            raise _Stop(_auth_diagnosis(reply), reply)

    async def _authenticate_oauth(self, token_source: TokenSource) -> None:
        if "XOAUTH2" not in self.report.auth_mechanisms:
            raise _Stop(self._no_mechanism_diagnosis("XOAUTH2"))

        try:
            token = await token_source()
        except MailroomError as exc:
            raise _Stop(f"cannot get an OAuth access token: {exc}") from None
        self._hide_token(self.endpoint.username, token)

        step = self.client.auth_xoauth2(self.endpoint.username, token)
        reply = await self._exchange(f"AUTH XOAUTH2 {PLACEHOLDER}", step)
        if not reply.is_success:
            raise _Stop(_auth_diagnosis(reply), reply)

    async def _offer_envelope(self, sender: str, recipient: str) -> None:
        options = self._mail_options(sender, recipient)
        step = self.client.mail(sender, options=options, encoding="utf-8")
        shown = " ".join([f"MAIL FROM:<{sender}>", *options])
        reply = await self._exchange(shown, step)
        if not reply.is_success:
            raise _Stop(self._sender_diagnosis(sender, reply), reply)

        step = self.client.rcpt(recipient, encoding="utf-8")
        reply = await self._exchange(f"RCPT TO:<{recipient}>", step)
        if not reply.is_success:
            raise _Stop(_recipient_diagnosis(sender, recipient, reply), reply)

    async def _reset(self) -> None:
        # RFC 5321 4.1.1.5: RSET drops the transaction; nothing was sent.
        reply = await self._exchange("RSET", self.client.rset())
        if not reply.is_success:
            self._note("the server refused RSET; QUIT ends the transaction instead")

    # -- capabilities and TLS ----------------------------------------------

    def _read_capabilities(self) -> None:
        extensions = self.client.esmtp_extensions
        self.report.extensions = {k.upper(): v for k, v in extensions.items()}
        methods = self.client.server_auth_methods
        self.report.auth_mechanisms = [m.upper() for m in methods]
        self.report.size_limit = _size_limit(extensions.get("size"))

    def _note_tls(self) -> None:
        self._transport = self.client.transport
        ssl_object = self.client.get_transport_info("ssl_object")
        if not isinstance(ssl_object, ssl.SSLObject):
            return

        cipher = ssl_object.cipher()
        info = TlsInfo(
            version=ssl_object.version() or "TLS",
            cipher=cipher[0] if cipher else "",
            subject=_subject(ssl_object.getpeercert(binary_form=True)),
        )
        self.report.tls = info
        self._note(info.describe())

    def _mail_options(self, sender: str, recipient: str) -> list[str]:
        wide = [a for a in (sender, recipient) if not a.rpartition("@")[0].isascii()]
        if not wide:
            return []
        # RFC 6531 3.4: a non-ASCII local part needs the server's SMTPUTF8.
        if not self.client.supports_extension("smtputf8"):
            raise _Stop(
                "the server does not offer SMTPUTF8 (RFC 6531), so it cannot "
                f"take the non-ASCII address {wide[0]}"
            )
        return ["SMTPUTF8"]

    def _password_mechanism(self) -> str:
        offered = self.report.auth_mechanisms
        for mechanism in ("PLAIN", "LOGIN"):
            if mechanism in offered:
                return mechanism
        raise _Stop(self._no_mechanism_diagnosis("PLAIN or LOGIN"))

    # -- diagnoses ---------------------------------------------------------

    async def _connect_timeout(self, exc: aiosmtplib.SMTPConnectTimeoutError) -> str:
        endpoint = self.endpoint
        where = f"{endpoint.host}:{endpoint.port}"
        if not isinstance(exc.__cause__, aiosmtplib.SMTPTimeoutError):
            return (
                f"no answer from {where} within {self.timeout:g}s; check the host "
                "and port, and whether a firewall drops the connection"
            )

        # Connected, but no greeting: an implicit-TLS server waits for our
        # TLS hello (RFC 8314 3.3) while we wait for its 220.  Check by
        # trying a TLS handshake on the same port.
        self._note(f"no greeting within {self.timeout:g}s")
        if endpoint.security is Security.tls:
            return f"{where} completed TLS but sent no greeting"
        if await self._speaks_tls() or endpoint.port == _IMPLICIT_TLS_PORT:
            return "this port expects implicit TLS; use security 'tls'"
        return f"{where} accepted the connection but sent no greeting"

    async def _speaks_tls(self) -> bool:
        self._note("trying a TLS handshake on the same port")
        speaks = await _handshake_works(self.endpoint, self.timeout)
        self._note("TLS handshake succeeded" if speaks else "no TLS either")
        return speaks

    def _connect_failure(self, exc: aiosmtplib.SMTPConnectError) -> str:
        endpoint = self.endpoint
        where = f"{endpoint.host}:{endpoint.port}"
        cause = exc.__cause__

        if isinstance(cause, ssl.SSLCertVerificationError):
            return self._certificate_failure(cause)
        if isinstance(cause, ssl.SSLError):
            return self._tls_failure(cause)
        if isinstance(cause, ConnectionRefusedError):
            return (
                f"{where} refused the connection; check the port and that "
                "the server is running"
            )
        if isinstance(cause, socket.gaierror):
            return f"cannot resolve the host name {endpoint.host!r}; check the host"
        if isinstance(cause, aiosmtplib.SMTPServerDisconnected):
            return f"{where} closed the connection before its greeting"
        return f"cannot connect to {where}: {_reason(cause or exc)}"

    def _tls_failure(self, error: ssl.SSLError) -> str:
        reason = error.reason or ""
        self._note(f"TLS handshake failed: {_reason(error)}")
        if reason in _NOT_TLS_REASONS:
            return "the server speaks plain SMTP on this port; use security 'starttls'"
        return f"the TLS handshake failed: {_reason(error)}"

    def _starttls_failure(self, exc: BaseException) -> str:
        if isinstance(exc, ssl.SSLCertVerificationError):
            return self._certificate_failure(exc)
        if isinstance(exc, aiosmtplib.SMTPTimeoutError):
            return f"the TLS handshake after STARTTLS took over {self.timeout:g}s"
        self._note(f"TLS handshake failed: {_reason(exc)}")
        return f"the TLS handshake after STARTTLS failed: {_reason(exc)}"

    def _certificate_failure(self, error: ssl.SSLCertVerificationError) -> str:
        self._note(f"certificate check failed: {error.verify_message}")
        code = error.verify_code
        host = self.endpoint.host

        if code in _UNKNOWN_CA_CODES:
            return (
                "the server's certificate is signed by a CA this system does not "
                f"trust ({error.verify_message}); if the server uses a private "
                "CA, give its certificate with --ca-bundle"
            )
        if code in (_HOSTNAME_MISMATCH, _IP_MISMATCH):
            return (
                f"the server's certificate is not valid for the name {host!r}; "
                "connect by a name the certificate lists"
            )
        if code == _EXPIRED:
            return "the server's certificate has expired; its operator must renew it"
        if code == _NOT_YET_VALID:
            return "the server's certificate is not valid yet; check this clock"
        return f"the server's certificate failed verification: {error.verify_message}"

    def _no_mechanism_diagnosis(self, wanted: str) -> str:
        offered = " ".join(self.report.auth_mechanisms)
        if not offered and self.report.tls is None:
            return (
                "the server offers no AUTH on a connection without TLS; use "
                "security 'starttls' or 'tls'"
            )
        if not offered:
            return "the server offers no AUTH on this port; use its submission port"
        return f"the server offers AUTH {offered} but not {wanted}"

    def _sender_diagnosis(self, sender: str, reply: Reply) -> str:
        if _is_send_as_denied(reply):
            return f"the server does not let this mailbox send as {sender} ({reply})"
        if classify(reply) is ReplyClass.auth:
            return (
                f"the server wants a login before MAIL ({reply}); give the "
                "channel a user name and password"
            )
        return f"the server refused the sender {sender}: {reply}"

    # -- the transcript ----------------------------------------------------

    async def _exchange(
        self, shown: str, step: Awaitable[aiosmtplib.SMTPResponse]
    ) -> Reply:
        """Send one command (shown as ``shown``) and record the reply."""
        self._said(shown)
        verb = shown.split(" ", 1)[0]
        try:
            response = await step
        except aiosmtplib.SMTPResponseException as exc:
            return self._heard(exc.code, exc.message)
        except aiosmtplib.SMTPTimeoutError:
            raise _Stop(f"no reply to {verb} within {self.timeout:g}s") from None
        except aiosmtplib.SMTPServerDisconnected:
            raise _Stop(f"the server closed the connection after {verb}") from None

        return self._heard(response.code, response.message)

    def _said(self, text: str) -> None:
        self._add(Direction.client, text)

    def _heard(self, code: int, message: str) -> Reply:
        lines = message.split("\n") or [""]
        # RFC 5321 4.2.1: every line but the last has a hyphen after the code.
        for index, line in enumerate(lines):
            mark = " " if index == len(lines) - 1 else "-"
            self._add(Direction.server, f"{code}{mark}{line}".rstrip())
        return Reply.parse(code, message)

    def _note(self, text: str) -> None:
        self._add(Direction.note, text)

    def _add(self, direction: Direction, text: str) -> None:
        self.report.transcript.append(TranscriptLine(direction, self._scrub(text)))

    def _scrub(self, text: str) -> str:
        # A last guard for a server that echoes what it was sent: no form of
        # a credential we hold reaches the transcript.
        for word in self._hidden:
            text = text.replace(word, PLACEHOLDER)
        return text

    def _hide_password(self, username: str, secret: Secret) -> None:
        password = secret.reveal()
        # RFC 4616 2 (PLAIN): authzid NUL authcid NUL passwd, in base64.
        plain = f"\0{username}\0{password}"
        self._hide(password, _b64(password), _b64(plain))

    def _hide_token(self, username: str, token: str) -> None:
        # Google's XOAUTH2: "user=" name ^A "auth=Bearer " token ^A ^A, base64.
        bearer = f"user={username}\1auth=Bearer {token}\1\1"
        self._hide(token, _b64(bearer))

    def _hide(self, *words: str) -> None:
        self._hidden.update(word for word in words if word)


async def _handshake_works(endpoint: Endpoint, timeout: float) -> bool:
    """Whether a TLS handshake completes on the endpoint's port."""
    try:
        connecting = asyncio.open_connection(
            endpoint.host,
            endpoint.port,
            ssl=tls_context(endpoint),
            server_hostname=endpoint.host,
            ssl_handshake_timeout=timeout,
        )
        _, writer = await asyncio.wait_for(connecting, timeout)
    except ssl.SSLCertVerificationError:
        # The server spoke TLS; only our check of its certificate failed.
        return True
    except OSError:
        return False

    await _let_go(writer.transport)
    return True


async def _let_go(transport: asyncio.BaseTransport) -> None:
    """Close a transport and wait, briefly, until its socket is released.

    Closing TLS first sends close_notify and waits for the peer's (RFC 8446
    6.1); a peer that never answers is cut off, so the wait stays bounded.
    """
    sock = transport.get_extra_info("socket")
    transport.close()
    for _ in range(_CLOSE_POLLS):
        if sock is None or sock.fileno() == -1:
            return
        await asyncio.sleep(_CLOSE_POLL_SECONDS)

    if isinstance(transport, asyncio.WriteTransport):
        transport.abort()
    # abort() releases the socket on the loop's next turn.
    await asyncio.sleep(0)


def _auth_diagnosis(reply: Reply) -> str:
    if reply.code < 500:
        return f"the server could not check the credentials now ({reply}); try later"
    return (
        f"the server refused the credentials ({reply}); check the user name "
        "and password, or the app password if the account uses two-step sign-in"
    )


def _recipient_diagnosis(sender: str, recipient: str, reply: Reply) -> str:
    if _is_send_as_denied(reply):
        return f"the server does not let this mailbox send as {sender} ({reply})"
    return f"the server refused the recipient {recipient}: {reply}"


def _is_send_as_denied(reply: Reply) -> bool:
    if reply.enhanced in _SEND_AS_ENHANCED:
        return True
    text = reply.text.lower()
    return any(words in text for words in _SEND_AS_WORDS)


def _size_limit(value: str | None) -> int | None:
    # RFC 1870 4: SIZE without a number, or SIZE 0, means no fixed limit.
    if value is None or not value.strip().isdigit():
        return None
    return int(value) or None


def _subject(der: bytes | None) -> str | None:
    if not der:
        return None
    return x509.load_der_x509_certificate(der).subject.rfc4514_string()


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def _reason(error: BaseException) -> str:
    if isinstance(error, ssl.SSLError) and error.reason:
        return str(error.reason)
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__
