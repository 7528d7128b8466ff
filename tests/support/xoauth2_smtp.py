"""An SMTP server that takes AUTH XOAUTH2 only, checking tokens with the test
authorization server in-process.

STARTTLS is required before AUTH, and AUTH before mail, as at smtp.gmail.com
and smtp.office365.com.  A token the ``OAuthServer`` did not issue to that
user, or has expired or revoked, gets Google's documented failure: a 334
challenge with a base64 JSON error, then, after the client's empty line,
``535 5.7.3 Authentication unsuccessful`` (Exchange Online's wording).
Delivered messages are recorded with the user who sent them.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import threading
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session

from mailroom.sandbox.server import LoopbackListener
from tests.support.oauth_server import OAuthServer
from tests.support.tls import TestCA

REFUSED: Final = "535 5.7.3 Authentication unsuccessful"
# Google's XOAUTH2 error challenge (developers.google.com, XOAUTH2 protocol).
ERROR_CHALLENGE: Final = json.dumps(
    {"status": "401", "schemes": "bearer", "scope": "https://mail.google.com/"}
)


@dataclass(frozen=True)
class Delivered:
    user: str
    envelope_from: str
    envelope_rcpts: tuple[str, ...]
    data: bytes


class XOAuth2Server:
    """Run with ``with`` (a thread of its own); ``host``/``port`` once started."""

    def __init__(self, oauth: OAuthServer, tls: TestCA) -> None:
        self.oauth = oauth
        self._tls = tls.server_context()
        self._lock = threading.Lock()
        self._delivered: list[Delivered] = []
        self.auth_attempts = 0
        self.auth_refusals = 0
        self._listener = LoopbackListener(self._protocol)

    @property
    def host(self) -> str:
        return self._listener.host

    @property
    def port(self) -> int:
        return self._listener.port

    @property
    def delivered(self) -> list[Delivered]:
        with self._lock:
            return list(self._delivered)

    def record(self, item: Delivered) -> None:
        with self._lock:
            self._delivered.append(item)

    def count_auth(self, accepted: bool) -> None:
        with self._lock:
            self.auth_attempts += 1
            self.auth_refusals += not accepted

    def __enter__(self) -> Self:
        self._listener.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._listener.stop()

    def _protocol(self, loop: asyncio.AbstractEventLoop) -> SMTP:
        return SMTP(
            _Handler(self),
            loop=loop,
            hostname="localhost",
            tls_context=self._tls,
            require_starttls=True,
            auth_required=True,
            auth_require_tls=True,
            # XOAUTH2 only: the built-in PLAIN and LOGIN are switched off.
            auth_exclude_mechanism=["PLAIN", "LOGIN"],
            decode_data=False,
        )


class _Handler:
    def __init__(self, server: XOAuth2Server) -> None:
        self._server = server

    async def auth_XOAUTH2(self, smtp: SMTP, args: list[str]) -> AuthResult:
        blob: Any = args[1] if len(args) > 1 else await smtp.challenge_auth("")
        user, token = _parse(blob)
        accepted = bool(user) and self._server.oauth.check_access(token, user)
        self._server.count_auth(accepted)
        if accepted:
            return AuthResult(success=True, auth_data=user)
        await smtp.challenge_auth(ERROR_CHALLENGE)
        return AuthResult(success=False, handled=False, message=REFUSED)

    async def handle_DATA(
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        assert envelope.mail_from is not None
        assert isinstance(envelope.original_content, bytes)
        self._server.record(
            Delivered(
                str(session.auth_data),
                envelope.mail_from,
                tuple(envelope.rcpt_tos),
                envelope.original_content,
            )
        )
        return "250 2.0.0 OK"


def _parse(blob: Any) -> tuple[str, str]:
    """``user=U^Aauth=Bearer T^A^A`` (Google's XOAUTH2 format) into U and T."""
    try:
        raw = blob if isinstance(blob, bytes) else base64.b64decode(blob)
        fields = raw.decode("utf-8").split("\x01")
    except (binascii.Error, UnicodeDecodeError, TypeError):
        return "", ""
    values = dict(f.split("=", 1) for f in fields if "=" in f)
    token = values.get("auth", "").removeprefix("Bearer ")
    return values.get("user", "").lower(), token
