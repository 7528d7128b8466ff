"""The built-in sandbox: a real SMTP submission server on loopback.

It behaves like a careful provider, so that a demo exercises the same paths as a
real channel: STARTTLS is required before anything else (RFC 3207 4), AUTH PLAIN
and LOGIN (RFC 4954) only over TLS, SMTPUTF8 (RFC 6531) and 8BITMIME (RFC 6152)
are offered, messages are capped by SIZE (RFC 1870), and an optional per-minute
limit answers like a throttling provider.  Accepted messages land in a Maildir.

``LoopbackListener`` runs any aiosmtpd protocol on a loopback port, either in
its own thread (``start``/``stop``) or on the running event loop (``open``/
``close``); the test suite's fault server uses it too.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import mailbox
import ssl
import threading
import weakref
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

from aiosmtpd.smtp import (
    SMTP,
    AuthResult,
    Envelope,
    LoginPassword,
    Session,
    TLSSetupException,
)

from mailroom.clock import Clock, SystemClock
from mailroom.errors import InputError
from mailroom.i18n import Text
from mailroom.sandbox.certs import ensure_certificate, tls_folder
from mailroom.secrets import Secret

log = logging.getLogger("mailroom.sandbox")

# Replies this server words itself; aiosmtpd words the protocol errors.
MAIL_OK: Final = "250 2.1.0 Sender OK"
QUEUED: Final = "250 2.0.0 Message accepted, queued as {key}"
# RFC 3463 4.7.x: a policy deferral the client should retry later.
THROTTLED: Final = "451 4.7.1 Sandbox limit of {limit} messages a minute reached"

SERVER_NAME: Final = "localhost"
GREETING: Final = "mailroom sandbox ESMTP"
# The size most providers accept (Gmail and Microsoft 365 take 25 MB or more).
MAX_MESSAGE_SIZE: Final = 25 * 1024 * 1024
# RFC 5321 4.5.3.2.7: a server should wait at least five minutes for a command.
COMMAND_TIMEOUT: Final = 300.0
RATE_WINDOW: Final = timedelta(minutes=1)

# How long thread start-up and shut-down may take before we give up.
THREAD_TIMEOUT: Final = 10.0
# How long closing waits for open connections to go, polled in small steps.
CLOSE_POLLS: Final = 100
CLOSE_POLL_SECONDS: Final = 0.01

ProtocolFactory = Callable[[asyncio.AbstractEventLoop], SMTP]


@dataclass(frozen=True)
class DeliveredMessage:
    """One accepted transaction: the envelope and the message as received."""

    envelope_from: str
    envelope_rcpts: tuple[str, ...]
    data: bytes


def check_loopback(host: str) -> None:
    """Refuse any listening address but an IPv4 or IPv6 loopback literal."""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise InputError(
            "host",
            Text("{host!r} is not a loopback address", host=host),
            Text("use 127.0.0.1 or ::1"),
        )


class LoopbackListener:
    """Serves an aiosmtpd protocol on a loopback port.

    Use ``start``/``stop`` to run it in a thread of its own, or ``await open()``
    and ``await close()`` to run it on the current event loop.  With port 0 the
    system picks a free port, read back from the bound socket, so there is no
    window in which another process could take it.
    """

    def __init__(
        self, factory: ProtocolFactory, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        check_loopback(host)
        self._factory = factory
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None
        self._live: weakref.WeakSet[SMTP] = weakref.WeakSet()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        """The address the listener is bound to."""
        return self._host

    @property
    def port(self) -> int:
        """The bound port; the real one once open, even when 0 was asked for."""
        return self._port

    async def open(self) -> None:
        """Bind and start accepting connections on the running loop."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: self._connection(loop), self._host, self._port
        )
        self._port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop accepting, close open connections and wait for them to go."""
        if self._server is None:
            return
        self._server.close()
        await self._server.wait_closed()
        self._server = None

        # A polite close first; a TLS peer that never answers our close_notify
        # (RFC 8446 6.1) is then cut off, so shutdown stays bounded.
        for transport in self._open_transports():
            transport.close()
        if not await self._connections_gone():
            for transport in self._open_transports():
                transport.abort()
            await self._connections_gone()

    def start(self) -> None:
        """Run the listener on a new event loop in a daemon thread."""
        if self._loop is not None:
            raise RuntimeError("the listener is already running")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(
            target=loop.run_forever, name="mailroom-smtp-listener", daemon=True
        )
        thread.start()
        self._loop, self._thread = loop, thread

        try:
            self._in_thread(self.open())
        except BaseException:
            self._end_thread()
            raise

    def stop(self) -> None:
        """Close the listener and end its thread."""
        if self._loop is None:
            return
        try:
            self._in_thread(self._close_all())
        finally:
            self._end_thread()

    def _connection(self, loop: asyncio.AbstractEventLoop) -> SMTP:
        smtp = self._factory(loop)
        self._live.add(smtp)
        return smtp

    def _open_transports(self) -> list[asyncio.WriteTransport]:
        transports = (smtp.transport for smtp in self._live)
        return [t for t in transports if isinstance(t, asyncio.WriteTransport)]

    async def _connections_gone(self) -> bool:
        # aiosmtpd clears ``transport`` once a connection is lost.
        for _ in range(CLOSE_POLLS):
            if not self._open_transports():
                return True
            await asyncio.sleep(CLOSE_POLL_SECONDS)
        return False

    async def _close_all(self) -> None:
        """Close, then cancel what is left on this thread's own loop."""
        await self.close()
        current = asyncio.current_task()
        leftovers = [t for t in asyncio.all_tasks() if t is not current]
        for task in leftovers:
            task.cancel()
        await asyncio.gather(*leftovers, return_exceptions=True)

    def _in_thread(self, coro: Coroutine[Any, Any, None]) -> None:
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        future.result(timeout=THREAD_TIMEOUT)

    def _end_thread(self) -> None:
        loop, thread = self._loop, self._thread
        assert loop is not None and thread is not None
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=THREAD_TIMEOUT)
        if not thread.is_alive():
            loop.close()
        self._loop = self._thread = None


