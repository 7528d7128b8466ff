"""One channel's delivery: its sessions, its limits, its reactions.

A ``ChannelRunner`` holds the channel's lease while it works, keeps its SMTP
sessions open across messages (``connections`` of them, one by default),
reserves a slot from the channel's limiter before every transaction, and hands
each message's outcome to the group commit as soon as the server has answered.
A reply that concerns the whole channel (throttling, a used-up quota, refused
credentials) pauses or disconnects it, and the runner stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from mailroom.channels.model import Channel, ChannelStatus
from mailroom.delivery.limits import split_recipients
from mailroom.delivery.outcome import ChannelSignal, RoundResult, finish
from mailroom.delivery.render import render_message
from mailroom.delivery.replies import Reply, ReplyClass, classify, describe
from mailroom.delivery.transport import (
    AuthRefused,
    Endpoint,
    SessionError,
    SmtpSession,
    TokenSource,
)
from mailroom.errors import ChannelAuthError, ChannelConnectError, InputError
from mailroom.store.records import AttemptRow, Outcome, Pending, PendingRecipient
from mailroom.store.states import MessageState

if TYPE_CHECKING:
    from mailroom.delivery.engine import Engine

log = logging.getLogger("mailroom.delivery")

# Seconds between renewals of a channel's lease (the lease itself is longer).
RENEW_EVERY = 60.0


class _Link:
    """A session worker's current SMTP session, if any."""

    def __init__(self) -> None:
        self.session: SmtpSession | None = None
        # The commit of this session's last outcome, perhaps still running.
        self.committed: asyncio.Future[None] | None = None
        # The last message built on this session, for its further transactions.
        self.rendered: tuple[tuple[int, bool, bool], bytes] | None = None

    async def settle(self) -> None:
        """Wait for the last outcome to be committed (the writer logs a
        failure; the message then stays claimed until its lease runs out)."""
        if self.committed is not None:
            committed, self.committed = self.committed, None
            with contextlib.suppress(Exception):
                await committed

    def forget_done_commit(self) -> None:
        """Forget the last commit once it is done: a transaction has waited
        for it, or it finished meanwhile.  A failure is the writer's to log."""
        committed = self.committed
        if committed is not None and committed.done():
            if not committed.cancelled():
                committed.exception()  # seen, so asyncio does not warn
            self.committed = None

    async def close(self) -> None:
        if self.session is not None:
            session, self.session = self.session, None
            await session.close()

    def abort(self) -> None:
        """Drop the session without QUIT; its state is unknown."""
        if self.session is not None:
            session, self.session = self.session, None
            session.abort()


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
        self._stopped = False
        self._tried = False
        self._throttle_strikes = 0
        # Why the runner stopped early, and until when the channel's mail waits.
        self._hold_reason: str | None = None
        self._wait_until: datetime | None = None
        self._wait_reason = ""

    async def run(self) -> bool:
        if not self.outbox.claims.take_channel(self.channel.id):
            # Another worker delivers this channel; its limits are in its hands.
            return False
        self._renewed = self.clock.now()
        try:
            workers = [self._session_loop() for _ in range(self.channel.connections)]
            await asyncio.gather(*workers)
            self._apply_stop()
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

    def _apply_stop(self) -> None:
        # Done once every session has given its messages back, so that none
        # of them escapes the hold or the wait.
        if self._hold_reason is not None:
            self.outbox.hold_channel(self.channel.id, self._hold_reason)
        elif self._wait_until is not None:
            self.outbox.defer_channel(
                self.channel.id, self._wait_until, self._wait_reason
            )

    def _stop(self, until: datetime | None, reason: str) -> None:
        self._stopped = True
        self._wait_until = until
        self._wait_reason = reason

    async def _session_loop(self) -> None:
        link = _Link()
        self.engine.writer.sessions += 1
        try:
            while not self._stopped:
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

    async def _deliver_batch(self, batch: list[Pending], link: _Link) -> None:
        for index, message in enumerate(batch):
            if self._stopped:
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
                await self._internal_error(message, link)

    # One message -------------------------------------------------------------

    async def _deliver(self, message: Pending, link: _Link) -> None:
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
        link: _Link,
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
        link: _Link,
        session: SmtpSession,
        group: list[PendingRecipient],
        result: RoundResult,
    ) -> bytes | None:
        # A message split into several transactions is built once, not once
        # per transaction (the server's extensions decide the encoding).
        key = (message.id, session.smtputf8, session.eight_bit)
        if link.rendered is not None and link.rendered[0] == key:
            return link.rendered[1]
        try:
            data = render_message(message, session.smtputf8, session.eight_bit)
        except (InputError, ValueError) as exc:
            # RFC 6531 3.7.4: a message that needs SMTPUTF8 (or is otherwise
            # unfit) for a server that lacks it can never go that way.
            result.refuse(group, Reply(554, "5.6.7", f"cannot be sent: {exc}"))
            return None
        link.rendered = (key, data)
        return data

    async def _reset(self, link: _Link) -> None:
        # RFC 5321 4.1.1.5: RSET clears a refused transaction; a session that
        # cannot even do that is closed and the next message opens a new one.
        session = link.session
        if session is None or not session.is_open:
            await link.close()
            return
        try:
            await session.reset()
        except SessionError:
            await link.close()

    async def _internal_error(self, message: Pending, link: _Link) -> None:
        log.exception(
            "channel=%s message=%s internal error while sending",
            self.channel.name,
            message.message_id,
        )
        link.abort()
        delay = self.options.retry.retry_delay(message.attempts + 1)
        when = self.clock.now() + timedelta(seconds=delay)
        reason = f"an internal error stopped this message; next try at {_when(when)}"
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

    async def _settle(self, message: Pending, result: RoundResult, link: _Link) -> None:
        wait_until, reason = self._react(result)
        if wait_until is None and self._wait_until is not None:
            # The limiter stopped the round: what was not sent waits for it.
            wait_until, reason = self._wait_until, self._wait_reason
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
            _when(outcome.next_attempt_at) if outcome.state != "sent" else "-",
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
                self._stop(slot, self._limit_reason(slot))
                return False
            await self.clock.sleep(wait)

    def _limit_reason(self, slot: datetime) -> str:
        return (
            f"waiting for channel {self.channel.name}'s limit "
            f"({self.channel.limits.describe()}); next try at {_when(slot)}"
        )

    def _give_back(self, messages: list[Pending]) -> None:
        if messages:
            when = self._wait_until or self.clock.now()
            self.outbox.claims.release(
                [m.id for m in messages], when, self._wait_reason
            )

    # Sessions and channel-wide reactions ---------------------------------------

    async def _session(self, link: _Link, message: Pending) -> None:
        """Make sure the link has an open session; stop the runner if none can."""
        if link.session is not None and link.session.is_open:
            return
        await link.close()
        try:
            link.session = await self._open_session()
        except AuthRefused as exc:
            self._note_attempt(message, "auth", exc.reply, str(exc))
            if exc.already_recorded:
                # The OAuth layer has marked the channel and held its mail.
                self._hold_reason = str(exc)
                self._stop(None, str(exc))
            else:
                self._disconnect(self._auth_reason(exc.reply))
            self._give_back([message])
            raise ChannelStopped from None
        except (ChannelConnectError, ChannelAuthError) as exc:
            self._note_attempt(
                message, "connect", getattr(exc, "reply", None), str(exc)
            )
            self._pause_after_connect_error(message, str(exc))
            raise ChannelStopped from None

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
        return endpoint_for(self.channel, source, self.options.timeout)

    def _react(self, result: RoundResult) -> tuple[datetime | None, str]:
        """Apply a channel-wide signal; returns until when and why mail waits."""
        reply = result.signal_reply
        if result.signal is ChannelSignal.disconnected:
            reason = self._auth_reason(reply)
            self._disconnect(reason)
            return None, reason
        if result.signal is ChannelSignal.throttled:
            self._throttle_strikes += 1
            pause = self.options.retry.pause(self._throttle_strikes)
            return self._pause(pause, ReplyClass.throttled, reply)
        if result.signal is ChannelSignal.quota:
            return self._pause(self._quota_pause(), ReplyClass.quota, reply)
        self._throttle_strikes = 0
        return None, ""

    def _pause(
        self, seconds: float, reply_class: ReplyClass, reply: Reply | None
    ) -> tuple[datetime, str]:
        until = self.clock.now() + timedelta(seconds=seconds)
        reason = f"{describe(reply_class)} ({reply}); next try at {_when(until)}"
        self.engine.registry.set_status(
            self.channel.id, ChannelStatus.paused, reason, until
        )
        self._stop(until, reason)
        return until, reason

    def _quota_pause(self) -> float:
        # The provider counts its own 24 hours; without a configured daily
        # limit the best guess is to rest an hour and try again.
        now = self.clock.now()
        if self.channel.limits.per_day:
            slot = self.limiter.next_slot(now, self.channel.limits.per_day)
            return max(3600.0, (slot - now).total_seconds())
        return 3600.0

    def _auth_reason(self, reply: Reply | None) -> str:
        return (
            f"{describe(ReplyClass.auth)}: {reply}; store new credentials with "
            f"`mailroom channel update {self.channel.name} --password` "
            "(--password-stdin in a script)"
        )

    def _disconnect(self, reason: str) -> None:
        self.engine.registry.set_status(
            self.channel.id, ChannelStatus.disconnected, reason
        )
        self.outbox.add_event(
            "channel-disconnected", reason, channel_id=self.channel.id
        )
        log.warning("channel=%s disconnected: %s", self.channel.name, reason)
        self._hold_reason = reason
        self._stop(None, reason)

    def _pause_after_connect_error(self, message: Pending, error: str) -> None:
        self._throttle_strikes += 1
        seconds = self.options.retry.pause(self._throttle_strikes)
        until = self.clock.now() + timedelta(seconds=seconds)
        reason = f"cannot reach the server: {error}; next try at {_when(until)}"
        self.engine.registry.set_status(
            self.channel.id, ChannelStatus.paused, reason, until
        )
        log.warning("channel=%s paused: %s", self.channel.name, reason)
        self._stop(until, reason)
        self._give_back([message])


def _worth_a_new_connection(
    session: SmtpSession, exc: SessionError, retried: bool
) -> bool:
    # RFC 5321 4.5.3.2.7: a server may close a connection left idle.  When a
    # reused connection fails before any reply and before the content went
    # out, the message has not reached the server: try once on a new one.
    first_use = session.transactions <= 1
    return not (retried or first_use or exc.reply or exc.content_sent)


def endpoint_for(
    channel: Channel, token_source: TokenSource | None, timeout: float = 30.0
) -> Endpoint:
    """How to reach and log in to a channel's server."""
    return Endpoint(
        host=channel.host,
        port=channel.port,
        security=channel.security,
        username=channel.username,
        secret=channel.secret,
        ca_bundle=channel.ca_bundle,
        verify_tls=channel.verify_tls,
        token_source=token_source,
        timeout=timeout,
    )


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "-"
