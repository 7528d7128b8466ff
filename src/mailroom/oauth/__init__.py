"""Mailboxes connected with OAuth 2.0: Gmail and Microsoft 365.

- ``providers``: each provider's endpoints, client and scopes, from the
  environment, defaulting to the provider's documented endpoints.
- ``flow``: the authorization-code flow with PKCE (RFC 6749 4.1, RFC 7636),
  split into "build the consent address" and "complete with the code" so that
  any redirect receiver can drive it.
- ``loopback``: the command line's receiver, a one-shot HTTP listener on the
  loopback interface (RFC 8252 7.3).
- ``tokens``: access tokens per channel, refreshed before they expire, and the
  end of access when the provider refuses the grant.
- ``connect``: the use case that connects or reconnects a channel.

The errors live here so that every module shares one base.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailroom.delivery.replies import Reply
from mailroom.delivery.transport import AuthRefused
from mailroom.errors import ChannelConnectError, MailroomError

if TYPE_CHECKING:
    from mailroom.core import Mailroom
    from mailroom.oauth.tokens import TokenManager


class OAuthError(MailroomError):
    """Base of the OAuth errors; the text never holds a token or a code."""


class AuthorizationError(OAuthError, PermissionError):
    """The consent step failed: refused, forged, or the exchange did not work."""


class IdentityMismatch(AuthorizationError):
    """The mailbox that was connected is not the one asked for."""

    def __init__(self, expected: str, connected: str) -> None:
        super().__init__(
            f"the provider connected {connected}, not {expected}; sign in as "
            f"{expected} in the browser, or pass --owner {connected}"
        )
        self.expected = expected
        self.connected = connected


class CallbackTimeout(AuthorizationError, TimeoutError):
    """Nobody came back to the redirect address in time."""


class TokenRefreshError(OAuthError, ChannelConnectError):
    """A refresh failed for a reason that may pass (network, server, settings)."""


class AccessEnded(OAuthError, AuthRefused):
    """The provider no longer honours the grant; the mailbox must reconnect.

    It is an ``AuthRefused`` so that the delivery engine treats it like an
    XOAUTH2 refusal: the channel is disconnected and its mail held, never
    failed.  The reply is made up here (535 5.7.8 is Gmail's code for bad
    credentials) and carries the provider's own reason.
    """

    # The token manager disconnected the channel and held its mail already.
    already_recorded = True

    def __init__(self, reason: str) -> None:
        super().__init__(Reply(535, "5.7.8", reason))
        # Shown as the provider's reason alone, not as an SMTP refusal.
        self.args = (reason,)
        self.reason = reason


def install(mr: Mailroom) -> TokenManager:
    """Give ``mr``'s delivery engine access tokens for OAuth channels."""
    from mailroom.oauth.providers import load_providers
    from mailroom.oauth.tokens import TokenManager

    manager = TokenManager(mr.channels, mr.outbox, load_providers(), mr.clock)
    mr.token_sources = manager.token_source
    return manager


__all__ = [
    "AccessEnded",
    "AuthorizationError",
    "CallbackTimeout",
    "IdentityMismatch",
    "OAuthError",
    "TokenRefreshError",
    "install",
]