class ListeningServer:
    """A server on a ``LoopbackListener``: in a thread of its own (``start``,
    ``stop``, ``with``) or on the running event loop (``async with``)."""

    _listener: LoopbackListener

    @property
    def host(self) -> str:
        """The loopback address the server listens on."""
        return self._listener.host

    @property
    def port(self) -> int:
        """The port the server listens on, known once it has started."""
        return self._listener.port

    def start(self) -> None:
        """Listen in a background thread."""
        self._listener.start()
        self._started()

    def stop(self) -> None:
        """Stop listening and end the background thread."""
        self._listener.stop()
        self._stopped()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        await self._listener.open()
        self._started()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._listener.close()
        self._stopped()

    def _started(self) -> None:
        """Called once listening; subclasses may log."""

    def _stopped(self) -> None:
        """Called once stopped; subclasses may log."""


class _RateWindow:
    """Counts deliveries over the last minute against a limit."""

    def __init__(self, limit: int, clock: Clock) -> None:
        self.limit = limit
        self._clock = clock
        self._times: deque[datetime] = deque()

    def full(self) -> bool:
        """Whether another message would go over the limit now."""
        start = self._clock.now() - RATE_WINDOW
        while self._times and self._times[0] <= start:
            self._times.popleft()
        return len(self._times) >= self.limit

    def record(self) -> None:
        self._times.append(self._clock.now())


class _Credentials:
    """An aiosmtpd authenticator that accepts one user name and password."""

    def __init__(self, username: str, password: Secret) -> None:
        self._username = username.encode("utf-8")
        self._password = password

    def __call__(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        auth_data: Any,
    ) -> AuthResult:
        if isinstance(auth_data, LoginPassword) and self._matches(auth_data):
            return AuthResult(success=True, auth_data=self._username.decode())

        # Unhandled and without a message, aiosmtpd answers RFC 4954's
        # "535 5.7.8 Authentication credentials invalid".
        log.warning("sandbox AUTH %s refused from %s", mechanism, session.peer)
        return AuthResult(success=False, handled=False)

    def _matches(self, given: LoginPassword) -> bool:
        # Compare both in constant time, so timing tells nothing of either.
        password = self._password.reveal().encode("utf-8")
        user_ok = hmac.compare_digest(given.login, self._username)
        password_ok = hmac.compare_digest(given.password, password)
        return user_ok and password_ok


