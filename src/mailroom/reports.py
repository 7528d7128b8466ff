"""Reports: plain data about channels, messages, campaigns and the queue.

The command line prints them (as tables or ``--json``); the web API will serve
the same.  Each is built field by field from an allow-list, so a secret added
to a core object later cannot reach any output by accident.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from mailroom.channels.model import Channel
from mailroom.core import Mailroom
from mailroom.store import schema as t
from mailroom.store.states import SETTLED


def channel_view(channel: Channel, team: str | None = None) -> dict[str, Any]:
    limits = channel.limits
    return {
        "name": channel.name,
        "team": team,
        "kind": channel.kind,
        "host": channel.host,
        "port": channel.port,
        "security": str(channel.security),
        "scope": str(channel.scope),
        "owner": channel.owner,
        "domains": channel.domains,
        "aliases": channel.aliases,
        "username": channel.username,
        "has_secret": channel.secret is not None,
        "verify_tls": channel.verify_tls,
        "ca_bundle": channel.ca_bundle,
        "connections": channel.connections,
        "limits": {
            "per_minute": limits.per_minute,
            "per_day": limits.per_day,
            "min_interval": limits.min_interval,
            "max_recipients": limits.max_recipients,
        },
        "status": str(channel.status),
        "status_reason": channel.status_reason,
        "paused_until": channel.paused_until,
    }


def message_view(mr: Mailroom, message_db_id: int) -> dict[str, Any] | None:
    with mr.db.connect() as conn:
        row = conn.execute(
            select(
                t.messages,
                t.channels.c.name.label("channel"),
                t.message_contents.c.content,
            )
            .join(t.channels)
            .join(t.message_contents)
            .where(t.messages.c.id == message_db_id)
        ).first()
        if row is None:
            return None
        recipients = conn.execute(
            select(t.recipients).where(t.recipients.c.message_id == row.id)
        ).all()
        attempts = conn.execute(
            select(t.attempts)
            .where(t.attempts.c.message_id == row.id)
            .order_by(t.attempts.c.id)
        ).all()
    return {
        "id": row.id,
        "message_id": row.message_id,
        "channel": row.channel,
        "sender": row.sender,
        "subject": row.content.get("subject", ""),
        "state": row.state,
        "reason": row.reason or _default_reason(row.state),
        "attempts": row.attempts,
        "next_attempt_at": None if row.state in SETTLED else row.next_attempt_at,
        "created_at": row.created_at,
        "sent_at": row.sent_at,
        "recipients": [
            {"address": r.address, "kind": r.kind, "state": r.state, "reply": r.reply}
            for r in recipients
        ],
        "history": [
            {
                "at": a.at,
                "stage": a.stage,
                "recipient": a.recipient,
                "code": a.code,
                "enhanced": a.enhanced,
                "text": a.text,
                "class": a.reply_class,
            }
            for a in attempts
        ],
    }


def find_message(mr: Mailroom, ref: str) -> int | None:
    """A message by database id or by its Message-ID header."""
    with mr.db.connect() as conn:
        if ref.isdigit():
            return conn.scalar(
                select(t.messages.c.id).where(t.messages.c.id == int(ref))
            )
        wanted = ref if ref.startswith("<") else f"<{ref}>"
        return conn.scalar(
            select(t.messages.c.id).where(t.messages.c.message_id == wanted)
        )


def state_counts(mr: Mailroom, campaign_id: int | None = None) -> dict[str, int]:
    query = select(t.messages.c.state, func.count()).group_by(t.messages.c.state)
    if campaign_id is not None:
        query = query.where(t.messages.c.campaign_id == campaign_id)
    with mr.db.connect() as conn:
        return {state: count for state, count in conn.execute(query)}


def waiting_view(mr: Mailroom, limit: int = 50) -> list[dict[str, Any]]:
    """Messages not yet settled, with why they wait and when they go next."""
    m = t.messages.c
    with mr.db.connect() as conn:
        rows = conn.execute(
            select(
                m.id,
                m.message_id,
                m.state,
                m.reason,
                m.next_attempt_at,
                m.attempts,
                t.channels.c.name.label("channel"),
            )
            .join(t.channels)
            .where(m.state.in_(["queued", "deferred", "held", "sending"]))
            .order_by(m.next_attempt_at, m.id)
            .limit(limit)
        ).all()
    return [_explained(dict(row._mapping)) for row in rows]


def _default_reason(state: str) -> str:
    return "waiting for its turn" if state == "queued" else ""


# What plain queued mail waits for: nothing but the messages before it.
_TURN = "waiting for its turn"


def _explained(row: dict[str, Any]) -> dict[str, Any]:
    # Held mail waits for a person, not a time; plain queued mail for its turn.
    if row["state"] == "held":
        row["next_attempt_at"] = None
    elif not row["reason"]:
        row["reason"] = _TURN
    return row


def campaign_view(mr: Mailroom, campaign_id: int) -> dict[str, Any] | None:
    with mr.db.connect() as conn:
        row = conn.execute(
            select(t.campaigns).where(t.campaigns.c.id == campaign_id)
        ).first()
        if row is None:
            return None
        bounced = conn.scalar(
            select(func.count())
            .select_from(t.recipients.join(t.messages))
            .where(t.messages.c.campaign_id == campaign_id)
            .where(t.recipients.c.state == "bounced")
        )
        next_at = conn.scalar(
            select(func.min(t.messages.c.next_attempt_at))
            .where(t.messages.c.campaign_id == campaign_id)
            .where(t.messages.c.state.in_(["queued", "deferred"]))
        )
        reason = conn.scalar(
            select(t.messages.c.reason)
            .where(t.messages.c.campaign_id == campaign_id)
            .where(t.messages.c.state.in_(["queued", "deferred", "held"]))
            .where(t.messages.c.reason != "")
            .limit(1)
        )
    return {
        "id": row.id,
        "name": row.name,
        "channel_id": row.channel_id,
        "sender": row.sender,
        "rows": row.rows_total,
        "queued_at_launch": row.queued,
        "invalid_rows": row.invalid,
        "duplicates": row.duplicates,
        "suppressed": row.suppressed,
        "states": state_counts(mr, campaign_id),
        "bounced_recipients": bounced or 0,
        "next_attempt_at": next_at,
        "waiting_reason": reason or (_TURN if next_at else ""),
    }
