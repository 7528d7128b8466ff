"""Sliding-window limits on an injectable clock."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest

from mailroom.channels.model import Limits
from mailroom.clock import FakeClock
from mailroom.delivery.limits import DAY, MINUTE, RateLimiter, split_recipients
from mailroom.errors import InputError
from mailroom.store.records import Send


def drain(limiter: RateLimiter, clock: FakeClock, sends: int, rcpts: int = 1):
    """Send as fast as the limiter allows; return the start times."""
    times = []
    for _ in range(sends):
        slot = limiter.next_slot(clock.now(), rcpts)
        clock.advance((slot - clock.now()).total_seconds())
        limiter.record(clock.now(), rcpts)
        times.append(clock.now())
    return times


def max_in_window(times, window: timedelta, weights=None) -> int:
    weights = weights or [1] * len(times)
    best = 0
    for i, start in enumerate(times):
        total = sum(
            w for t, w in zip(times[i:], weights[i:], strict=True) if t < start + window
        )
        best = max(best, total)
    return best


def test_per_minute_never_exceeded_in_any_sliding_window() -> None:
    clock = FakeClock()
    limiter = RateLimiter(Limits(per_minute=30))

    times = drain(limiter, clock, 200)

    assert max_in_window(times, MINUTE) == 30
    # 200 messages at 30 a minute need six full windows after the first.
    assert times[-1] - times[0] >= timedelta(minutes=6)


def test_a_simulated_week_of_daily_quota_spreads_over_days() -> None:
    clock = FakeClock()
    start = clock.now()
    limiter = RateLimiter(Limits(per_minute=30, per_day=10_000))

    times = drain(limiter, clock, 700, rcpts=100)

    assert max_in_window(times, DAY, [100] * len(times)) == 10_000
    # 70,000 recipients at 10,000 per rolling day: the last starts on day 7.
    assert timedelta(days=6) <= times[-1] - start < timedelta(days=7)


def test_min_interval_spaces_messages() -> None:
    clock = FakeClock()
    limiter = RateLimiter(Limits(min_interval=2.5))

    times = drain(limiter, clock, 5)

    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    assert gaps == [2.5, 2.5, 2.5, 2.5]


def test_history_seeds_the_windows_after_a_restart() -> None:
    clock = FakeClock()
    history = [Send(clock.now() - timedelta(seconds=10), 1) for _ in range(30)]
    limiter = RateLimiter(Limits(per_minute=30), history)

    slot = limiter.next_slot(clock.now(), 1)

    assert slot == clock.now() + timedelta(seconds=50)


def test_finish_time_matches_sending_the_batches() -> None:
    clock = FakeClock()
    limiter = RateLimiter(Limits(per_minute=10, per_day=100))

    predicted = limiter.finish_time(clock.now(), [1] * 250)
    actual = drain(RateLimiter(limiter.limits), clock, 250)[-1]

    assert predicted == actual
    assert predicted - FakeClock().now() > timedelta(days=2)


def test_a_transaction_larger_than_the_day_is_refused_by_name() -> None:
    limiter = RateLimiter(Limits(per_day=10))

    with pytest.raises(InputError) as caught:
        limiter.next_slot(FakeClock().now(), 11)

    assert caught.value.field == "max_recipients"


def test_split_recipients_respects_the_limit() -> None:
    groups = split_recipients([str(i) for i in range(250)], 100)

    assert [len(g) for g in groups] == [100, 100, 50]
    assert split_recipients(["a"], None) == [["a"]]


def test_a_channel_without_limits_remembers_nothing() -> None:
    clock = FakeClock()
    limiter = RateLimiter(Limits(max_recipients=100))

    drain(limiter, clock, 10_000)

    assert limiter.remembered == 0


def test_windows_forget_what_has_aged_out() -> None:
    clock = FakeClock()
    limiter = RateLimiter(Limits(per_minute=1_000, per_day=1_000_000))

    drain(limiter, clock, 500)
    clock.advance(DAY.total_seconds() + 1)
    limiter.next_slot(clock.now(), 1)

    assert limiter.remembered == 0


def test_finish_time_counts_the_minute_already_used() -> None:
    clock = FakeClock()
    limiter = RateLimiter(Limits(per_minute=10))
    drain(limiter, clock, 10)

    finish = limiter.finish_time(clock.now(), [1])

    assert finish >= clock.now() + timedelta(seconds=59)