class _SandboxHandler:
    """aiosmtpd hooks: apply the rate limit, then store each message."""

    def __init__(self, maildir: mailbox.Maildir, limit: _RateWindow | None) -> None:
        self._maildir = maildir
        self._limit = limit
        # Written on the server's loop, read from the caller's thread.
        self._lock = threading.Lock()
        self._delivered: list[DeliveredMessage] = []

    def snapshot(self) -> list[DeliveredMessage]:
        """A copy of the accepted messages, oldest first."""
        with self._lock:
            return list(self._delivered)

    async def handle_exception(self, error: Exception) -> str:
        # aiosmtpd's hook for a session that failed.  A client that does not
        # trust the sandbox's certificate is the common case: one line that
        # says so, not a traceback.
        if isinstance(error, TLSSetupException):
            log.warning(
                "a client gave up the TLS handshake; does it trust the sandbox CA?"
            )
        else:
            log.error("session failed: %s", error, exc_info=error)
        return "451 4.3.0 the sandbox failed; try again"

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if self._limit is not None and self._limit.full():
            log.warning("sandbox rate limit reached for %s", session.peer)
            return THROTTLED.format(limit=self._limit.limit)

        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return MAIL_OK

    async def handle_DATA(
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        assert envelope.mail_from is not None
        assert isinstance(envelope.original_content, bytes)
        message = DeliveredMessage(
            envelope.mail_from, tuple(envelope.rcpt_tos), envelope.original_content
        )
        key = self._maildir.add(_maildir_bytes(message))

        with self._lock:
            self._delivered.append(message)
        if self._limit is not None:
            self._limit.record()
        log.info(
            "sandbox delivered key=%s rcpts=%d bytes=%d",
            key,
            len(message.envelope_rcpts),
            len(message.data),
        )
        return QUEUED.format(key=key)


def _maildir_bytes(message: DeliveredMessage) -> bytes:
    """The message with trace headers on top, in the Maildir's LF convention.

    RFC 5321 4.4: the final delivery adds Return-Path with the envelope sender.
    One X-Sandbox-Rcpt per envelope recipient keeps Bcc recipients visible.
    """
    trace = [f"Return-Path: <{message.envelope_from}>"]
    trace += [f"X-Sandbox-Rcpt: <{rcpt}>" for rcpt in message.envelope_rcpts]
    # aiosmtpd decodes addresses with surrogateescape; this restores the
    # original octets.  RFC 6532 allows UTF-8 in these header fields.
    head = "".join(line + "\n" for line in trace)
    body = message.data.replace(b"\r\n", b"\n")
    return head.encode("utf-8", "surrogateescape") + body


class SandboxServer(ListeningServer):
    """A loopback SMTP submission server that stores what it accepts.

    Run it in a thread with ``start()``/``stop()`` (or ``with``), or on the
    running event loop with ``async with``.  Clients verify its certificate
    against ``ca_path`` and log in with the configured user name and password.
    """

    def __init__(
        self,
        folder: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        username: str = "sandbox",
        password: Secret,
        per_minute_limit: int | None = None,
        clock: Clock | None = None,
    ) -> None:
        if per_minute_limit is not None and per_minute_limit < 1:
            raise InputError(
                "per_minute_limit",
                Text("must be at least 1"),
                Text("leave it unset for none"),
            )
        self._certs = ensure_certificate(tls_folder(folder))
        self._maildir_path = folder / "Maildir"
        self.username = username

        limit = None
        if per_minute_limit is not None:
            limit = _RateWindow(per_minute_limit, clock or SystemClock())
        maildir = mailbox.Maildir(self._maildir_path, create=True)
        self._handler = _SandboxHandler(maildir, limit)
        self._credentials = _Credentials(username, password)
        self._tls = self._tls_context()
        self._listener = LoopbackListener(self._protocol, host=host, port=port)

    @property
    def ca_path(self) -> Path:
        """The CA file clients load to verify the server's certificate."""
        return self._certs.ca

    @property
    def maildir_path(self) -> Path:
        """The Maildir that accepted messages are written to."""
        return self._maildir_path

    def delivered(self) -> list[DeliveredMessage]:
        """Messages accepted since this server was made, oldest first."""
        return self._handler.snapshot()

    def _started(self) -> None:
        log.info("sandbox listening on %s port %d", self.host, self.port)

    def _stopped(self) -> None:
        log.info("sandbox stopped")

    def _tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self._certs.cert, self._certs.key)
        return context

    def _protocol(self, loop: asyncio.AbstractEventLoop) -> SMTP:
        """One aiosmtpd protocol per connection, with the sandbox's policy."""
        return SMTP(
            self._handler,
            loop=loop,
            hostname=SERVER_NAME,
            ident=GREETING,
            tls_context=self._tls,
            require_starttls=True,
            auth_required=True,
            auth_require_tls=True,
            authenticator=self._credentials,
            enable_SMTPUTF8=True,
            decode_data=False,
            data_size_limit=MAX_MESSAGE_SIZE,
            timeout=COMMAND_TIMEOUT,
        )
