"""A round's replies become the message's next state: who is charged, and when."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mailroom.delivery.outcome import ChannelSignal, RoundResult, finish
from mailroom.delivery.replies import Reply
from mailroom.store.records import Pending, PendingRecipient
from mailroom.store.states import MessageState

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
RETRY_AT = NOW + timedelta(minutes=5)
LOST = Reply(451, "4.4.2", "connection lost after the final dot")


def round_for_one_recipient() -> RoundResult:
    message = Pending(1, 1, "<1@example.com>", "a@example.com", {}, 0, NOW)
    message.recipients.append(PendingRecipient(10, "b@example.net", "to"))
    return RoundResult(message)


@pytest.mark.parametrize("limit_wait", [timedelta(minutes=1), timedelta(hours=1)])
def test_a_failed_try_is_charged_even_when_the_channel_must_wait_too(
    limit_wait: timedelta,
) -> None:
    result = round_for_one_recipient()
    result.transient = LOST

    outcome = finish(
        result,
        already_sent=0,
        retry_at=RETRY_AT,
        wait_until=NOW + limit_wait,
        wait_reason="waiting for the channel's limit",
    )

    assert outcome.state is MessageState.deferred
    assert outcome.charge_attempt
    assert "connection lost" in outcome.reason
    # Never sooner than the backoff, nor than the channel allows.
    assert outcome.next_attempt_at == max(RETRY_AT, NOW + limit_wait)


def test_a_reply_about_the_whole_channel_charges_the_message_nothing() -> None:
    result = round_for_one_recipient()
    throttle = Reply(421, "4.7.0", "too many connections")
    result.transient = throttle
    result.signal, result.signal_reply = ChannelSignal.throttled, throttle
    paused_until = NOW + timedelta(minutes=10)

    outcome = finish(
        result,
        already_sent=0,
        retry_at=RETRY_AT,
        wait_until=paused_until,
        wait_reason="the channel is paused",
    )

    assert outcome.state is MessageState.queued
    assert not outcome.charge_attempt
    assert outcome.next_attempt_at == paused_until
