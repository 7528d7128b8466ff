"""The error tree.

``MailroomError`` is the base of everything raised on purpose.  Two branches:

- ``InputError``: bad input from a person or a file.  It names the field and says
  how to fix it.  It sits outside the delivery branch so that no retry loop ever
  swallows a configuration mistake.
- ``DeliveryError``: something went wrong talking to a server.  Subclasses also
  inherit the matching built-in type so callers can catch them generically.

No error text ever contains a secret: secrets are ``Secret`` values whose ``str``
is a placeholder, and lower-layer errors are wrapped once with a message written
here rather than passed through.

A message may be a ``Text`` (see ``mailroom.i18n``): the error is then made in
no particular language and speaks the current one when ``str()`` renders it.
``NotFoundError`` and ``RoutingError`` take one ``Text``; ``InputError`` keeps
its parts and puts them together when shown.
"""

from __future__ import annotations

from mailroom.i18n import Text


class MailroomError(Exception):
    """Base of every error mailroom raises on purpose."""


class InputError(MailroomError, ValueError):
    """Bad input: names the field at fault and how to fix it."""

    def __init__(self, field: str, problem: str | Text, fix: str | Text = "") -> None:
        super().__init__(field, problem, fix)
        self.field = field
        self.problem = problem
        self.fix = fix

    def __str__(self) -> str:
        # Rendered when shown, so the language is the one current then.
        text = f"{self.field}: {self.problem}"
        fix = str(self.fix)
        if fix:
            text += f" ({fix})"
        return text


class NotFoundError(MailroomError, LookupError):
    """A team, channel, message or campaign that does not exist."""


class RoutingError(MailroomError):
    """No channel may carry this message; the text says why."""


class SenderNotAllowedError(RoutingError):
    """The sender may not use the channel (Office 365 would say SendAsDenied)."""


class StateError(MailroomError):
    """An illegal lifecycle transition."""


class DeliveryError(MailroomError):
    """A failure while talking to a delivery server."""


class ChannelConnectError(DeliveryError, ConnectionError):
    """The server could not be reached, or TLS could not be negotiated."""


class ChannelAuthError(DeliveryError, PermissionError):
    """The server refused the channel's credentials."""
