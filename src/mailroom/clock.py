"""Time as a dependency.

Everything that waits or counts over time (limits, retries, daily quotas) takes a
``Clock``, so a test can run a simulated week in a second with ``FakeClock``.
Times are timezone-aware UTC datetimes; ``sleep`` is the only way the engine
waits.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real wall clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class FakeClock:
    """A clock that moves only when told to, or when something sleeps on it.

    ``sleep`` advances the time at once and yields to the event loop, so code
    that waits for a window to free up finishes instantly in simulated time.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 5, 9, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)

    async def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self.advance(seconds)
        await asyncio.sleep(0)


def utcnow() -> datetime:
    return datetime.now(UTC)
