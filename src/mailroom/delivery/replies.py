"""Server replies and their classes.

A reply is a small value: the three-digit code, the RFC 3463 enhanced status code
when the server gave one, and the text.  ``classify`` is the only place that turns
a reply into a ``ReplyClass``; everything else in mailroom acts on the class.

The classes follow what delivery servers actually send (sources in the README):
Exchange Online, Gmail, Amazon SES, SendGrid, SparkPost and Mailgun all signal
throttling, quota and authentication problems with recognisable codes, but not
always in the 4xx range, so the enhanced code and a few documented phrases are
read as well as the basic code.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Final


class ReplyCode(enum.IntEnum):
    """Basic reply codes of RFC 5321 4.2.3 that mailroom acts on by name."""

    service_ready = 220
    closing = 221
    auth_successful = 235
    completed = 250
    will_forward = 251
    cannot_verify = 252
    start_input = 354
    service_unavailable = 421
    mailbox_busy = 450
    local_error = 451
    insufficient_storage = 452
    temp_auth_failure = 454
    syntax_error = 500
    auth_required = 530
    auth_mechanism_too_weak = 534
    auth_failed = 535
    mailbox_unavailable = 550
    user_not_local = 551
    storage_exceeded = 552
    bad_mailbox_name = 553
    transaction_failed = 554


class ReplyClass(enum.StrEnum):
    """What a reply means for the message, the recipient and the channel."""

    # 2xx: accepted.
    success = "success"
    # 4xx: try the same thing again later, with backoff.
    transient = "transient"
    # The server asks the channel to slow down; the message is not charged.
    throttled = "throttled"
    # The channel's daily or hourly allowance is used up; wait for the window.
    quota = "quota"
    # The channel's credentials no longer work; hold its mail until updated.
    auth = "auth"
    # This recipient will never accept this message.
    permanent = "permanent"


@dataclass(frozen=True, slots=True)
class Reply:
    """One SMTP reply: code, RFC 3463 enhanced code (or ``""``) and text."""

    code: int
    enhanced: str
    text: str

    @classmethod
    def parse(cls, code: int, message: str) -> Reply:
        """Split an enhanced status code off the front of the reply text."""
        match = _ENHANCED.match(message)
        if match is None:
            return cls(code, "", message.strip())
        return cls(code, match.group(1), message[match.end() :].strip())

    @property
    def is_success(self) -> bool:
        return 200 <= self.code < 400

    def __str__(self) -> str:
        parts = [str(self.code), self.enhanced, self.text]
        return " ".join(part for part in parts if part)


# RFC 3463 2: class.subject.detail, the class repeating the reply's first digit.
_ENHANCED: Final = re.compile(r"\s*([245]\.\d{1,3}\.\d{1,3})\b")

# Exchange Online 5.7.139/5.7.57/5.7.3, 5.7.30 once Basic auth is retired, and
# Gmail 534 5.7.9/535 5.7.8 (see README).
_AUTH_ENHANCED: Final = frozenset(
    {"5.7.0", "5.7.3", "5.7.8", "5.7.9", "5.7.57", "5.7.139", "4.7.12", "5.7.12"}
)
_AUTH_ALWAYS: Final = frozenset({"5.7.139", "5.7.57", "5.7.30"})
_AUTH_CODES: Final = frozenset(
    {ReplyCode.auth_required, ReplyCode.auth_mechanism_too_weak, ReplyCode.auth_failed}
)

# Gmail 550 5.4.5, Exchange Online 554 5.2.2 "submission quota" and 550 5.1.90.
_QUOTA_ENHANCED: Final = frozenset({"5.4.5", "4.4.5", "5.1.90"})
_QUOTA_WORDS: Final = re.compile(
    r"quota exceeded|sending limit|sending quota|daily limit|submission quota"
    r"|rate limit exceeded for the day|too many messages today",
    re.IGNORECASE,
)

# RFC 3463 class X.7 is security or policy; 4.7.x, 4.3.2 and 421 ask us to wait.
_THROTTLE_ENHANCED: Final = re.compile(r"4\.(7\.\d+|3\.2|4\.2)$")
_THROTTLE_WORDS: Final = re.compile(
    r"too many|rate limit|throttl|slow down|try again later|concurrent connections",
    re.IGNORECASE,
)


def classify(reply: Reply) -> ReplyClass:
    """Decide what a reply means; the single source of truth for reply classes."""
    if reply.is_success:
        return ReplyClass.success

    if not 400 <= reply.code < 600:
        # Not a reply RFC 5321 4.2 defines: never a reason to bounce anyone.
        return ReplyClass.transient

    if _is_auth_failure(reply):
        return ReplyClass.auth

    if _is_quota(reply):
        return ReplyClass.quota

    if reply.code < 500:
        return _classify_temporary(reply)

    return ReplyClass.permanent


def _is_auth_failure(reply: Reply) -> bool:
    # 5.7.1 alone is also used for relay denial and SendAsDenied (5.7.60), so
    # only the codes that the providers document for bad credentials count.
    if reply.code in _AUTH_CODES:
        return True

    if reply.enhanced in _AUTH_ENHANCED and reply.code in (454, 535, 530, 534):
        return True

    return reply.enhanced in _AUTH_ALWAYS


def _is_quota(reply: Reply) -> bool:
    if reply.enhanced in _QUOTA_ENHANCED:
        return True

    if reply.enhanced == "5.2.2" and "submission" in reply.text.lower():
        return True

    return bool(_QUOTA_WORDS.search(reply.text))


def _classify_temporary(reply: Reply) -> ReplyClass:
    if reply.code == ReplyCode.service_unavailable:
        return ReplyClass.throttled

    if _THROTTLE_ENHANCED.match(reply.enhanced):
        return ReplyClass.throttled

    if _THROTTLE_WORDS.search(reply.text):
        return ReplyClass.throttled

    return ReplyClass.transient


def describe(reply_class: ReplyClass) -> str:
    """Words for an operator or a user: what happened and what mailroom does."""
    return _DESCRIPTIONS[reply_class]


_DESCRIPTIONS: Final = {
    ReplyClass.success: "accepted by the server",
    ReplyClass.transient: "temporary failure; retrying with backoff",
    ReplyClass.throttled: "the server asked us to slow down; the channel waits",
    ReplyClass.quota: "the channel's sending quota is used up; waiting for it",
    ReplyClass.auth: "the server refused the channel's credentials; mail is held",
    ReplyClass.permanent: "refused permanently",
}
