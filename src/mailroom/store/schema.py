"""Tables of the outbox (SQLAlchemy Core).

Alembic migrations in ``migrations/`` create these tables; this module is the
single description the code queries against.  Times are stored as UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on every backend.

    SQLite keeps no time zone, so values are stored as naive UTC and given
    their zone back on the way out.
    """

    impl = DateTime
    cache_ok = True

    def process_bind_param(
        self, value: datetime | None, dialect: Any
    ) -> datetime | None:
        if value is None:
            return None
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(
        self, value: datetime | None, dialect: Any
    ) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC)


metadata = MetaData()

# Written out, not bound, so that the planner can match the partial index.
WAITING_SQL = "state IN ('queued', 'deferred')"

teams = Table(
    "teams",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
)

team_domains = Table(
    "team_domains",
    metadata,
    Column("team_id", ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True),
    Column("domain", String(255), primary_key=True),
)

members = Table(
    "members",
    metadata,
    Column("team_id", ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True),
    Column("address", String(320), primary_key=True),
)

channels = Table(
    "channels",
    metadata,
    Column("id", Integer, primary_key=True),
    # NULL for the platform's default relay, which belongs to no team.
    Column("team_id", ForeignKey("teams.id", ondelete="CASCADE"), nullable=True),
    Column("name", String(100), nullable=False),
    Column("kind", String(30), nullable=False),
    Column("scope", String(20), nullable=False),
    Column("owner", String(320)),
    Column("host", String(255), nullable=False),
    Column("port", Integer, nullable=False),
    Column("security", String(10), nullable=False),
    Column("username", String(320), nullable=False, default=""),
    Column("secret", LargeBinary),
    Column("domains", JSON, nullable=False, default=list),
    Column("aliases", JSON, nullable=False, default=list),
    Column("per_minute", Integer),
    Column("per_day", Integer),
    Column("min_interval", Float),
    Column("max_recipients", Integer),
    Column("ca_bundle", Text),
    Column("verify_tls", Boolean, nullable=False, default=True),
    Column("connections", Integer, nullable=False, default=1),
    Column("status", String(20), nullable=False, default="connected"),
    Column("status_reason", Text, nullable=False, default=""),
    Column("paused_until", UTCDateTime),
    # The one worker delivering this channel's mail now ("host:pid"), and
    # until when: a channel's limits are kept by a single process at a time.
    Column("worker", String(255)),
    Column("worker_until", UTCDateTime),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("team_id", "name", name="uq_channels_team_name"),
)

campaigns = Table(
    "campaigns",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("team_id", ForeignKey("teams.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("channel_id", ForeignKey("channels.id"), nullable=True),
    Column("sender", String(320), nullable=False),
    Column("rows_total", Integer, nullable=False, default=0),
    Column("queued", Integer, nullable=False, default=0),
    Column("invalid", Integer, nullable=False, default=0),
    Column("duplicates", Integer, nullable=False, default=0),
    Column("suppressed", Integer, nullable=False, default=0),
    Column("created_at", UTCDateTime, nullable=False),
)

messages = Table(
    "messages",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("team_id", ForeignKey("teams.id", ondelete="CASCADE"), nullable=True),
    Column("channel_id", ForeignKey("channels.id"), nullable=False),
    Column("campaign_id", ForeignKey("campaigns.id"), nullable=True),
    # The Message-ID header, fixed when the message is accepted (RFC 5322 3.6.4).
    Column("message_id", String(255), nullable=False, unique=True),
    Column("sender", String(320), nullable=False),
    Column("state", String(20), nullable=False),
    Column("reason", Text, nullable=False, default=""),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    # A worker's claim; an expired lease means the worker died mid-send.
    Column("lease_until", UTCDateTime),
    # Which worker holds the claim ("host:pid"), so that a worker restarted
    # on the same machine can take back a dead one's claims at once.
    Column("claimed_by", String(255)),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("sent_at", UTCDateTime),
    # Only waiting messages are in the due index: a message leaves it once,
    # when claimed, and state changes after that touch no index entry.
    Index(
        "ix_messages_due",
        "channel_id",
        "next_attempt_at",
        sqlite_where=text(WAITING_SQL),
        postgresql_where=text(WAITING_SQL),
    ),
    Index("ix_messages_campaign", "campaign_id"),
)

# The message itself, apart from its state: written once at acceptance, so that
# the many small state updates of delivery never rewrite kilobytes of content.
message_contents = Table(
    "message_contents",
    metadata,
    Column(
        "message_id", ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True
    ),
    # The draft: display names, subject, bodies, extra headers (JSON).
    Column("content", JSON, nullable=False),
)

recipients = Table(
    "recipients",
    metadata,
    Column("id", Integer, primary_key=True),
    Column(
        "message_id",
        ForeignKey("messages.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("address", String(320), nullable=False),
    Column("kind", String(3), nullable=False, default="to"),
    Column("state", String(20), nullable=False),
    Column("reply", Text, nullable=False, default=""),
    Column("updated_at", UTCDateTime, nullable=False),
)

attempts = Table(
    "attempts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("message_id", ForeignKey("messages.id", ondelete="CASCADE"), index=True),
    Column("channel_id", ForeignKey("channels.id"), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    # connect, auth, mail, rcpt, data: where in the conversation it happened.
    Column("stage", String(20), nullable=False),
    Column("recipient", String(320)),
    Column("code", Integer),
    Column("enhanced", String(12), nullable=False, default=""),
    Column("text", Text, nullable=False, default=""),
    Column("reply_class", String(20), nullable=False),
    # RCPT commands sent in this transaction, counted against the daily quota.
    Column("rcpt_count", Integer, nullable=False, default=0),
    Index("ix_attempts_channel_at", "channel_id", "at"),
)

suppressions = Table(
    "suppressions",
    metadata,
    Column("team_id", ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True),
    Column("address", String(320), primary_key=True),
    Column("reason", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("at", UTCDateTime, nullable=False),
    Column("channel_id", ForeignKey("channels.id", ondelete="CASCADE")),
    Column("message_id", ForeignKey("messages.id", ondelete="CASCADE"), index=True),
    Column("kind", String(40), nullable=False),
    Column("detail", Text, nullable=False, default=""),
)
