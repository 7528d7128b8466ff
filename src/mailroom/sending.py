"""Accepting a message: check it, route it, commit it.

Nothing is reported accepted before it is committed to the outbox, with its
Message-ID fixed.  A message for a disconnected channel is accepted as held:
it waits for the channel's credentials rather than failing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mailroom.addresses import Address, check_header_value, parse_address
from mailroom.channels.model import Channel, ChannelStatus
from mailroom.channels.routing import choose_channel
from mailroom.compose.message import make_message_id
from mailroom.core import Mailroom
from mailroom.errors import InputError, RoutingError
from mailroom.i18n import Text
from mailroom.store.records import NewMessage
from mailroom.store.states import MessageState
from mailroom.teams import Team


@dataclass(slots=True)
class OneOff:
    """A single message as a person writes it."""

    sender: str
    to: list[str]
    subject: str
    text: str | None = None
    html: str | None = None
    cc: list[str] = field(default_factory=list)
    bcc: list[str] = field(default_factory=list)
    reply_to: str | None = None
    channel: str | None = None
    # The team member sending; defaults to the From address.
    member: str | None = None


@dataclass(slots=True)
class Accepted:
    id: int
    message_id: str
    channel: str
    state: MessageState
    reason: str
    suppressed: list[str]


def route(
    mr: Mailroom, team: Team, sender: Address, member: str | None, name: str | None
) -> Channel:
    """The channel for this sender; raises ``RoutingError`` saying why not."""
    member = (member or sender.addr_spec).lower()
    channels = mr.channels.list(team.id)
    if name is not None and name not in {c.name for c in channels}:
        _refuse_other_teams_channel(mr, team, name)
    return choose_channel(channels, sender.addr_spec, member=member, requested=name)


def _refuse_other_teams_channel(mr: Mailroom, team: Team, name: str) -> None:
    # A channel of that name in another team is the likely mistake; say whose.
    owners = {
        mr.teams.by_id(c.team_id).name
        for c in mr.channels.list(everything=True)
        if c.name == name and c.team_id is not None and c.team_id != team.id
    }
    if owners:
        raise RoutingError(
            Text(
                "channel {name!r} belongs to team {owners}, not to {team}; "
                "send as a member of that team, or pick one of {team}'s channels",
                name=name,
                owners=", ".join(sorted(owners)),
                team=team.name,
            )
        )


def submit(mr: Mailroom, team: Team, request: OneOff) -> Accepted:
    """Validate, route and commit one message; returns what was accepted."""
    sender = parse_address(request.sender, "from")
    team.check_member(request.member or sender.addr_spec)
    channel = route(mr, team, sender, request.member, request.channel)
    to = [parse_address(a, "to") for a in request.to]
    cc = [parse_address(a, "cc") for a in request.cc]
    bcc = [parse_address(a, "bcc") for a in request.bcc]
    if not (to or cc or bcc):
        raise InputError(
            "to", Text("no recipients"), Text("pass at least one --to address")
        )

    suppressed = mr.teams.suppressed(team.id)
    envelope = _envelope(to, cc, bcc, suppressed)
    skipped = [
        a.addr_spec for a in [*to, *cc, *bcc] if a.addr_spec.lower() in suppressed
    ]
    if not envelope:
        raise InputError(
            "to",
            Text("every recipient is on the team's suppression list"),
            Text("remove them from the suppression list if they asked to hear again"),
        )

    content = draft_content(
        sender,
        to,
        cc,
        request.subject,
        request.text,
        request.html,
        parse_address(request.reply_to, "reply_to") if request.reply_to else None,
    )
    message = new_message(mr, team, channel, sender, content, envelope)
    [message_db_id] = mr.outbox.accept([message])
    return Accepted(
        message_db_id,
        message.message_id,
        channel.name,
        message.state,
        message.reason,
        skipped,
    )


def _envelope(
    to: list[Address], cc: list[Address], bcc: list[Address], suppressed: set[str]
) -> list[tuple[str, str]]:
    seen: set[str] = set()
    envelope = []
    for kind, group in (("to", to), ("cc", cc), ("bcc", bcc)):
        for address in group:
            key = address.addr_spec.lower()
            if key in seen or key in suppressed:
                continue
            seen.add(key)
            envelope.append((address.addr_spec, kind))
    return envelope


def draft_content(
    sender: Address,
    to: list[Address],
    cc: list[Address],
    subject: str,
    text: str | None,
    html: str | None,
    reply_to: Address | None = None,
) -> dict[str, Any]:
    """The stored form of a message: what ``render_message`` builds from."""
    check_header_value("subject", subject)
    if text is None and html is None:
        raise InputError("body", Text("is empty"), Text("pass --text or --html"))
    return {
        "from_name": sender.display_name,
        "to": [[a.display_name, a.addr_spec] for a in to],
        "cc": [[a.display_name, a.addr_spec] for a in cc],
        "reply_to": [reply_to.display_name, reply_to.addr_spec] if reply_to else None,
        "subject": subject,
        "text": text,
        "html": html,
    }


def new_message(
    mr: Mailroom,
    team: Team,
    channel: Channel,
    sender: Address,
    content: dict[str, Any],
    envelope: list[tuple[str, str]],
    campaign_id: int | None = None,
) -> NewMessage:
    content["date"] = mr.clock.now().isoformat()
    state, reason = initial_state(channel)
    return NewMessage(
        team_id=team.id,
        channel_id=channel.id,
        sender=sender.addr_spec,
        message_id=make_message_id(sender.domain),
        content=content,
        recipients=envelope,
        campaign_id=campaign_id,
        state=state,
        reason=reason,
    )


def initial_state(channel: Channel) -> tuple[MessageState, str]:
    if channel.status is ChannelStatus.disconnected:
        return (
            MessageState.held,
            f"channel {channel.name} is disconnected: {channel.status_reason}",
        )
    return MessageState.queued, ""
