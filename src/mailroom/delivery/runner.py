"""One channel's delivery: its sessions, its limits, its reactions.

A ``ChannelRunner`` holds the channel's lease while it works, keeps its SMTP
sessions open across messages (``connections`` of them, one by default),
reserves a slot from the channel's limiter before every transaction, and hands
each message's outcome to the group commit as soon as the server has answered.
A reply that concerns the whole channel (throttling, a used-up quota, refused
credentials) pauses or disconnects it, and the runner stops (``reactions.py``).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from mailroom.channels.model import Channel, ChannelStatus
from mailroom.delivery.limits import split_recipients
from mailroom.delivery.link import Link
from mailroom.delivery.outcome import ChannelSignal, RoundResult, finish
from mailroom.delivery.reactions import ChannelStop, at_text
from mailroom.delivery.render import render_message
from mailroom.delivery.replies import Reply, classify
from mailroom.delivery.transport import (
    AuthRefused,
    Endpoint,
    SessionError,
    SmtpSession,
)
from mailroom.errors import ChannelAuthError, ChannelConnectError, InputError
from mailroom.i18n import english
from mailroom.store.records import AttemptRow, Outcome, Pending, PendingRecipient
from mailroom.store.states import MessageState

if TYPE_CHECKING:
    from mailroom.delivery.engine import Engine

log = logging.getLogger("mailroom.delivery")

# Seconds between renewals of a channel's lease (the lease itself is longer).
RENEW_EVERY = 60.0


class ChannelStopped(Exception):
    """The channel was paused or disconnected; its runner ends."""


class ChannelRunner:
    """Delivers one channel's due mail over its sessions."""

    def __init__(self, engine: Engine, channel: Channel) -> None:
        self.engine = engine
        self.channel = channel
        self.limiter = engine.limiter(channel)
        self.outbox = engine.outbox
        self.clock = engine.clock
        self.options = engine.options
        self.stop = ChannelStop(
            channel,
            engine.registry,
            self.outbox,
            self.clock,
            self.options.retry,
            self.limiter,
        )
        self._tried = False

    async def run(self) -> bool:
        if not self.outbox.claims.take_channel(self.channel.id):
            # Another worker delivers this channel; its limits are in its hands.
            return False
        self._renewed = self.clock.now()
        try:
            workers = [self._session_loop() for _ in range(self.channel.connections)]
            await asyncio.gather(*workers)
            self.stop.apply()
        finally:
            self._give_channel()
        return self._tried

    def _give_channel(self) -> None:
        try:
            self.outbox.claims.give_channel(self.channel.id)
        except Exception:
            # Most likely the database failure that ended the run; that one
            # is the error to report, and the lease expires by itself.
            log.exception("channel=%s could not be given back", self.channel.name)

    def _batch_size(self) -> int:
        # A limited channel claims no more than a minute's worth, so a crash
        # leaves few claims behind and they count little against the limit.
        per_minute = self.channel.limits.per_minute
        return min(self.options.batch, per_minute or self.options.batch)

    def _maybe_renew(self) -> None:
        # Well inside the lease, so neither the channel nor its claimed mail
        # looks abandoned while a slow server takes its time.
        now = self.clock.now()
        if (now - self._renewed).total_seconds() >= RENEW_EVERY:
            self.outbox.claims.renew_channel(self.channel.id)
            self._renewed = now

    async def _session_loop(self) -> None:
        link = Link()
        self.engine.writer.sessions += 1
        try:
            while not self.stop.stopped:
                self._maybe_renew()
                batch = self.outbox.claims.claim(self.channel.id, self._batch_size())
                if not batch:
                    return
                self._tried = True
                await self._deliver_batch(batch, link)
        finally:
            self.engine.writer.sessions -= 1
            try:
                await link.settle()
            finally:
                await link.close()

    async def _deliver_batch(self, batch: list[Pending], link: Link) -> None:
        for index, message in enumerate(batch):
            if self.stop.stopped:
                self._give_back(batch[index:])
                return
            self._maybe_renew()
            try:
                await self._deliver(message, link)
            except ChannelStopped:
                self._give_back(batch[index + 1 :])
                return
            except Exception:
                # A fault of ours with one message must not stop the others.
                self._internal_error(message, link)

    # One message -------------------------------------------------------------

    async def _deliver(self, message: Pending, link: Link) -> None:
        """One round for one message: every transaction it needs, then record."""
        if self._expired(message):
            return
        result = RoundResult(message)
        limit = self.channel.limits.max_recipients
        for group in split_recipients(message.recipients, limit):
            if not await self._reserve(len(group)):
                break
            await self._session(link, message)
            await self._transact(link, message, group, result)
            if result.signal is not ChannelSignal.none or link.session is None:
                break
        await self._settle(message, result, link)

    async def _transact(
        self,
        link: Link,
        message: Pending,
        group: list[PendingRecipient],
        result: RoundResult,
        retried: bool = False,
    ) -> None:
        session = link.session
        assert session is not None
        at = self.clock.now()
        data = self._render(message, link, session, group, result)
        if data is None:
            return
        try:
            txn = await session.send(
                message.sender,
                [r.address for r in group],
                data,
                before_end=link.committed,
            )
        except SessionError as exc:
            link.forget_done_commit()
            await link.close()
            if _worth_a_new_connection(session, exc, retried):
                await self._session(link, message)
                await self._transact(link, message, group, result, retried=True)
                return
            self._broken_session(result, exc, group, at)
            return

        link.forget_done_commit()
        result.add_transaction(group, txn, at)
        if not (txn.delivered and len(txn.accepted) == len(group)):
            await self._reset(link)

    def _render(
        self,
        message: Pending,
        link: Link,
        session: SmtpSession,
        group: list[PendingRecipient],
        result: RoundResult,
    ) -> bytes | None:
        # A message split into several transactions is built once, not once
        # per transaction (the server's extensions decide the encoding).
        key = (message.id, session.smtputf8, session.eight_bit)
        if link.built is not None and link.built[0] == key:
            return link.built[1]
        try:
            data = render_message(message, session.smtputf8, session.eight_bit)
        except (InputError, ValueError) as exc:
            # RFC 6531 3.7.4: a message that needs SMTPUTF8 (or is otherwise
            # unfit) for a server that lacks it can never go that way.
            # The reason is stored with the message, so it stays English.
            reason = f"cannot be sent: {english(exc)}"
            result.refuse(group, Reply(554, "5.6.7", reason))
            return None
        link.built = (key, data)
        return data

    async def _reset(self, link: Link) -> None:
        # RFC 5321 4.1.1.5: RSET clears a refused transaction; a session that
        # cannot even do that is closed and the next message opens a new one.
        if link.session is None or not link.is_open:
            await link.close()
            return
        try:
            await link.session.reset()
        except SessionError:
            await link.close()

    def _internal_error(self, message: Pending, link: Link) -> None:
        log.exception(
            "channel=%s message=%s internal error while sending",
            self.channel.name,
            message.message_id,
        )
        link.abort()
        delay = self.options.retry.retry_delay(message.attempts + 1)
        when = self.clock.now() + timedelta(seconds=delay)
        reason = f"an internal error stopped this message; next try at {at_text(when)}"
        self.outbox.claims.release([message.id], when, reason)

    def _broken_session(
        self,
        result: RoundResult,
        exc: SessionError,
        group: list[PendingRecipient],
        at: datetime,
    ) -> None:
        reply = exc.reply or Reply(451, "4.4.2", f"connection lost: {exc}")
        result.broken(group, reply, at, exc.content_sent)
        result.transient = reply
        if exc.reply is not None and exc.reply.code == 421:
            result.signal = ChannelSignal.throttled
            result.signal_reply = exc.reply

    async def _settle(self, message: Pending, result: RoundResult, link: Link) -> None:
        wait_until, reason = self.stop.react(result)
        if wait_until is None and self.stop.wait_until is not None:
            # The limiter stopped the round: what was not sent waits for it.
            wait_until, reason = self.stop.wait_until, self.stop.wait_reason
        retry_at = self.clock.now() + timedelta(
            seconds=self.options.retry.retry_delay(message.attempts + 1)
        )
        outcome = finish(
            result,
            already_sent=message.already_sent,
            retry_at=retry_at,
            wait_until=wait_until,
            wait_reason=reason,
        )
        # The commit runs while the session starts its next transaction; the
        # next message's final "." waits for it (see writer.py).
        link.committed = self.engine.writer.submit(message, self.channel.id, outcome)
        self._log(message, outcome)
        self._report_once_recorded(message, outcome, link.committed)
        if result.signal is not ChannelSignal.none:
            await link.settle()
            raise ChannelStopped

    def _report_once_recorded(
        self, message: Pending, outcome: Outcome, committed: asyncio.Future[None]
    ) -> None:
        # Progress hears of an outcome once it is on record, so that no count
        # shown to a person claims more than the outbox holds.
        progress = self.engine.on_outcome
        if progress is None:
            return

        def recorded(done: asyncio.Future[None]) -> None:
            if not done.cancelled() and done.exception() is None:
                progress(message, outcome)

        committed.add_done_callback(recorded)

    def _log(self, message: Pending, outcome: Outcome) -> None:
        if not log.isEnabledFor(logging.INFO):
            return
        last = outcome.attempts[-1] if outcome.attempts else None
        log.info(
            "delivery channel=%s message=%s state=%s reply=%s class=%s next=%s",
            self.channel.name,
            message.message_id,
            outcome.state,
            f"{last.code} {last.enhanced}".strip() if last else "-",
            last.reply_class if last else "-",
            at_text(outcome.next_attempt_at) if outcome.state != "sent" else "-",
        )

    def _expired(self, message: Pending) -> bool:
        if not self.options.retry.expired(message.created_at, self.clock.now()):
            return False
        days = self.options.retry.lifetime.days
        result = RoundResult(message)
        reason = f"gave up after {days} days of temporary failures"
        result.failure = Reply(554, "5.4.7", reason)
        for recipient in message.recipients:
            result.states[recipient.id] = ("failed", reason)  # type: ignore[assignment]
        self.outbox.record(
            message,
            self.channel.id,
            Outcome(
                state=MessageState.failed,
                reason=reason,
                recipient_states=result.states,
            ),
        )
        return True

    # Limits --------------------------------------------------------------------

    async def _reserve(self, recipients: int) -> bool:
        """Wait for a slot close by; a slot far off stops the runner instead."""
        while True:
            now = self.clock.now()
            slot = self.limiter.next_slot(now, recipients)
            if slot <= now:
                self.limiter.record(now, recipients)
                return True
            wait = (slot - now).total_seconds()
            if wait > self.options.max_wait:
                self.stop.for_limit(slot)
                return False
            await self.clock.sleep(wait)

    def _give_back(self, messages: list[Pending]) -> None:
        if messages:
            when = self.stop.wait_until or self.clock.now()
            reason = self.stop.wait_reason
            self.outbox.claims.release([m.id for m in messages], when, reason)

    # Sessions and channel-wide reactions ---------------------------------------

    async def _session(self, link: Link, message: Pending) -> None:
        """Make sure the link has an open session; stop the runner if none can."""
        if link.is_open:
            return
        await link.close()
        try:
            link.session = await self._open_session()
            self._maybe_proven()
        except AuthRefused as exc:
            self._note_attempt(message, "auth", exc.reply, str(exc))
            if exc.already_recorded:
                # The OAuth layer has marked the channel and held its mail.
                self.stop.already_held(str(exc))
            else:
                self.stop.after_auth_refused(exc.reply)
            self._give_back([message])
            raise ChannelStopped from None
        except (ChannelConnectError, ChannelAuthError) as exc:
            self._note_attempt(
                message, "connect", getattr(exc, "reply", None), str(exc)
            )
            self.stop.after_connect_error(str(exc))
            self._give_back([message])
            raise ChannelStopped from None

    def _maybe_proven(self) -> None:
        # A session got through (connected, secured, logged in): a new
        # channel is untested no longer.
        if self.channel.status is ChannelStatus.untested:
            self.engine.registry.set_status(self.channel.id, ChannelStatus.connected)
            self.channel.status = ChannelStatus.connected

    def _note_attempt(
        self, message: Pending, stage: str, reply: Reply | None, text: str
    ) -> None:
        # The session never opened, yet the message was tried: its history
        # says how (RFC 5321 gives no reply code to a refused connection).
        row = AttemptRow(
            stage,
            reply.code if reply else None,
            reply.enhanced if reply else "",
            str(reply) if reply else text,
            str(classify(reply)) if reply else "connect",
            at=self.clock.now(),
        )
        self.outbox.add_attempts(message.id, self.channel.id, [row])

    async def _open_session(self) -> SmtpSession:
        session = SmtpSession(self._endpoint())
        try:
            await session.open()
        except BaseException:
            await session.close()
            raise
        return session

    def _endpoint(self) -> Endpoint:
        tokens = self.engine.token_sources
        source = tokens(self.channel) if tokens else None
        return Endpoint.for_channel(self.channel, source, self.options.timeout)


def _worth_a_new_connection(
    session: SmtpSession, exc: SessionError, retried: bool
) -> bool:
    # RFC 5321 4.5.3.2.7: a server may close a connection left idle.  When a
    # reused connection fails before any reply and before the content went
    # out, the message has not reached the server: try once on a new one.
    first_use = session.transactions <= 1
    return not (retried or first_use or exc.reply or exc.content_sent)
