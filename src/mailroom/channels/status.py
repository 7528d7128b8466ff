"""A channel's status changes that move its waiting mail with them.

Disconnecting holds the mail (never fails it); reopening a disconnected
channel queues its held mail again, and reopening a paused one makes its
waiting mail due now.  Each change is an event in the channel's history.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailroom.channels.model import Channel, ChannelStatus

if TYPE_CHECKING:
    from mailroom.channels.registry import ChannelRegistry
    from mailroom.store.outbox import Outbox


def disconnect(
    registry: ChannelRegistry, outbox: Outbox, channel_id: int, reason: str
) -> int:
    """Mark the channel disconnected and hold its mail; how many are held."""
    registry.set_status(channel_id, ChannelStatus.disconnected, reason)
    outbox.add_event("channel-disconnected", reason, channel_id=channel_id)
    return outbox.hold_channel(channel_id, reason)


def reopen(outbox: Outbox, before: Channel, why: str) -> int:
    """Let the mail of a channel that was disconnected or paused go again
    (its status is set already); how many messages may go now."""
    if before.status is ChannelStatus.disconnected:
        queued = outbox.resume_channel(before.id)
    else:
        queued = outbox.wake_channel(before.id)
    outbox.add_event(
        "channel-reconnected",
        f"{why}; {queued} message(s) to try again",
        channel_id=before.id,
    )
    return queued
