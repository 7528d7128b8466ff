"""One SMTP session to a channel's server, reused across messages.

A thin layer over aiosmtplib that adds what delivery needs: TLS set up from the
channel's settings, per-recipient results (a server may accept some recipients
and refuse others), replies as ``Reply`` values, and errors wrapped once into
mailroom's tree with a message that says what to do.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiosmtplib

from mailroom.channels.model import Channel, Security
from mailroom.delivery.pipelining import (
    END_OF_DATA,
    ReplyStream,
    StreamClosed,
    dot_stuff,
    is_closing,
)
from mailroom.delivery.replies import Reply, ReplyCode
from mailroom.errors import ChannelAuthError, ChannelConnectError
from mailroom.secrets import Secret

# Why a transaction was given up before its final ".".
ABANDONED = "abandoned before its end: the previous outcome could not be recorded"

log = logging.getLogger("mailroom.delivery")

TokenSource = Callable[[], Awaitable[str]]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where and how to connect, and who to log in as."""

    host: str
    port: int
    security: Security
    username: str = ""
    secret: Secret | None = None
    ca_bundle: str | None = None
    verify_tls: bool = True
    timeout: float = 30.0
    # OAuth channels authenticate with XOAUTH2 using a fresh access token.
    token_source: TokenSource | None = None

    @classmethod
    def for_channel(
        cls,
        channel: Channel,
        token_source: TokenSource | None = None,
        timeout: float = 30.0,
    ) -> Endpoint:
        """How to reach and log in to a channel's server."""
        return cls(
            host=channel.host,
            port=channel.port,
            security=channel.security,
            username=channel.username,
            secret=channel.secret,
            ca_bundle=channel.ca_bundle,
            verify_tls=channel.verify_tls,
            token_source=token_source,
            timeout=timeout,
        )


@dataclass(slots=True)
class Transaction:
    """The outcome of one MAIL/RCPT/DATA transaction."""

    mail: Reply | None = None
    rcpt: dict[str, Reply] = field(default_factory=dict)
    data: Reply | None = None

    @property
    def accepted(self) -> list[str]:
        return [addr for addr, reply in self.rcpt.items() if reply.is_success]

    @property
    def delivered(self) -> bool:
        return self.data is not None and self.data.is_success


class SessionError(ChannelConnectError):
    """The session broke mid-conversation; the reply says how, if there was one."""

    def __init__(self, message: str, reply: Reply | None = None) -> None:
        super().__init__(message)
        self.reply = reply
        # Whether the message content may have reached the server, in which
        # case sending it again at once could deliver it twice.
        self.content_sent = False


class AuthRefused(ChannelAuthError):
    # Set by a raiser that has already disconnected the channel and recorded
    # why (mailroom.oauth.AccessEnded), so the engine need not do it again.
    already_recorded = False

    def __init__(self, reply: Reply) -> None:
        super().__init__(f"the server refused the credentials: {reply}")
        self.reply = reply


