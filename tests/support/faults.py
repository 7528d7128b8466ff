"""A scriptable SMTP server for tests, built on aiosmtpd.

``FaultServer`` answers like a healthy server until a test scripts a fault:

    server.script("RCPT", "550 5.1.1 <x@example.com>: user unknown",
                  match="x@example.com")
    server.script("MAIL", "421 4.7.0 Try again later", times=1)
    server.drop_after(messages=2)

Rules are tried in the order they were added; the first that matches fires, and
one with ``times`` stops after that many replies.  A DATA rule answers the end
of the message content, where providers put quota and content refusals.  Any
421 reply closes the connection after it is sent, as RFC 5321 3.8 asks.

Everything is recorded: each transaction that reached the end of DATA (with the
reply it got), a transcript of commands per connection with AUTH credentials
redacted, and the number of connections.
"""

from __future__ import annotations

import asyncio
import re
import threading
from dataclasses import dataclass, field
from typing import Any, AnyStr, Final

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from mailroom.sandbox.server import ListeningServer, LoopbackListener
from mailroom.secrets import Secret
from tests.support.tls import TestCA

VERBS: Final = frozenset({"EHLO", "AUTH", "MAIL", "RCPT", "DATA"})
ADDRESS_VERBS: Final = frozenset({"MAIL", "RCPT"})
# A fault is a transient (4xx) or permanent (5xx) reply on one line.
FAULT_REPLY: Final = re.compile(r"[45][0-9]{2} [^\r\n]+\Z")
# RFC 5321 3.8: after 421 the server closes the transmission channel.
CLOSING_CODE: Final = "421"

MAIL_OK: Final = "250 2.1.0 Sender OK"
RCPT_OK: Final = "250 2.1.5 Recipient OK"
QUEUED: Final = "250 2.0.0 Message accepted"
AUTH_INVALID: Final = "535 5.7.8 Authentication credentials invalid"
REDACTED: Final = "[redacted]"
SERVER_NAME: Final = "localhost"


@dataclass
class Rule:
    """One scripted reply; ``times`` counts down, None means every time."""

    verb: str
    reply: str
    match: str | None = None
    times: int | None = None

    def applies(self, verb: str, address: str | None) -> bool:
        if verb != self.verb or self.times == 0:
            return False
        return self.match is None or _same_address(self.match, address)


@dataclass(frozen=True)
class Transaction:
    """A transaction that reached the end of DATA, and the reply it got."""

    envelope_from: str
    envelope_rcpts: tuple[str, ...]
    data: bytes
    reply: str

    @property
    def accepted(self) -> bool:
        """Whether the server took the message (a 2xx reply)."""
        return self.reply.startswith("2")


@dataclass
class _Records:
    """What the server saw; guarded by the server's lock."""

    rules: list[Rule] = field(default_factory=list)
    received: list[Transaction] = field(default_factory=list)
    transcripts: list[list[str]] = field(default_factory=list)
    connections: int = 0
    drop_after: int | None = None


def _same_address(wanted: str, address: str | None) -> bool:
    return address is not None and address.casefold() == wanted.casefold()


