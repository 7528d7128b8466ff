"""The records the outbox reads and writes, as plain values."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mailroom.store.states import MessageState, RecipientState


@dataclass(slots=True)
class NewMessage:
    """A message about to be accepted."""

    team_id: int | None
    channel_id: int
    sender: str
    message_id: str
    content: dict[str, Any]
    recipients: list[tuple[str, str]]
    campaign_id: int | None = None
    state: MessageState = MessageState.queued
    reason: str = ""


@dataclass(slots=True)
class PendingRecipient:
    id: int
    address: str
    kind: str


@dataclass(slots=True)
class Pending:
    """A claimed message with the recipients it still owes."""

    id: int
    team_id: int | None
    message_id: str
    sender: str
    content: dict[str, Any]
    attempts: int
    created_at: datetime
    recipients: list[PendingRecipient] = field(default_factory=list)
    # Recipients an earlier round delivered, so the message counts as sent.
    already_sent: int = 0


@dataclass(slots=True)
class AttemptRow:
    """One reply worth remembering, ready to insert."""

    stage: str
    code: int | None
    enhanced: str
    text: str
    reply_class: str
    recipient: str | None = None
    rcpt_count: int = 0
    at: datetime | None = None


@dataclass(slots=True)
class Outcome:
    """What one delivery round did to a message, written in one transaction."""

    state: MessageState
    reason: str = ""
    next_attempt_at: datetime | None = None
    charge_attempt: bool = True
    recipient_states: dict[int, tuple[RecipientState, str]] = field(
        default_factory=dict
    )
    attempts: list[AttemptRow] = field(default_factory=list)
    suppress: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Send:
    at: datetime
    recipients: int
