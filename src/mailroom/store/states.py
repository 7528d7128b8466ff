"""Message and recipient lifecycles, with every allowed transition in one table."""

from __future__ import annotations

import enum
from typing import Final

from mailroom.errors import StateError


class MessageState(enum.StrEnum):
    # Accepted and committed; waiting for its turn.
    queued = "queued"
    # Claimed by a worker that is talking to the server now.
    sending = "sending"
    # Every recipient settled, at least one accepted by the server.
    sent = "sent"
    # A temporary failure or a limit; ``next_attempt_at`` says when.
    deferred = "deferred"
    # The channel is disconnected; waits for new credentials, never fails.
    held = "held"
    # Refused for the whole message (sender refused, content rejected).
    failed = "failed"
    # Every recipient refused permanently.
    bounced = "bounced"
    # Withdrawn by a person before it went out.
    cancelled = "cancelled"


class RecipientState(enum.StrEnum):
    queued = "queued"
    sent = "sent"
    deferred = "deferred"
    bounced = "bounced"
    failed = "failed"
    cancelled = "cancelled"


PENDING: Final = frozenset(
    {MessageState.queued, MessageState.deferred, MessageState.held}
)
SETTLED: Final = frozenset(
    {
        MessageState.sent,
        MessageState.failed,
        MessageState.bounced,
        MessageState.cancelled,
    }
)

_M = MessageState
TRANSITIONS: Final[dict[MessageState, frozenset[MessageState]]] = {
    _M.queued: frozenset({_M.sending, _M.held, _M.cancelled, _M.deferred}),
    _M.deferred: frozenset({_M.sending, _M.held, _M.cancelled, _M.queued}),
    _M.held: frozenset({_M.queued, _M.cancelled}),
    # A worker that dies leaves "sending"; recovery puts it back to queued.
    _M.sending: frozenset(
        {_M.sent, _M.deferred, _M.held, _M.failed, _M.bounced, _M.queued}
    ),
    _M.sent: frozenset(),
    _M.failed: frozenset(),
    _M.bounced: frozenset(),
    _M.cancelled: frozenset(),
}


def check_transition(old: MessageState, new: MessageState) -> None:
    if new not in TRANSITIONS[old]:
        raise StateError(f"a message cannot go from {old} to {new}")


def sources_of(new: MessageState) -> list[str]:
    """The states from which ``new`` may be reached: for guarded UPDATEs."""
    return [str(old) for old, targets in TRANSITIONS.items() if new in targets]