def tls_context(endpoint: Endpoint) -> ssl.SSLContext:
    """Certificate checks on by default, against the channel's CA if it has one."""
    context = ssl.create_default_context(cafile=endpoint.ca_bundle)
    if not endpoint.verify_tls:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class SmtpSession:
    """An SMTP client session; ``open`` once, ``send`` many times, ``close``."""

    def __init__(self, endpoint: Endpoint, local_hostname: str | None = None):
        self.endpoint = endpoint
        secure = endpoint.security is not Security.none
        context = _context_or_error(endpoint) if secure else None
        self._client = aiosmtplib.SMTP(
            hostname=endpoint.host,
            port=endpoint.port,
            use_tls=endpoint.security is Security.tls,
            start_tls=False,
            tls_context=context,
            timeout=endpoint.timeout,
            local_hostname=local_hostname,
        )
        # Set once the session is open and the server offers PIPELINING.
        self._stream: ReplyStream | None = None
        # Transactions begun on this session; a reused session may have been
        # closed by the server while idle.
        self.transactions = 0

    @property
    def is_open(self) -> bool:
        if self._stream is not None:
            return self._stream.is_open
        return self._client.is_connected

    @property
    def pipelining(self) -> bool:
        return self._stream is not None

    @property
    def smtputf8(self) -> bool:
        return self._client.supports_extension("smtputf8")

    @property
    def eight_bit(self) -> bool:
        return self._client.supports_extension("8bitmime")

    @property
    def size_limit(self) -> int | None:
        return parse_size(self._client.esmtp_extensions.get("size"))

    @property
    def client(self) -> aiosmtplib.SMTP:
        return self._client

    async def open(self) -> None:
        """Connect, secure the connection and authenticate."""
        await self._connect()
        await self._ehlo()
        await self._maybe_starttls()
        await self._maybe_authenticate()
        self._maybe_pipeline()

    async def send(
        self,
        sender: str,
        recipients: list[str],
        data: bytes,
        *,
        before_end: Awaitable[None] | None = None,
    ) -> Transaction:
        """One transaction; a refused recipient does not stop the others.

        ``before_end`` is awaited before the final "." that lets the server
        accept the message (with pipelining, after the content is written).
        If it fails, the transaction is abandoned: the connection is dropped
        mid-DATA, so that the server discards the content.
        """
        self.transactions += 1
        if self._stream is not None:
            return await self._send_pipelined(
                self._stream, sender, recipients, data, before_end
            )
        await self._before_end(before_end)
        result = Transaction()
        result.mail = await self._mail(sender, data)
        if not result.mail.is_success:
            return result

        for recipient in recipients:
            result.rcpt[recipient] = await self._rcpt(recipient)

        if result.accepted:
            result.data = await self._data(data)
        return result

    async def reset(self) -> None:
        """RSET after a refused transaction, so the session can be reused."""
        if self._stream is not None:
            await self._command(self._stream, b"RSET\r\n")
            return
        try:
            await self._client.rset()
        except aiosmtplib.SMTPException as exc:
            raise SessionError(f"the server did not accept RSET: {exc}") from exc

    async def close(self) -> None:
        """QUIT politely when the server is still there; close the socket anyway."""
        if self._stream is not None:
            await self._quit_pipelined(self._stream)
            return
        if self._client.is_connected:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                await self._client.quit()
        self._client.close()

    async def _connect(self) -> None:
        try:
            await self._client.connect()
        except aiosmtplib.SMTPConnectError as exc:
            raise ChannelConnectError(
                f"cannot connect to {self.endpoint.host}:{self.endpoint.port}: "
                f"{_cause(exc)}"
            ) from exc
        except aiosmtplib.SMTPTimeoutError as exc:
            raise ChannelConnectError(_timeout_hint(self.endpoint)) from exc
        except aiosmtplib.SMTPResponseException as exc:
            raise SessionError(
                f"the server refused the connection: {exc.code} {exc.message}",
                Reply.parse(exc.code, exc.message),
            ) from exc

    def _maybe_pipeline(self) -> None:
        transport = self._client.transport
        if self._client.supports_extension("pipelining") and transport is not None:
            self._stream = ReplyStream.attach(transport)  # type: ignore[arg-type]

    async def _send_pipelined(
        self,
        stream: ReplyStream,
        sender: str,
        recipients: list[str],
        data: bytes,
        before_end: Awaitable[None] | None,
    ) -> Transaction:
        # RFC 2920 3.1: MAIL, every RCPT and DATA go in one write; the replies
        # come back in the same order.
        commands = [_mail_line(sender, self._mail_options(sender, data))]
        commands += [f"RCPT TO:<{recipient}>" for recipient in recipients]
        commands.append("DATA")
        stream.write("".join(_checked(c) + "\r\n" for c in commands).encode())

        result = Transaction()
        replies = await self._replies(stream, len(recipients) + 2)
        result.mail = replies[0]
        result.rcpt = dict(zip(recipients, replies[1:-1], strict=True))
        await self._finish_data(stream, result, replies[-1], data, before_end)
        return result

    async def _finish_data(
        self,
        stream: ReplyStream,
        result: Transaction,
        start: Reply,
        data: bytes,
        before_end: Awaitable[None] | None,
    ) -> None:
        wanted = result.mail is not None and result.mail.is_success and result.accepted
        if start.code != ReplyCode.start_input:
            if wanted:
                result.data = _unexpected(start)
            return
        if not wanted:
            # RFC 2920 3.1: a 354 with no valid recipient still needs the end
            # of data; the server then refuses the empty transaction.
            stream.write(b".\r\n")
            await self._reply(stream)
            return
        stream.write(dot_stuff(data))
        await self._before_end(before_end)
        stream.write(END_OF_DATA)
        try:
            result.data = await self._reply(stream)
        except SessionError as exc:
            exc.content_sent = True
            raise

    async def _before_end(self, before_end: Awaitable[None] | None) -> None:
        if before_end is None:
            return
        try:
            await before_end
        except Exception as exc:
            self.abort()
            reply = Reply(451, "4.3.0", ABANDONED)
            raise SessionError(ABANDONED, reply) from exc

    def abort(self) -> None:
        """Drop the connection at once, without QUIT.

        In the middle of DATA a QUIT would be read as content; closing instead
        makes the server discard the unfinished message (RFC 5321 4.1.1.4).
        """
        if self._stream is not None:
            self._stream.close()
        self._client.close()

    async def _reply(self, stream: ReplyStream) -> Reply:
        [reply] = await self._replies(stream, 1)
        return reply

    async def _replies(self, stream: ReplyStream, count: int) -> list[Reply]:
        try:
            replies = await stream.read_many(count, self.endpoint.timeout)
        except StreamClosed as exc:
            raise SessionError(str(exc)) from None
        for reply in replies:
            if is_closing(reply):
                raise SessionError("the server is closing the connection", reply)
        return replies

    async def _command(self, stream: ReplyStream, line: bytes) -> Reply:
        try:
            stream.write(line)
        except StreamClosed as exc:
            raise SessionError(str(exc)) from None
        return await self._reply(stream)

    async def _quit_pipelined(self, stream: ReplyStream) -> None:
        if stream.is_open:
            # A server that has gone already needs no goodbye.
            with contextlib.suppress(StreamClosed):
                stream.write(b"QUIT\r\n")
                await stream.read(min(self.endpoint.timeout, 5.0))
        stream.close()
        self._client.close()

    async def _ehlo(self) -> None:
        # RFC 3207 4.2: after STARTTLS the client must forget what it knew and
        # ask again, so this runs once in the clear and once under TLS.
        try:
            await self._client.ehlo()
        except aiosmtplib.SMTPHeloError:
            await self._client.helo()
        except aiosmtplib.SMTPException as exc:
            raise SessionError(f"the server did not answer EHLO: {exc}") from exc

    async def _maybe_starttls(self) -> None:
        if self.endpoint.security is not Security.starttls:
            return
        if not self._client.supports_extension("starttls"):
            raise ChannelConnectError(
                f"{self.endpoint.host}:{self.endpoint.port} does not offer "
                "STARTTLS; use security 'tls' for an implicit TLS port (465)"
            )
        try:
            await self._client.starttls()
        except (aiosmtplib.SMTPException, ssl.SSLError, OSError) as exc:
            raise ChannelConnectError(f"STARTTLS failed: {_cause(exc)}") from exc
        await self._ehlo()

    async def _maybe_authenticate(self) -> None:
        if self.endpoint.token_source is not None:
            await self._authenticate_oauth(self.endpoint.token_source)
            return
        if not self.endpoint.username or self.endpoint.secret is None:
            return

        try:
            await self._login(self.endpoint.username, self.endpoint.secret)
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise AuthRefused(Reply.parse(exc.code, exc.message)) from None
        except aiosmtplib.SMTPException as exc:
            raise SessionError(f"authentication failed: {exc}") from None

    async def _login(self, username: str, secret: Secret) -> None:
        # RFC 4954 AUTH over TLS; PLAIN needs one round trip, LOGIN two.
        offered = {m.upper() for m in self._client.server_auth_methods}
        if "PLAIN" in offered:
            await self._client.auth_plain(username, secret.reveal())
        elif "LOGIN" in offered:
            await self._client.auth_login(username, secret.reveal())
        else:
            raise ChannelAuthError(
                "the server offers neither AUTH PLAIN nor AUTH LOGIN; "
                "check the port and security mode"
            )

    async def _authenticate_oauth(self, token_source: TokenSource) -> None:
        token = await token_source()
        refused = await self._xoauth2(token)
        # A token can be revoked before it expires: a source that can renew
        # gets one more try with a new token (mailroom.oauth.tokens).
        renew = getattr(token_source, "renew", None)
        if refused is not None and renew is not None:
            refused = await self._xoauth2(await renew(token))
        if refused is not None:
            raise AuthRefused(refused)

    async def _xoauth2(self, token: str) -> Reply | None:
        try:
            await self._client.auth_xoauth2(self.endpoint.username, token)
        except aiosmtplib.SMTPAuthenticationError as exc:
            return Reply.parse(exc.code, exc.message)
        return None

    async def _mail(self, sender: str, data: bytes) -> Reply:
        options = self._mail_options(sender, data)
        return await self._await_reply(
            self._client.mail(sender, options=options, encoding="utf-8")
        )

    def _mail_options(self, sender: str, data: bytes) -> list[str]:
        options = []
        if self.smtputf8 and _needs_smtputf8(sender, data):
            options.append("SMTPUTF8")
        if self.eight_bit and not data.isascii():
            options.append("BODY=8BITMIME")
        if self.size_limit:
            # RFC 1870: announce the size so an oversized message fails early.
            options.append(f"SIZE={len(data)}")
        return options

    async def _rcpt(self, recipient: str) -> Reply:
        return await self._await_reply(self._client.rcpt(recipient, encoding="utf-8"))

    async def _data(self, data: bytes) -> Reply:
        try:
            return await self._await_reply(self._client.data(data))
        except SessionError as exc:
            # aiosmtplib sends DATA and the content in one call: the server
            # may have the content already.
            exc.content_sent = True
            raise

    async def _await_reply(self, call: Awaitable[aiosmtplib.SMTPResponse]) -> Reply:
        """One command's reply; a broken or closing session raises SessionError."""
        try:
            response = await call
        except aiosmtplib.SMTPResponseException as exc:
            reply = _unexpected(Reply.parse(exc.code, exc.message))
        except aiosmtplib.SMTPTimeoutError as exc:
            raise SessionError(f"no reply within {self.endpoint.timeout:g} s") from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise SessionError(f"the connection broke: {exc}") from exc
        else:
            reply = Reply.parse(response.code, response.message)
        if is_closing(reply):
            raise SessionError("the server is closing the connection", reply)
        return reply


