"""Reply classification: one table of real provider replies."""

from __future__ import annotations

import pytest

from mailroom.delivery.replies import Reply, ReplyClass, classify

CASES = [
    (250, "2.0.0 OK queued", ReplyClass.success),
    (451, "4.3.0 Mail server temporarily rejected message", ReplyClass.transient),
    # Gmail's per-recipient rate: that recipient waits, the channel does not.
    (
        450,
        "4.2.1 The user you are trying to contact is receiving mail too slowly",
        ReplyClass.transient,
    ),
    (421, "4.7.0 Try again later, closing connection", ReplyClass.throttled),
    (451, "4.7.1 Too many messages, slow down", ReplyClass.throttled),
    (452, "4.3.2 System not accepting network messages", ReplyClass.throttled),
    (535, "5.7.3 Authentication unsuccessful", ReplyClass.auth),
    (
        535,
        "5.7.139 Authentication unsuccessful, the user credentials were incorrect",
        ReplyClass.auth,
    ),
    (535, "5.7.8 Username and Password not accepted", ReplyClass.auth),
    (
        550,
        "5.7.30 Basic authentication is not supported for Client Submission.",
        ReplyClass.auth,
    ),
    (534, "5.7.9 Application-specific password required", ReplyClass.auth),
    (550, "5.4.5 Daily user sending quota exceeded", ReplyClass.quota),
    (554, "5.2.2 mailbox full; Submission quota exceeded", ReplyClass.quota),
    (
        550,
        "5.1.90 Your message can't be sent because you've reached your daily "
        "limit for message recipients",
        ReplyClass.quota,
    ),
    (454, "Throttling failure: Daily message quota exceeded.", ReplyClass.quota),
    (
        550,
        "5.1.1 <nobody@example.com>: Recipient address rejected: User unknown",
        ReplyClass.permanent,
    ),
    (554, "5.7.1 Message rejected as spam", ReplyClass.permanent),
    (
        550,
        "5.7.60 SendAsDenied; alice@example.com not allowed to send as "
        "carol@example.com",
        ReplyClass.permanent,
    ),
]


@pytest.mark.parametrize(("code", "text", "expected"), CASES)
def test_classify(code: int, text: str, expected: ReplyClass) -> None:
    assert classify(Reply.parse(code, text)) is expected


def test_parse_splits_the_enhanced_code() -> None:
    reply = Reply.parse(550, "5.1.1 <x@example.com>: user unknown")

    assert (reply.code, reply.enhanced) == (550, "5.1.1")
    assert reply.text == "<x@example.com>: user unknown"
    assert str(reply) == "550 5.1.1 <x@example.com>: user unknown"


def test_parse_without_an_enhanced_code() -> None:
    reply = Reply.parse(250, "OK")

    assert reply.enhanced == ""
    assert reply.is_success
