"""Choosing the channel that carries a message.

In order: the channel asked for by name; else the sender's personal channel for
that address; else the team channel whose domains hold the From domain; else
the platform's default relay.  A message no channel may carry is refused with
the reason, before it is accepted.
"""

from __future__ import annotations

from collections.abc import Sequence

from mailroom.channels.model import Channel, Scope
from mailroom.errors import RoutingError, SenderNotAllowedError
from mailroom.i18n import Text


def choose_channel(
    channels: Sequence[Channel],
    sender: str,
    *,
    member: str | None = None,
    requested: str | None = None,
) -> Channel:
    """The channel for mail From ``sender``, sent by team member ``member``."""
    sender = sender.lower()
    member = (member or sender).lower()

    if requested is not None:
        return _requested(channels, requested, sender, member)

    for pick in (_personal, _team, _platform):
        channel = pick(channels, sender, member)
        if channel is not None:
            return channel

    raise RoutingError(
        Text(
            "no channel may send as {sender}: add a team channel for its domain, "
            "a personal channel for this mailbox, or a platform default relay",
            sender=sender,
        )
    )


def check_sender(channel: Channel, sender: str, member: str) -> None:
    """Refuse a sender the channel's scope forbids (Office 365: SendAsDenied)."""
    if channel.scope is Scope.personal and member != (channel.owner or ""):
        raise SenderNotAllowedError(
            Text(
                "channel {name!r} is {owner}'s own mailbox; {member} may not use it",
                name=channel.name,
                owner=channel.owner,
                member=member,
            )
        )
    if not channel.may_send_as(sender):
        raise SenderNotAllowedError(_refusal(channel, sender))


def _refusal(channel: Channel, sender: str) -> Text:
    if channel.scope is Scope.personal:
        allowed = ", ".join([channel.owner or "", *channel.aliases])
        return Text(
            "channel {name!r} is a mailbox channel; it may send only as "
            "{allowed} (the server would refuse {sender} with SendAsDenied); "
            "add the address as an alias if the mailbox owns it",
            name=channel.name,
            allowed=allowed,
            sender=sender,
        )
    return Text(
        "channel {name!r} sends only from {domains}, not from {sender}",
        name=channel.name,
        domains=", ".join(channel.domains),
        sender=sender,
    )


def _requested(
    channels: Sequence[Channel], name: str, sender: str, member: str
) -> Channel:
    for channel in channels:
        if channel.name == name:
            check_sender(channel, sender, member)
            return channel
    raise RoutingError(
        Text(
            "no channel named {name!r} for this team; "
            "`mailroom channel list` shows them",
            name=name,
        )
    )


def _personal(channels: Sequence[Channel], sender: str, member: str) -> Channel | None:
    for channel in channels:
        own = channel.scope is Scope.personal and channel.owner == member
        if own and channel.may_send_as(sender):
            return channel
    return None


def _team(channels: Sequence[Channel], sender: str, member: str) -> Channel | None:
    for channel in channels:
        if channel.scope is Scope.team and channel.may_send_as(sender):
            return channel
    return None


def _platform(channels: Sequence[Channel], sender: str, member: str) -> Channel | None:
    for channel in channels:
        if channel.scope is Scope.platform:
            return channel
    return None
