"""Campaigns: a contact list and a template, planned, checked and queued.

``plan_campaign`` reads and checks everything without writing: bad rows are
reported by line number, duplicates and suppressed addresses counted.  A dry
run stops there and shows previews.  ``launch`` renders every message and
commits the whole campaign to the outbox in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import func, insert, select

from mailroom.addresses import Address, parse_address
from mailroom.campaigns.contacts import (
    Contact,
    RowProblem,
    load_contacts,
    remove_suppressed,
)
from mailroom.campaigns.template import MessageTemplate, Rendered
from mailroom.channels.model import Channel
from mailroom.core import Mailroom
from mailroom.delivery.limits import RateLimiter, split_recipients
from mailroom.errors import InputError
from mailroom.i18n import Text
from mailroom.sending import draft_content, new_message, route
from mailroom.store import schema as t
from mailroom.store.database import new_id
from mailroom.store.states import MessageState
from mailroom.teams import Team


@dataclass(slots=True)
class CampaignRequest:
    name: str
    sender: str
    contacts: Path
    template: MessageTemplate
    channel: str | None = None
    member: str | None = None


@dataclass(slots=True)
class Preview:
    line: int
    to: Address
    rendered: Rendered


@dataclass(slots=True)
class CampaignPlan:
    team: Team
    request: CampaignRequest
    sender: Address
    channel: Channel
    ready: list[Contact]
    problems: list[RowProblem]
    total_rows: int
    duplicates: int
    suppressed: int
    renders: list[Preview] = field(default_factory=list)


@dataclass(slots=True)
class Launched:
    campaign_id: int
    message_ids: list[int]
    finish_at: datetime | None


def plan_campaign(mr: Mailroom, team: Team, request: CampaignRequest) -> CampaignPlan:
    """Check a campaign end to end without writing anything."""
    sender = parse_address(request.sender, "from")
    member = (request.member or sender.addr_spec).lower()
    team.check_member(member)
    channel = route(mr, team, sender, member, request.channel)

    contacts = load_contacts(
        request.contacts, required=request.template.required_fields()
    )
    ready, suppressed = remove_suppressed(
        contacts.contacts, mr.teams.suppressed(team.id)
    )
    plan = CampaignPlan(
        team,
        request,
        sender,
        channel,
        ready,
        contacts.problems,
        contacts.total_rows,
        contacts.duplicates,
        suppressed,
    )
    _render_all(plan)
    return plan


def _render_all(plan: CampaignPlan) -> None:
    # A row the template cannot render is reported like any other bad row.
    kept = []
    for contact in plan.ready:
        try:
            rendered = plan.request.template.render(contact.fields)
        except InputError as exc:
            plan.problems.append(RowProblem(contact.line, exc.field, exc.problem))
            continue
        to = Address(contact.email, _display_name(contact.fields))
        plan.renders.append(Preview(contact.line, to, rendered))
        kept.append(contact)
    plan.ready = kept
    plan.problems.sort(key=lambda p: p.line)


def _display_name(fields: dict[str, str]) -> str:
    if fields.get("name"):
        return fields["name"].strip()
    first = fields.get("first_name", "").strip()
    last = fields.get("last_name", "").strip()
    # Japanese, Chinese and Korean names put the family name first.
    parts = [last, first] if _is_cjk(first + last) else [first, last]
    return " ".join(p for p in parts if p)


def _is_cjk(text: str) -> bool:
    return any(
        "\u3040" <= ch <= "\u30ff"  # kana
        or "\u3400" <= ch <= "\u9fff"  # CJK ideographs
        or "\uac00" <= ch <= "\ud7af"  # hangul
        for ch in text
    )


def launch(mr: Mailroom, plan: CampaignPlan) -> Launched:
    """Commit the campaign and every message of it in one transaction."""
    if not plan.renders:
        raise InputError(
            "contacts", Text("no row can be sent"), Text("fix the rows listed")
        )
    campaign_id = _create_campaign(mr, plan)
    messages = [
        new_message(
            mr,
            plan.team,
            plan.channel,
            plan.sender,
            draft_content(
                plan.sender,
                [p.to],
                [],
                p.rendered.subject,
                p.rendered.text,
                p.rendered.html,
            ),
            [(p.to.addr_spec, "to")],
            campaign_id,
        )
        for p in plan.renders
    ]
    ids = mr.outbox.accept(messages)
    return Launched(campaign_id, ids, estimate_finish(mr, plan.channel))


def _create_campaign(mr: Mailroom, plan: CampaignPlan) -> int:
    with mr.db.begin() as conn:
        result = conn.execute(
            insert(t.campaigns).values(
                team_id=plan.team.id,
                name=plan.request.name,
                channel_id=plan.channel.id,
                sender=plan.sender.addr_spec,
                rows_total=plan.total_rows,
                queued=len(plan.renders),
                invalid=len(plan.problems),
                duplicates=plan.duplicates,
                suppressed=plan.suppressed,
                created_at=mr.clock.now(),
            )
        )
    return new_id(result)


def estimate_finish(mr: Mailroom, channel: Channel) -> datetime | None:
    """When the channel's waiting mail will be through, given its limits;
    ``None`` when nothing is waiting."""
    batches = _waiting_batches(mr, channel)
    if not batches:
        return None
    limiter = RateLimiter(channel.limits, mr.outbox.history(channel.id))
    # A paused channel sends nothing before its pause ends.
    start = max(mr.clock.now(), channel.paused_until or mr.clock.now())
    return limiter.finish_time(start, batches)


def _waiting_batches(mr: Mailroom, channel: Channel) -> list[int]:
    m, r = t.messages.c, t.recipients.c
    waiting = [MessageState.queued, MessageState.deferred, MessageState.sending]
    with mr.db.connect() as conn:
        counts = conn.execute(
            select(func.count(r.id))
            .select_from(t.messages.join(t.recipients))
            .where(m.channel_id == channel.id)
            .where(m.state.in_(waiting))
            .where(r.state.in_(["queued", "deferred"]))
            .group_by(m.id)
            .order_by(m.id)
        ).scalars()
        limit = channel.limits.max_recipients
        return [
            len(group)
            for count in counts
            for group in split_recipients(list(range(count)), limit)
        ]