class FaultServer(ListeningServer):
    """An SMTP server on loopback whose replies a test scripts per verb.

    ``tls`` turns on STARTTLS with a certificate from that CA (required before
    any mail command unless ``require_starttls`` is False); ``username`` and
    ``password`` turn on AUTH PLAIN and LOGIN and make it required.  Run it in
    a thread with ``start``/``stop`` or ``with``, or on the running loop with
    ``async with``.
    """

    def __init__(
        self,
        *,
        tls: TestCA | None = None,
        require_starttls: bool = True,
        username: str | None = None,
        password: Secret | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        pipelining: bool = False,
    ) -> None:
        if (username is None) != (password is None):
            raise ValueError("give both username and password, or neither")
        # aiosmtpd answers pipelined commands in order; it just does not say so.
        self.pipelining = pipelining
        self._tls = tls.server_context() if tls is not None else None
        self._require_starttls = require_starttls
        self._username = username
        self._password = password
        self._lock = threading.Lock()
        self._records = _Records()
        self._listener = LoopbackListener(self._protocol, host=host, port=port)

    # -- scripting -------------------------------------------------------

    def script(
        self,
        verb: str,
        reply: str,
        *,
        match: str | None = None,
        times: int | None = None,
    ) -> None:
        """Answer ``verb`` with ``reply`` (for ``match`` only, ``times`` times)."""
        verb = verb.upper()
        if verb not in VERBS:
            raise ValueError(f"verb must be one of {sorted(VERBS)}, not {verb!r}")
        if not FAULT_REPLY.match(reply):
            raise ValueError(f"not a one-line 4xx or 5xx reply: {reply!r}")
        if match is not None and verb not in ADDRESS_VERBS:
            raise ValueError("match applies to MAIL and RCPT only")
        if times is not None and times < 1:
            raise ValueError("times must be at least 1")

        with self._lock:
            self._records.rules.append(Rule(verb, reply, match, times))

    def drop_after(self, messages: int) -> None:
        """Close each connection without a reply once it has sent ``messages``.

        The close comes on the next MAIL, as when a server goes away between
        two transactions; the client must reconnect.
        """
        if messages < 0:
            raise ValueError("messages must not be negative")
        with self._lock:
            self._records.drop_after = messages

    def clear_script(self) -> None:
        """Forget every rule and the drop setting; records are kept."""
        with self._lock:
            self._records.rules.clear()
            self._records.drop_after = None

    # -- records ---------------------------------------------------------

    @property
    def received(self) -> list[Transaction]:
        """Every transaction that reached the end of DATA, oldest first."""
        with self._lock:
            return list(self._records.received)

    @property
    def transcripts(self) -> list[list[str]]:
        """The commands of each connection, in order, AUTH data redacted."""
        with self._lock:
            return [list(lines) for lines in self._records.transcripts]

    @property
    def connections(self) -> int:
        """How many connections the server has accepted."""
        with self._lock:
            return self._records.connections

    # -- used by the protocol --------------------------------------------

    def fault_for(self, verb: str, address: str | None = None) -> str | None:
        """The scripted reply for this command, if a rule fires."""
        with self._lock:
            for rule in self._records.rules:
                if rule.applies(verb, address):
                    if rule.times is not None:
                        rule.times -= 1
                    return rule.reply
        return None

    def drops_now(self, sent: int) -> bool:
        """Whether a connection that has sent ``sent`` messages is cut off."""
        with self._lock:
            limit = self._records.drop_after
        return limit is not None and sent >= limit

    def record(self, transaction: Transaction) -> None:
        with self._lock:
            self._records.received.append(transaction)

    def check_login(self, given: LoginPassword) -> bool:
        """Whether the login matches the configured user name and password."""
        assert self._username is not None and self._password is not None
        login_ok = given.login == self._username.encode("utf-8")
        return login_ok and given.password == self._password.reveal().encode()

    def _protocol(self, loop: asyncio.AbstractEventLoop) -> SMTP:
        transcript: list[str] = []
        with self._lock:
            self._records.connections += 1
            self._records.transcripts.append(transcript)

        with_auth = self._username is not None
        return _FaultSMTP(
            _FaultHandler(self),
            transcript=transcript,
            fault=self,
            loop=loop,
            hostname=SERVER_NAME,
            tls_context=self._tls,
            require_starttls=self._require_starttls,
            auth_required=with_auth,
            # Without TLS, AUTH is allowed in clear so plain tests can log in.
            auth_require_tls=self._tls is not None,
            authenticator=_authenticate if with_auth else None,
            enable_SMTPUTF8=True,
            decode_data=False,
        )


