"""`mailroom send`, `message show`, `queue` and `worker`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections import Counter
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Column, Table
from rich.text import Text as RichText

from mailroom.cli.context import (
    EXIT_FAILURE,
    console,
    fail,
    friendly_errors,
    label,
    opened,
    pick_team,
    print_fields,
    print_json,
)
from mailroom.cli.progress import DeliveryProgress
from mailroom.core import Mailroom
from mailroom.errors import InputError
from mailroom.i18n import _
from mailroom.reports import find_message, message_view, state_counts, waiting_view
from mailroom.sending import OneOff, submit
from mailroom.store.records import Outcome, Pending

message_app = typer.Typer(help=_("Look at one message."))

TextFile = Annotated[Path | None, typer.Option(exists=True, dir_okay=False)]


WaitTimeout = Annotated[
    float,
    typer.Option(help=_("Seconds --wait waits at most; the worker sends the rest.")),
]


def worker_notice() -> str:
    return _("`mailroom worker` sends queued mail (or pass --wait)")


def read_text(path: Path, field: str) -> str:
    """A UTF-8 file's text, or an error naming the option."""
    try:
        return path.read_text("utf-8")
    except UnicodeDecodeError:
        problem = _("{path} is not UTF-8").format(path=path)
        raise InputError(field, problem, _("save it as UTF-8")) from None


def deliver(mr: Mailroom, ids: list[int], timeout: float) -> DeliveryProgress:
    """Deliver in this process until the given messages settle or are held,
    or until none of them can go within ``timeout`` seconds."""
    progress = DeliveryProgress(len(ids), set(ids))
    deadline = mr.clock.now() + timedelta(seconds=timeout)
    with progress, _person_watching():
        engine = mr.delivery(on_outcome=progress)
        asyncio.run(engine.run(watch=ids, deadline=deadline))
    return progress


@contextlib.contextmanager
def _person_watching() -> Iterator[None]:
    # A person waiting on the command reads what became of the mail in the
    # lines it prints; the engine's warnings would say it twice.  --verbose
    # (INFO) keeps them, and errors always show.
    delivery_log = logging.getLogger("mailroom.delivery")
    if delivery_log.getEffectiveLevel() < logging.WARNING:
        yield
        return
    delivery_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        delivery_log.setLevel(logging.NOTSET)


def send(
    sender: Annotated[str, typer.Option("--from", help=_("Name <address>."))],
    to: Annotated[list[str], typer.Option(help=_("Recipient (repeatable)."))],
    subject: Annotated[str, typer.Option()],
    text: Annotated[str | None, typer.Option(help=_("Plain text body."))] = None,
    html: Annotated[str | None, typer.Option(help=_("HTML body."))] = None,
    text_file: TextFile = None,
    html_file: TextFile = None,
    cc: Annotated[list[str] | None, typer.Option()] = None,
    bcc: Annotated[list[str] | None, typer.Option()] = None,
    reply_to: Annotated[str | None, typer.Option()] = None,
    channel: Annotated[str | None, typer.Option(help=_("Channel by name."))] = None,
    team: Annotated[str | None, typer.Option()] = None,
    member: Annotated[str | None, typer.Option(help=_("Sending member."))] = None,
    wait: Annotated[bool, typer.Option(help=_("Deliver now and wait."))] = False,
    wait_timeout: WaitTimeout = 120.0,
) -> None:
    """Send one message through the right channel."""
    with opened() as mr, friendly_errors():
        request = OneOff(
            sender=sender,
            to=to,
            subject=subject,
            text=read_text(text_file, "text_file") if text_file else text,
            html=read_text(html_file, "html_file") if html_file else html,
            cc=cc or [],
            bcc=bcc or [],
            reply_to=reply_to,
            channel=channel,
            member=member,
        )
        accepted = submit(mr, pick_team(mr, team, sender), request)
        console.print(
            _("accepted {mid} (id {id}) via channel {channel}: {state}").format(
                mid=accepted.message_id,
                id=accepted.id,
                channel=accepted.channel,
                state=label(accepted.state),
            )
        )
        for address in accepted.suppressed:
            console.print(_("skipped suppressed recipient {a}").format(a=address))
        if accepted.reason:
            console.print(accepted.reason)
        if wait:
            deliver(mr, [accepted.id], wait_timeout)
            _report_wait(message_view(mr, accepted.id) or {})
        else:
            console.print(worker_notice())


