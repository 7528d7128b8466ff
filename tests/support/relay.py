"""A plain relay channel on a loopback server, and one-off messages for it."""

from __future__ import annotations

from mailroom.channels.model import Security
from mailroom.channels.registry import ChannelSpec
from mailroom.core import Mailroom
from mailroom.sending import OneOff, submit
from mailroom.teams import Team


def queue_via_relay(mr: Mailroom, team: Team, port: int, *to: str) -> list[int]:
    """Add channel "relay" (no TLS) for example.com and queue one message to
    each address; returns their ids, in order."""
    mr.channels.add(
        ChannelSpec(
            name="relay",
            kind="smtp",
            team_id=team.id,
            host="127.0.0.1",
            port=port,
            security=Security.none,
            domains=["example.com"],
        )
    )
    return [
        submit(mr, team, OneOff("alice@example.com", [r], "Hi", "x")).id for r in to
    ]
