"""Channel presets: the documented facts of each kind of delivery service.

Every value is a default that ``channel add`` flags may override.  The README
section "Channel presets" lists each fact with its source.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from mailroom.channels.model import Limits, Scope, Security
from mailroom.errors import InputError
from mailroom.i18n import Text


@dataclass(frozen=True, slots=True)
class Preset:
    kind: str
    title: str
    host: str
    port: int
    security: Security
    scope: Scope
    limits: Limits = field(default_factory=Limits)
    # A fixed SMTP username where the service documents one (SendGrid: apikey).
    username: str | None = None
    note: str = ""


# Exchange Team blog and Message Center MC786329: rejections were to start on
# 1 March 2026; the 27 January 2026 update keeps Basic auth working until the
# end of December 2026, when it is disabled by default for existing tenants.
BASIC_AUTH_RETIREMENT: Final = (
    "Microsoft is retiring Basic authentication (passwords) for SMTP AUTH in "
    "Exchange Online: it is disabled by default at the end of December 2026, "
    "after which logins fail with 550 5.7.30. Connect the mailbox with OAuth "
    "instead: mailroom channel connect microsoft --owner ADDRESS"
)

PRESETS: Final[dict[str, Preset]] = {
    preset.kind: preset
    for preset in (
        Preset("smtp", "Custom SMTP server", "", 587, Security.starttls, Scope.team),
        Preset(
            "office365",
            "Microsoft 365 / Exchange Online (SMTP AUTH)",
            "smtp.office365.com",
            587,
            Security.starttls,
            Scope.personal,
            Limits(per_minute=30, per_day=10_000, max_recipients=500),
            note=BASIC_AUTH_RETIREMENT,
        ),
        Preset(
            "gmail",
            "Gmail / Google Workspace (app password)",
            "smtp.gmail.com",
            587,
            Security.starttls,
            Scope.personal,
            Limits(per_minute=60, per_day=2_000, max_recipients=100),
        ),
        Preset(
            "gmail-oauth",
            "Gmail / Google Workspace (OAuth, no password)",
            "smtp.gmail.com",
            587,
            Security.starttls,
            Scope.personal,
            Limits(per_minute=60, per_day=2_000, max_recipients=100),
        ),
        Preset(
            "microsoft-oauth",
            "Microsoft 365 / Exchange Online (OAuth, no password)",
            "smtp.office365.com",
            587,
            Security.starttls,
            Scope.personal,
            Limits(per_minute=30, per_day=10_000, max_recipients=500),
        ),
        Preset(
            "sparkpost",
            "SparkPost",
            "smtp.sparkpostmail.com",
            587,
            Security.starttls,
            Scope.team,
            username="SMTP_Injection",
        ),
        Preset(
            "sendgrid",
            "SendGrid",
            "smtp.sendgrid.net",
            587,
            Security.starttls,
            Scope.team,
            Limits(max_recipients=1_000),
            username="apikey",
        ),
        Preset(
            "ses",
            "Amazon SES (set the region's endpoint)",
            "email-smtp.us-east-1.amazonaws.com",
            587,
            Security.starttls,
            Scope.team,
            Limits(per_minute=60, per_day=200, max_recipients=50),
        ),
        Preset(
            "mailgun",
            "Mailgun",
            "smtp.mailgun.org",
            587,
            Security.starttls,
            Scope.team,
            Limits(max_recipients=1_000),
        ),
        Preset(
            "sandbox",
            "mailroom's built-in sandbox server",
            "127.0.0.1",
            2525,
            Security.starttls,
            Scope.team,
            username="sandbox",
        ),
    )
}


def get_preset(kind: str) -> Preset:
    try:
        return PRESETS[kind]
    except KeyError:
        choices = ", ".join(PRESETS)
        raise InputError(
            "kind",
            Text("unknown channel kind {kind!r}", kind=kind),
            Text("use {choices}", choices=choices),
        ) from None
