"""``mailroom channel test``: check a channel's settings without sending mail.

The probe walks the first half of a submission the way delivery would: connect,
secure the connection, log in, offer the sender and one recipient.  It then
resets the transaction (RFC 5321 4.1.1.5) and quits, so DATA is never sent and
no message can leave.  Each step is kept in a transcript with the credentials
blanked out (``transcript``), and a failure becomes one line that says what is
wrong and what to change (``diagnoses``).

A probe that passes does not prove every message will go through: Exchange
Online, for one, checks send-as permission (5.7.60 SendAsDenied) only after
DATA, which a probe never reaches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Final

import aiosmtplib
from cryptography import x509

from mailroom.addresses import parse_address
from mailroom.channels.model import Security
from mailroom.delivery.closing import let_go
from mailroom.delivery.diagnoses import (
    auth_refused,
    ca_bundle_failure,
    connect_failure,
    connect_timeout,
    no_mechanism,
    recipient_refused,
    sender_refused,
    starttls_failure,
)
from mailroom.delivery.replies import Reply
from mailroom.delivery.transcript import (
    Direction,
    Transcript,
    TranscriptLine,
    render_lines,
)
from mailroom.delivery.transport import Endpoint, TokenSource, parse_size, tls_context
from mailroom.errors import MailroomError
from mailroom.i18n import english
from mailroom.secrets import PLACEHOLDER, Secret

# Direction and TranscriptLine live in ``transcript``; callers and tests import
# them from here too.
__all__ = [
    "PROBE_TIMEOUT",
    "Direction",
    "ProbeReport",
    "TlsInfo",
    "TranscriptLine",
    "probe",
    "render_transcript",
]

log = logging.getLogger("mailroom.delivery")

# A person waits on the answer, and a healthy server replies within a second.
PROBE_TIMEOUT: Final = 10.0

_MODES: Final = {
    Security.starttls: "plain, then STARTTLS",
    Security.tls: "implicit TLS",
    Security.none: "no TLS",
}


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
    return render_lines(report.transcript)


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
        # Writes into the report's transcript.
        self.transcript = Transcript(self.report.transcript)
        self._client: aiosmtplib.SMTP | None = None
        # The newest transport, TLS or not; closing it releases the socket.
        self._transport: asyncio.BaseTransport | None = None
        self._local_hostname = local_hostname

        if endpoint.secret is not None:
            self.transcript.hide_password(endpoint.username, endpoint.secret)

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
        self.report.diagnosis = self.transcript.scrub(stop.diagnosis)
        self.report.reply = stop.reply

    async def quit(self) -> None:
        """QUIT politely if the connection is still up; close it in any case."""
        if self._client is not None and self._client.is_connected:
            with contextlib.suppress(_Stop):
                await self._exchange("QUIT", self._client.quit())
            self._client.close()

        if self._transport is not None:
            await let_go(self._transport)

    # -- steps -------------------------------------------------------------

    def _make_client(self) -> aiosmtplib.SMTP:
        endpoint = self.endpoint
        try:
            context = tls_context(endpoint)
        except (OSError, ssl.SSLError) as exc:
            raise _Stop(ca_bundle_failure(endpoint, exc)) from None

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
        where = f"{endpoint.host} port {endpoint.port}"
        self.transcript.note(f"connecting to {where} ({mode})")

        try:
            greeting = await self.client.connect()
        except aiosmtplib.SMTPConnectResponseError as exc:
            reply = self.transcript.heard(exc.code, exc.message)
            raise _Stop(f"the server refused the connection: {reply}", reply) from None
        except aiosmtplib.SMTPConnectTimeoutError as exc:
            diagnosis = await connect_timeout(
                exc, endpoint, self.timeout, self.transcript
            )
            raise _Stop(diagnosis) from None
        except aiosmtplib.SMTPConnectError as exc:
            raise _Stop(connect_failure(exc, endpoint, self.transcript)) from None

        self._note_tls()
        self.transcript.heard(greeting.code, greeting.message)

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
        self.transcript.said("STARTTLS")
        try:
            response = await self.client.starttls()
        except aiosmtplib.SMTPResponseException as exc:
            reply = self.transcript.heard(exc.code, exc.message)
            raise _Stop(f"the server refused STARTTLS: {reply}", reply) from None
        except (ssl.SSLError, aiosmtplib.SMTPException) as exc:
            # RFC 3207 4.1: after a failed negotiation, say nothing more in clear.
            self.client.close()
            diagnosis = starttls_failure(
                exc, self.endpoint, self.timeout, self.transcript
            )
            raise _Stop(diagnosis) from None

        self.transcript.heard(response.code, response.message)

    async def _maybe_authenticate(self) -> None:
        endpoint = self.endpoint
        if endpoint.token_source is not None:
            await self._authenticate_oauth(endpoint.token_source)
            return
        if not endpoint.username or endpoint.secret is None:
            self.transcript.note("no credentials on this channel; AUTH skipped")
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
            raise _Stop(auth_refused(reply), reply)

    async def _authenticate_oauth(self, token_source: TokenSource) -> None:
        if "XOAUTH2" not in self.report.auth_mechanisms:
            raise _Stop(self._no_mechanism("XOAUTH2"))

        try:
            token = await token_source()
        except MailroomError as exc:
            # Diagnoses are English, and one may be stored as a channel's reason.
            raise _Stop(f"cannot get an OAuth access token: {english(exc)}") from None
        self.transcript.hide_token(self.endpoint.username, token)

        step = self.client.auth_xoauth2(self.endpoint.username, token)
        reply = await self._exchange(f"AUTH XOAUTH2 {PLACEHOLDER}", step)
        if not reply.is_success:
            raise _Stop(auth_refused(reply), reply)

    async def _offer_envelope(self, sender: str, recipient: str) -> None:
        options = self._mail_options(sender, recipient)
        step = self.client.mail(sender, options=options, encoding="utf-8")
        shown = " ".join([f"MAIL FROM:<{sender}>", *options])
        reply = await self._exchange(shown, step)
        if not reply.is_success:
            raise _Stop(sender_refused(sender, reply), reply)

        step = self.client.rcpt(recipient, encoding="utf-8")
        reply = await self._exchange(f"RCPT TO:<{recipient}>", step)
        if not reply.is_success:
            raise _Stop(recipient_refused(sender, recipient, reply), reply)

    async def _reset(self) -> None:
        # RFC 5321 4.1.1.5: RSET drops the transaction; nothing was sent.
        reply = await self._exchange("RSET", self.client.rset())
        if not reply.is_success:
            self.transcript.note(
                "the server refused RSET; QUIT ends the transaction instead"
            )

    # -- one command and its reply -----------------------------------------

    async def _exchange(
        self, shown: str, step: Awaitable[aiosmtplib.SMTPResponse]
    ) -> Reply:
        """Send one command (shown as ``shown``) and record the reply."""
        self.transcript.said(shown)
        verb = shown.split(" ", 1)[0]
        try:
            response = await step
        except aiosmtplib.SMTPResponseException as exc:
            return self.transcript.heard(exc.code, exc.message)
        except aiosmtplib.SMTPTimeoutError:
            raise _Stop(f"no reply to {verb} within {self.timeout:g}s") from None
        except aiosmtplib.SMTPServerDisconnected:
            raise _Stop(f"the server closed the connection after {verb}") from None

        return self.transcript.heard(response.code, response.message)

    # -- capabilities and TLS ----------------------------------------------

    def _read_capabilities(self) -> None:
        extensions = self.client.esmtp_extensions
        self.report.extensions = {k.upper(): v for k, v in extensions.items()}
        methods = self.client.server_auth_methods
        self.report.auth_mechanisms = [m.upper() for m in methods]
        self.report.size_limit = parse_size(extensions.get("size"))

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
        self.transcript.note(info.describe())

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
        raise _Stop(self._no_mechanism("PLAIN or LOGIN"))

    def _no_mechanism(self, wanted: str) -> str:
        secured = self.report.tls is not None
        return no_mechanism(wanted, self.report.auth_mechanisms, secured)


def _subject(der: bytes | None) -> str | None:
    if not der:
        return None
    return x509.load_der_x509_certificate(der).subject.rfc4514_string()
