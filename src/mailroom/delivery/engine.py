"""The delivery engine: the worker's loop over channels with due mail.

Each pass takes back what dead workers left, then runs one ``ChannelRunner``
(``runner.py``) per channel that is ready, and sleeps until the next message is
due or new mail may have come.  Outcomes are committed as soon as the server
has answered, so a worker killed at any moment loses nothing it was told.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from mailroom.channels.model import Channel, ChannelStatus
from mailroom.channels.registry import ChannelRegistry
from mailroom.clock import Clock
from mailroom.delivery.limits import RateLimiter
from mailroom.delivery.policy import RetryPolicy
from mailroom.delivery.runner import ChannelRunner
from mailroom.delivery.transport import (
    TokenSource,
)
from mailroom.delivery.writer import OutcomeWriter
from mailroom.store.outbox import Outbox
from mailroom.store.records import Outcome, Pending

log = logging.getLogger("mailroom.delivery")

Progress = Callable[[Pending, Outcome], None]
TokenSources = Callable[[Channel], TokenSource | None]


@dataclass(slots=True)
class EngineOptions:
    batch: int = 50
    # Wait in place for a limiter slot this close; further away, give it back.
    max_wait: float = 5.0
    # How often an idle worker looks for new mail.
    poll: float = 1.0
    # Seconds to wait for any one reply (RFC 5321 4.5.3.2 suggests minutes
    # per command; a sending platform gives up sooner and tries again later).
    timeout: float = 30.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)


class Engine:
    def __init__(
        self,
        outbox: Outbox,
        registry: ChannelRegistry,
        clock: Clock,
        options: EngineOptions | None = None,
        *,
        token_sources: TokenSources | None = None,
        on_outcome: Progress | None = None,
    ) -> None:
        self.outbox = outbox
        self.registry = registry
        self.clock = clock
        self.options = options or EngineOptions()
        self.token_sources = token_sources
        self.on_outcome = on_outcome
        self._limiters: dict[int, RateLimiter] = {}
        self.writer = OutcomeWriter(outbox)

    async def run(
        self,
        *,
        until_idle: bool = False,
        watch: Sequence[int] | None = None,
        stop: asyncio.Event | None = None,
        deadline: datetime | None = None,
    ) -> None:
        """Deliver until stopped; or until nothing is due (``until_idle``); or
        until the messages in ``watch`` have all settled or are held, or none
        of them can go before ``deadline``."""
        recovered = self.outbox.claims.recover()
        if recovered:
            log.warning("requeued %d message(s) left by a stopped worker", recovered)

        while not (stop and stop.is_set()):
            worked = await self.run_once()
            if watch is not None and self._watch_done(watch, deadline):
                return
            until_idle = until_idle and watch is None
            if until_idle and not worked:
                return
            due = self._next_due()
            if until_idle and not self._due_within_poll(due):
                # Another pass, a poll from now, could only find nothing.
                return
            await self._idle(due, stop)

    def _watch_done(self, watch: Sequence[int], deadline: datetime | None) -> bool:
        if self.outbox.count_unsettled(watch) == 0:
            return True
        if deadline is None:
            return False
        due = self.outbox.next_due_of(watch)
        return self.clock.now() >= deadline or (due is not None and due > deadline)

    async def run_once(self) -> bool:
        """One pass over every channel with due mail; True if any was tried."""
        if self.outbox.claims.recover():
            # What dead workers may have sent is now in the history: reseed.
            self._limiters.clear()
        channels = self._ready_channels()
        runners = [ChannelRunner(self, channel) for channel in channels]
        results = await asyncio.gather(*(runner.run() for runner in runners))
        return any(results)

    def limiter(self, channel: Channel) -> RateLimiter:
        limiter = self._limiters.get(channel.id)
        if limiter is None or limiter.limits != channel.limits:
            limiter = RateLimiter(channel.limits, self.outbox.history(channel.id))
            self._limiters[channel.id] = limiter
        return limiter

    def _ready_channels(self) -> list[Channel]:
        now = self.clock.now()
        ready = []
        for channel in self.registry.list(everything=True):
            if channel.status is ChannelStatus.disconnected:
                continue
            if channel.status is ChannelStatus.paused:
                if channel.paused_until and channel.paused_until > now:
                    continue
                self.registry.set_status(channel.id, ChannelStatus.connected)
            ready.append(channel)
        return ready

    def _due_within_poll(self, due: datetime | None) -> bool:
        if due is None:
            return False
        return (due - self.clock.now()).total_seconds() <= self.options.poll

    def _next_due(self) -> datetime | None:
        return self.outbox.next_due([c.id for c in self._ready_channels()])

    async def _idle(self, due: datetime | None, stop: asyncio.Event | None) -> None:
        wait = self.options.poll
        if due is not None:
            wait = min(wait, (due - self.clock.now()).total_seconds())
        if stop is None:
            await self.clock.sleep(max(wait, 0.0))
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=max(wait, 0.0))