def _report_wait(view: dict[str, Any]) -> None:
    console.print(
        _("{state}: {reason}").format(
            state=label(view["state"]), reason=view["reason"]
        ),
        markup=False,
    )
    if view["state"] in ("queued", "deferred"):
        console.print(_("it stays queued; `mailroom worker` will send it"))
    if view["state"] != "sent":
        raise typer.Exit(EXIT_FAILURE)


@message_app.command("show")
def show(
    ref: Annotated[str, typer.Argument(help=_("Id or Message-ID."))],
    json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """A message's state, recipients and every attempt."""
    with opened() as mr, friendly_errors():
        found = find_message(mr, ref)
        view = message_view(mr, found) if found is not None else None
    if view is None:
        fail(_("no message {ref}").format(ref=ref), 2)
    if json:
        print_json(view)
        return
    print_fields(
        view,
        (
            "id",
            "message_id",
            "channel",
            "sender",
            "subject",
            "state",
            "reason",
            "attempts",
            "next_attempt_at",
            "sent_at",
        ),
    )
    for r in view["recipients"]:
        console.print(
            f"  {r['kind']} {r['address']}: {r['state']} {r['reply']}", markup=False
        )
    for a in view["history"]:
        console.print(
            f"  {a['at']:%Y-%m-%d %H:%M:%S} {a['stage']} {a['recipient'] or ''} "
            f"{a['code'] or ''} {a['enhanced']} {a['text']}",
            markup=False,
        )


@message_app.command("cancel")
def cancel(ref: Annotated[str, typer.Argument(help=_("Id or Message-ID."))]) -> None:
    """Withdraw a message that has not gone out yet."""
    with opened() as mr, friendly_errors():
        found = find_message(mr, ref)
        if found is None:
            fail(_("no message {ref}").format(ref=ref), 2)
        cancelled = mr.outbox.cancel(message_id=found)
        state = (message_view(mr, found) or {}).get("state")
    if not cancelled:
        fail(
            _("message {ref} is {state} and can no longer be cancelled").format(
                ref=ref, state=label(state or "")
            )
        )
    console.print(_("cancelled message {ref}").format(ref=ref))


def queue(json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """What is waiting, why, and when it is tried next."""
    with opened() as mr, friendly_errors():
        counts = state_counts(mr)
        waiting = waiting_view(mr)
    if json:
        print_json({"counts": counts, "waiting": waiting})
        return
    console.print(_counts(counts) or _("the outbox is empty"))
    if waiting:
        console.print(_waiting_table(waiting))


def _waiting_table(waiting: list[dict[str, Any]]) -> Table:
    headers = [_("id"), _("channel"), _("state"), _("next try (UTC)"), _("why")]
    table = Table(*(Column(h, overflow="fold") for h in headers))
    for row in waiting:
        table.add_row(
            str(row["id"]),
            row["channel"],
            label(row["state"]),
            _when(row["next_attempt_at"]),
            RichText(row["reason"]),  # as written, never read as markup
        )
    return table


def worker(
    until_idle: Annotated[
        bool, typer.Option(help=_("Stop when nothing is due."))
    ] = False,
) -> None:
    """Deliver queued mail until stopped (Ctrl-C or SIGTERM)."""
    with opened() as mr, friendly_errors():
        this_run, unrecorded = asyncio.run(_work(mr, until_idle))
        counts = state_counts(mr)
        due = mr.outbox.next_due([c.id for c in mr.channels.list(everything=True)])
    console.print(_("this run: {counts}").format(counts=_counts(this_run) or "-"))
    console.print(_("the outbox: {counts}").format(counts=_counts(counts)))
    if unrecorded:
        fail(
            _(
                "{n} outcome(s) could not be recorded (see the log); those "
                "messages are tried again when their lease runs out"
            ).format(n=unrecorded)
        )
    if due is not None:
        console.print(
            _(
                "mail still waits; the next is due at {at} (keep a worker running)"
            ).format(at=_when(due))
        )


async def _work(mr: Mailroom, until_idle: bool) -> tuple[Counter[str], int]:
    """Deliver; returns the recorded outcomes of this run's delivery rounds
    by state, and how many outcomes could not be recorded."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    outcomes: Counter[str] = Counter()

    with DeliveryProgress(mr.outbox.count_unsettled()) as progress:

        def seen(message: Pending, outcome: Outcome) -> None:
            outcomes[str(outcome.state)] += 1
            progress(message, outcome)

        engine = mr.delivery(on_outcome=seen)
        await engine.run(until_idle=until_idle, stop=stop)
    return outcomes, engine.writer.unrecorded


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{label(state)}: {n}" for state, n in sorted(counts.items()))


def _when(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S}" if moment else "-"
