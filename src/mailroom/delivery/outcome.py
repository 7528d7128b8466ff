"""Turning server replies into recipient states and a message outcome.

One delivery round of one message may span several SMTP transactions (a
channel's most recipients per message); ``RoundResult`` collects their replies
and ``finish`` decides the message's next state.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

from mailroom.delivery.replies import Reply, ReplyClass, classify, describe
from mailroom.delivery.transport import Transaction
from mailroom.store.records import AttemptRow, Outcome, Pending, PendingRecipient
from mailroom.store.states import MessageState, RecipientState


class ChannelSignal(enum.Enum):
    """What a reply asks of the whole channel, beyond this message."""

    none = "none"
    throttled = "throttled"
    quota = "quota"
    disconnected = "disconnected"


@dataclass(slots=True)
class RoundResult:
    message: Pending
    states: dict[int, tuple[RecipientState, str]] = field(default_factory=dict)
    attempts: list[AttemptRow] = field(default_factory=list)
    suppress: list[tuple[str, str]] = field(default_factory=list)
    signal: ChannelSignal = ChannelSignal.none
    signal_reply: Reply | None = None
    failure: Reply | None = None
    transient: Reply | None = None

    def add_transaction(
        self, group: list[PendingRecipient], txn: Transaction, at: datetime
    ) -> None:
        """Record one transaction's replies (MAIL, each refused RCPT, DATA).

        The transaction's own row (MAIL when it went no further, else DATA)
        carries its time and recipient count, which the limiter counts.
        """
        assert txn.mail is not None
        if not txn.mail.is_success or txn.data is None:
            self.attempts.append(_attempt("mail", txn.mail, at, len(group)))
        if not txn.mail.is_success:
            self._whole_group(group, txn.mail)
            return

        for recipient in group:
            reply = txn.rcpt.get(recipient.address)
            if reply is not None and not reply.is_success:
                self._refused(recipient, reply)
        if txn.data is None:
            return

        self.attempts.append(_attempt("data", txn.data, at, len(group)))
        accepted = [r for r in group if r.address in txn.accepted]
        if txn.data.is_success:
            for recipient in accepted:
                self.states[recipient.id] = (RecipientState.sent, str(txn.data))
        else:
            self._whole_group(accepted, txn.data)

    def broken(
        self,
        group: list[PendingRecipient],
        reply: Reply,
        at: datetime,
        content_sent: bool,
    ) -> None:
        """Record a transaction that the connection's end cut short.

        Content that went out may have been accepted by the server, so its
        recipients count against the channel's limits like a delivery.
        """
        stage = "data" if content_sent else "session"
        self.attempts.append(_attempt(stage, reply, at, len(group) * content_sent))

    def refuse(self, group: list[PendingRecipient], reply: Reply) -> None:
        """Fail a group without a transaction (the message cannot be built)."""
        self.attempts.append(_attempt("build", reply, None, len(group)))
        self._whole_group(group, reply)

    def _whole_group(self, group: list[PendingRecipient], reply: Reply) -> None:
        reply_class = classify(reply)
        if reply_class is ReplyClass.permanent:
            self.failure = reply
            for recipient in group:
                self.states[recipient.id] = (RecipientState.failed, str(reply))
            return
        self._note(reply_class, reply)

    def _refused(self, recipient: PendingRecipient, reply: Reply) -> None:
        reply_class = classify(reply)
        self.attempts.append(_attempt("rcpt", reply, None, recipient=recipient.address))
        if reply_class is ReplyClass.permanent:
            self.states[recipient.id] = (RecipientState.bounced, str(reply))
            self.suppress.append((recipient.address, f"bounced: {reply}"))
            return
        self._note(reply_class, reply)

    def _note(self, reply_class: ReplyClass, reply: Reply) -> None:
        signal = {
            ReplyClass.throttled: ChannelSignal.throttled,
            ReplyClass.quota: ChannelSignal.quota,
            ReplyClass.auth: ChannelSignal.disconnected,
        }.get(reply_class)
        if signal is None:
            self.transient = reply
            return
        self.signal = signal
        self.signal_reply = reply


def _attempt(
    stage: str,
    reply: Reply | None,
    at: datetime | None,
    rcpt_count: int = 0,
    *,
    recipient: str | None = None,
) -> AttemptRow:
    if reply is None:
        return AttemptRow(stage, None, "", "", "none", recipient, rcpt_count, at)
    return AttemptRow(
        stage,
        reply.code,
        reply.enhanced,
        reply.text,
        classify(reply),
        recipient,
        rcpt_count,
        at,
    )


def finish(
    result: RoundResult,
    *,
    already_sent: int,
    retry_at: datetime,
    wait_until: datetime | None,
    wait_reason: str,
) -> Outcome:
    """The message's state after a round.

    Recipients with no final state wait: as ``deferred`` (an attempt charged)
    after a transient reply, or ``queued`` (not charged) when the channel asked
    us to wait.
    """
    waiting = [r for r in result.message.recipients if r.id not in result.states]
    outcome = Outcome(
        state=MessageState.sent,
        recipient_states=result.states,
        attempts=result.attempts,
        suppress=result.suppress,
    )
    if waiting:
        _wait(outcome, result, retry_at, wait_until, wait_reason)
        return outcome

    outcome.state, outcome.reason = _settled(result, already_sent)
    return outcome


def _wait(
    outcome: Outcome,
    result: RoundResult,
    retry_at: datetime,
    wait_until: datetime | None,
    wait_reason: str,
) -> None:
    if result.signal is ChannelSignal.disconnected:
        outcome.state = MessageState.held
        outcome.charge_attempt = False
        outcome.reason = wait_reason
        return

    # A try of this message's own that failed is charged, even when the
    # channel must also wait (its limit was reached meanwhile); a reply that
    # concerns the whole channel (throttling, quota) is not.
    charged = result.transient is not None and result.signal is ChannelSignal.none
    if wait_until is not None and not charged:
        outcome.state = MessageState.queued
        outcome.charge_attempt = False
        outcome.next_attempt_at = wait_until
        outcome.reason = wait_reason
        return

    reply = result.transient
    outcome.state = MessageState.deferred
    outcome.next_attempt_at = max(retry_at, wait_until or retry_at)
    outcome.reason = f"{describe(ReplyClass.transient)}: {reply}"
    for recipient in result.message.recipients:
        if recipient.id not in result.states:
            result.states[recipient.id] = (RecipientState.deferred, str(reply))


def _settled(result: RoundResult, already_sent: int) -> tuple[MessageState, str]:
    states = [state for state, _ in result.states.values()]
    sent = already_sent + states.count(RecipientState.sent)
    bounced = states.count(RecipientState.bounced)
    if sent:
        note = f"; {bounced} recipient(s) bounced" if bounced else ""
        return MessageState.sent, f"accepted by the server{note}"
    if bounced and RecipientState.failed not in states:
        return MessageState.bounced, "every recipient was refused permanently"
    return MessageState.failed, f"refused: {result.failure}"
