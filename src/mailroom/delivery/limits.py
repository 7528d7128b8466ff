"""Sliding-window limits for one channel, on an injectable clock.

A slot is reserved before MAIL FROM, so the server never sees more than the
limit in any window even when a transaction later fails: counting a refused
transaction is the safe side of the mistake.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Final, TypeVar

from mailroom.channels.model import Limits
from mailroom.errors import InputError
from mailroom.i18n import Text
from mailroom.store.records import Send

MINUTE: Final = timedelta(minutes=1)
DAY: Final = timedelta(hours=24)


class RateLimiter:
    """Messages per sliding minute, recipients per rolling 24 h, spacing."""

    def __init__(self, limits: Limits, history: Iterable[Send] = ()) -> None:
        self.limits = limits
        self._minute: deque[datetime] = deque()
        self._day: deque[Send] = deque()
        self._day_total = 0
        self._last: datetime | None = None
        for send in sorted(history, key=lambda s: s.at):
            self.record(send.at, send.recipients)

    def next_slot(self, now: datetime, recipients: int) -> datetime:
        """The earliest time, not before ``now``, a transaction may start."""
        self._check_fits(recipients)
        self._forget(now)
        return max(
            self._minute_slot(now),
            self._day_slot(now, recipients),
            self._spacing_slot(now),
        )

    def record(self, at: datetime, recipients: int) -> None:
        """Count a transaction that starts at ``at``.

        Only the windows that have a limit keep their sends, so a channel with
        no limits costs no memory however long the worker runs.
        """
        if self.limits.per_minute is not None:
            self._minute.append(at)
        if self.limits.per_day is not None:
            self._day.append(Send(at, recipients))
            self._day_total += recipients
        self._last = at if self._last is None else max(self._last, at)

    @property
    def remembered(self) -> int:
        """How many sends the windows hold (for tests of memory use)."""
        return len(self._minute) + len(self._day)

    def finish_time(self, now: datetime, batches: Iterable[int]) -> datetime:
        """When transactions of these sizes would be done, sent in order."""
        trial = self._copy()
        at = now
        for recipients in batches:
            at = trial.next_slot(at, recipients)
            trial.record(at, recipients)
        return at

    def _copy(self) -> RateLimiter:
        trial = RateLimiter(self.limits)
        trial._minute = deque(self._minute)
        trial._day = deque(self._day)
        trial._day_total = self._day_total
        trial._last = self._last
        return trial

    def _check_fits(self, recipients: int) -> None:
        per_day = self.limits.per_day
        if per_day is not None and recipients > per_day:
            raise InputError(
                "max_recipients",
                Text(
                    "a transaction of {recipients} recipients exceeds the daily "
                    "limit of {per_day}",
                    recipients=recipients,
                    per_day=per_day,
                ),
                Text("set --max-recipients at or below --per-day"),
            )

    def _forget(self, now: datetime) -> None:
        while self._minute and self._minute[0] <= now - MINUTE:
            self._minute.popleft()
        while self._day and self._day[0].at <= now - DAY:
            self._day_total -= self._day.popleft().recipients

    def _minute_slot(self, now: datetime) -> datetime:
        limit = self.limits.per_minute
        if limit is None or len(self._minute) < limit:
            return now
        # The window frees when the send that makes it full turns a minute old.
        return max(now, self._minute[len(self._minute) - limit] + MINUTE)

    def _day_slot(self, now: datetime, recipients: int) -> datetime:
        limit = self.limits.per_day
        if limit is None or self._day_total + recipients <= limit:
            return now
        freed = 0
        for send in self._day:
            freed += send.recipients
            if self._day_total - freed + recipients <= limit:
                return max(now, send.at + DAY)
        raise AssertionError("unreachable: _check_fits bounds recipients")

    def _spacing_slot(self, now: datetime) -> datetime:
        gap = self.limits.min_interval
        if not gap or self._last is None:
            return now
        return max(now, self._last + timedelta(seconds=gap))


T = TypeVar("T")


def split_recipients(recipients: list[T], limit: int | None) -> list[list[T]]:
    """Recipients in groups of at most ``limit``, one SMTP transaction each."""
    if not limit or len(recipients) <= limit:
        return [recipients]
    return [recipients[i : i + limit] for i in range(0, len(recipients), limit)]