def _authenticate(
    server: SMTP,
    session: Session,
    envelope: Envelope,
    mechanism: str,
    auth_data: Any,
) -> AuthResult:
    """Fail with the scripted reply, else check the credentials."""
    assert isinstance(server, _FaultSMTP)
    fault = server.fault.fault_for("AUTH")
    if fault is not None:
        return AuthResult(success=False, handled=False, message=fault)

    if isinstance(auth_data, LoginPassword) and server.fault.check_login(auth_data):
        return AuthResult(success=True, auth_data=auth_data.login.decode())
    return AuthResult(success=False, handled=False, message=AUTH_INVALID)


class _FaultHandler:
    """aiosmtpd hooks that apply MAIL, RCPT and DATA rules and record DATA."""

    def __init__(self, fault: FaultServer) -> None:
        self._fault = fault

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname  # what aiosmtpd does without this hook
        if self._fault.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        fault = self._fault.fault_for("MAIL", address)
        if fault is not None:
            return fault
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return MAIL_OK

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        fault = self._fault.fault_for("RCPT", address)
        if fault is not None:
            return fault
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return RCPT_OK

    async def handle_DATA(
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        reply = self._fault.fault_for("DATA") or QUEUED
        assert envelope.mail_from is not None
        assert isinstance(envelope.original_content, bytes)
        self._fault.record(
            Transaction(
                envelope.mail_from,
                tuple(envelope.rcpt_tos),
                envelope.original_content,
                reply,
            )
        )

        if reply.startswith("2"):
            assert isinstance(server, _FaultSMTP)
            server.accepted += 1
        return reply


class _FaultSMTP(SMTP):
    """aiosmtpd's protocol, plus a transcript, EHLO faults and dropping."""

    def __init__(
        self,
        handler: _FaultHandler,
        *,
        transcript: list[str],
        fault: FaultServer,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        self.transcript = transcript
        self.fault = fault
        self.accepted = 0

    async def push(self, status: AnyStr) -> None:
        await super().push(status)
        text = status if isinstance(status, str) else status.decode()
        if text.startswith(CLOSING_CODE) and self.transport is not None:
            self.transport.close()

    async def smtp_EHLO(self, hostname: str) -> None:
        self._note("EHLO", hostname)
        fault = self.fault.fault_for("EHLO")
        if fault is not None:
            await self.push(fault)
            return
        await super().smtp_EHLO(hostname)

    async def smtp_HELO(self, hostname: str) -> None:
        self._note("HELO", hostname)
        await super().smtp_HELO(hostname)

    async def smtp_STARTTLS(self, arg: str) -> None:
        self._note("STARTTLS", arg)
        await super().smtp_STARTTLS(arg)

    async def smtp_AUTH(self, arg: str) -> None:
        # RFC 4954 4: the initial response carries the credentials.
        mechanism, _, secret = (arg or "").partition(" ")
        self._note("AUTH", f"{mechanism} {REDACTED}" if secret else mechanism)
        await super().smtp_AUTH(arg)

    async def smtp_MAIL(self, arg: str) -> None:
        self._note("MAIL", arg)
        if self.fault.drops_now(self.accepted) and self.transport is not None:
            self.transport.close()
            return
        await super().smtp_MAIL(arg)

    async def smtp_RCPT(self, arg: str) -> None:
        self._note("RCPT", arg)
        await super().smtp_RCPT(arg)

    async def smtp_DATA(self, arg: str) -> None:
        self._note("DATA", arg)
        await super().smtp_DATA(arg)

    async def smtp_RSET(self, arg: str) -> None:
        self._note("RSET", arg)
        await super().smtp_RSET(arg)

    async def smtp_NOOP(self, arg: str) -> None:
        self._note("NOOP", arg)
        await super().smtp_NOOP(arg)

    async def smtp_QUIT(self, arg: str) -> None:
        self._note("QUIT", arg)
        await super().smtp_QUIT(arg)

    def _note(self, verb: str, arg: str | None) -> None:
        # The transcript list is shared with the server; appends are atomic.
        self.transcript.append(f"{verb} {arg}" if arg else verb)
