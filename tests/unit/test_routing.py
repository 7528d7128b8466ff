"""Which channel carries a message, and who may use which channel."""

from __future__ import annotations

import pytest

from mailroom.channels.model import Channel, Scope, Security
from mailroom.channels.routing import choose_channel
from mailroom.errors import RoutingError, SenderNotAllowedError


def channel(name: str, scope: Scope, **extra: object) -> Channel:
    return Channel(
        id=len(name),
        team_id=None if scope is Scope.platform else 1,
        name=name,
        kind="smtp",
        scope=scope,
        host="127.0.0.1",
        port=25,
        security=Security.none,
        username="",
        **extra,  # type: ignore[arg-type]
    )


TEAM = channel("team", Scope.team, domains=["example.com"])
ALICE = channel(
    "alice-mailbox",
    Scope.personal,
    owner="alice@example.com",
    aliases=["sales@example.com"],
)
RELAY = channel("relay", Scope.platform)


def test_the_senders_own_mailbox_comes_first() -> None:
    assert choose_channel([TEAM, ALICE, RELAY], "alice@example.com") is ALICE


def test_an_alias_of_the_owner_uses_the_mailbox() -> None:
    picked = choose_channel(
        [TEAM, ALICE], "sales@example.com", member="alice@example.com"
    )

    assert picked is ALICE


def test_another_member_of_the_domain_uses_the_team_channel() -> None:
    assert choose_channel([TEAM, ALICE, RELAY], "bob@example.com") is TEAM


def test_a_domain_no_channel_covers_goes_to_the_platform_relay() -> None:
    assert choose_channel([TEAM, ALICE, RELAY], "bob@example.org") is RELAY


def test_without_a_relay_such_a_sender_is_refused_with_the_reason() -> None:
    with pytest.raises(RoutingError, match=r"no channel may send as bob@example\.org"):
        choose_channel([TEAM, ALICE], "bob@example.org")


def test_a_channel_asked_for_by_name_wins() -> None:
    picked = choose_channel([TEAM, ALICE], "alice@example.com", requested="team")

    assert picked is TEAM


def test_someone_elses_mailbox_is_refused_like_send_as_denied() -> None:
    with pytest.raises(SenderNotAllowedError, match=r"alice@example\.com.s own"):
        choose_channel(
            [ALICE],
            "bob@example.com",
            member="bob@example.com",
            requested="alice-mailbox",
        )


def test_the_owner_may_not_send_as_an_address_the_mailbox_does_not_own() -> None:
    with pytest.raises(SenderNotAllowedError, match="SendAsDenied"):
        choose_channel(
            [ALICE],
            "ceo@example.com",
            member="alice@example.com",
            requested="alice-mailbox",
        )


def test_a_team_channel_refuses_another_domain() -> None:
    with pytest.raises(SenderNotAllowedError, match=r"sends only from example\.com"):
        choose_channel([TEAM], "bob@example.org", requested="team")