def _context_or_error(endpoint: Endpoint) -> ssl.SSLContext:
    try:
        return tls_context(endpoint)
    except (OSError, ssl.SSLError) as exc:
        raise ChannelConnectError(
            f"cannot load the CA bundle {endpoint.ca_bundle}: {exc}; fix it with "
            "`mailroom channel update NAME --ca-bundle FILE`"
        ) from None


def _mail_line(sender: str, options: list[str]) -> str:
    return " ".join([f"MAIL FROM:<{sender}>", *options])


def parse_size(value: str | None) -> int | None:
    """The limit an EHLO's SIZE keyword announces, if any.

    RFC 1870 4: SIZE without a number, or SIZE 0, means no fixed limit.
    """
    if value is None or not value.strip().isdigit():
        return None
    return int(value) or None


def _unexpected(reply: Reply) -> Reply:
    """A reply that was not the one the command called for (a 250 to DATA
    instead of 354): a success there would record mail that never went."""
    if not reply.is_success:
        return reply
    return Reply(451, "4.5.0", f"unexpected reply {reply}; nothing was sent")


def _checked(command: str) -> str:
    # Addresses were validated on the way in; this is the last line of
    # defence against a CR or LF smuggling a second command (RFC 5321 2.3.8).
    if "\r" in command or "\n" in command:
        raise ValueError("an SMTP command may not contain CR or LF")
    return command


def _needs_smtputf8(sender: str, data: bytes) -> bool:
    # RFC 6531 3.4: a UTF-8 address or UTF-8 header fields (RFC 6532) need the
    # SMTPUTF8 parameter; a UTF-8 body alone needs only 8BITMIME.
    head = data.split(b"\r\n\r\n", 1)[0]
    return not (sender.isascii() and head.isascii())


def _cause(exc: BaseException) -> str:
    cause = exc.__cause__ or exc
    return str(cause) or type(cause).__name__


def _timeout_hint(endpoint: Endpoint) -> str:
    hint = ""
    if endpoint.security is not Security.tls and endpoint.port == 465:
        hint = "; port 465 expects implicit TLS: use security 'tls'"
    return f"timed out waiting for {endpoint.host}:{endpoint.port}{hint}"
