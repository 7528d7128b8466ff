"""A channel's runner stopping early: the channel's new status, and its mail's.

Replies that concern the whole channel (throttling, a used-up quota, refused
credentials), a server that cannot be reached and a limit whose next slot is
far off all end the runner's work on the channel.  ``ChannelStop`` decides the
channel's status, why its mail waits and until when, and applies that to the
mail once every session has given its messages back.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from mailroom.channels.model import Channel, ChannelStatus
from mailroom.channels.registry import ChannelRegistry
from mailroom.clock import Clock
from mailroom.delivery.limits import RateLimiter
from mailroom.delivery.outcome import ChannelSignal, RoundResult
from mailroom.delivery.policy import RetryPolicy
from mailroom.delivery.replies import Reply, ReplyClass, describe
from mailroom.store.outbox import Outbox

log = logging.getLogger("mailroom.delivery")

# A provider that reports a used-up quota counts its own 24 hours; without a
# daily limit configured, the best guess is to rest an hour and try again.
QUOTA_REST = 3600.0


class ChannelStop:
    """Whether, why and until when a channel's runner stops."""

    def __init__(
        self,
        channel: Channel,
        registry: ChannelRegistry,
        outbox: Outbox,
        clock: Clock,
        retry: RetryPolicy,
        limiter: RateLimiter,
    ) -> None:
        self.channel = channel
        self.registry = registry
        self.outbox = outbox
        self.clock = clock
        self.retry = retry
        self.limiter = limiter
        self.stopped = False
        # Held mail waits for a person; other mail until ``wait_until``.
        self.hold_reason: str | None = None
        self.wait_until: datetime | None = None
        self.wait_reason = ""
        self._throttle_strikes = 0

    def react(self, result: RoundResult) -> tuple[datetime | None, str]:
        """Apply a round's channel-wide signal; until when and why mail waits."""
        reply = result.signal_reply
        if result.signal is ChannelSignal.disconnected:
            self.after_auth_refused(reply)
            return None, self.wait_reason
        if result.signal is ChannelSignal.throttled:
            self._throttle_strikes += 1
            pause = self.retry.pause(self._throttle_strikes)
            return self._pause(pause, ReplyClass.throttled, reply)
        if result.signal is ChannelSignal.quota:
            return self._pause(self._quota_rest(), ReplyClass.quota, reply)
        self._throttle_strikes = 0
        return None, ""

    def for_limit(self, slot: datetime) -> None:
        """The channel's next slot is too far off to wait for in place."""
        reason = (
            f"waiting for channel {self.channel.name}'s limit "
            f"({self.channel.limits.describe()}); next try at {at_text(slot)}"
        )
        self._stop(slot, reason)

    def after_connect_error(self, error: str) -> None:
        """No session could be opened: rest, longer after each failure."""
        self._throttle_strikes += 1
        seconds = self.retry.pause(self._throttle_strikes)
        until = self.clock.now() + timedelta(seconds=seconds)
        reason = f"cannot reach the server: {error}; next try at {at_text(until)}"
        self.registry.set_status(self.channel.id, ChannelStatus.paused, reason, until)
        log.warning("channel=%s paused: %s", self.channel.name, reason)
        self._stop(until, reason)

    def after_auth_refused(self, reply: Reply | None) -> None:
        """Credentials refused: disconnect the channel and hold its mail."""
        reason = (
            f"{describe(ReplyClass.auth)}: {reply}; store new credentials with "
            f"`mailroom channel update {self.channel.name} --password` "
            "(--password-stdin in a script)"
        )
        self.registry.set_status(self.channel.id, ChannelStatus.disconnected, reason)
        self.outbox.add_event(
            "channel-disconnected", reason, channel_id=self.channel.id
        )
        log.warning("channel=%s disconnected: %s", self.channel.name, reason)
        self.already_held(reason)

    def already_held(self, reason: str) -> None:
        """The channel is disconnected already (the OAuth layer said so)."""
        self.hold_reason = reason
        self._stop(None, reason)

    def apply(self) -> None:
        """Hold or defer the channel's waiting mail.

        Done once every session has given its messages back, so that none of
        them escapes the hold or the wait.
        """
        if self.hold_reason is not None:
            self.outbox.hold_channel(self.channel.id, self.hold_reason)
        elif self.wait_until is not None:
            self.outbox.defer_channel(
                self.channel.id, self.wait_until, self.wait_reason
            )

    def _stop(self, until: datetime | None, reason: str) -> None:
        self.stopped = True
        self.wait_until = until
        self.wait_reason = reason

    def _pause(
        self, seconds: float, reply_class: ReplyClass, reply: Reply | None
    ) -> tuple[datetime, str]:
        until = self.clock.now() + timedelta(seconds=seconds)
        reason = f"{describe(reply_class)} ({reply}); next try at {at_text(until)}"
        self.registry.set_status(self.channel.id, ChannelStatus.paused, reason, until)
        self._stop(until, reason)
        return until, reason

    def _quota_rest(self) -> float:
        now = self.clock.now()
        if self.channel.limits.per_day:
            slot = self.limiter.next_slot(now, self.channel.limits.per_day)
            return max(QUOTA_REST, (slot - now).total_seconds())
        return QUOTA_REST


def at_text(moment: datetime | None) -> str:
    """A moment as reasons and logs write it."""
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "-"
