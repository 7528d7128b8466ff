"""The scriptable fault server answers exactly as scripted, over real SMTP."""

from __future__ import annotations

import aiosmtplib
import pytest

from tests.support.faults import FaultServer
from tests.support.plugin import FAULT_PASSWORD, FAULT_USERNAME, connected
from tests.support.tls import TestCA

# Set, so the client never asks the resolver for our own name.
CLIENT_NAME = "client.example.com"
SENDER = "sales@example.com"
MESSAGE = b"From: sales@example.com\r\nSubject: hello\r\n\r\nHi there\r\n"

# Replies providers really send; each must reach the client word for word.
PROVIDER_FAULTS = [
    ("MAIL", "421 4.7.0 Temporary System Problem. Try again later"),
    ("MAIL", "451 4.7.1 Rate limit exceeded, slow down"),
    ("RCPT", "452 4.3.2 System not accepting network messages"),
    ("MAIL", "454 4.7.0 Throttling failure: Daily message quota exceeded."),
    ("DATA", "550 5.4.5 Daily user sending quota exceeded."),
    ("DATA", "554 5.2.2 Submission quota exceeded"),
    ("MAIL", "550 5.1.90 Your message can't be sent, daily limit reached"),
    ("DATA", "451 4.3.0 Temporary local problem, try again"),
    ("EHLO", "421 4.7.0 Too many concurrent connections"),
]


def _client(server: FaultServer, **options: object) -> aiosmtplib.SMTP:
    settings: dict[str, object] = {
        "hostname": server.host,
        "port": server.port,
        "local_hostname": CLIENT_NAME,
        "timeout": 5,
    }
    settings.update(options)
    return aiosmtplib.SMTP(**settings)  # type: ignore[arg-type]


def _tls_client(server: FaultServer, tls_ca: TestCA) -> aiosmtplib.SMTP:
    return _client(
        server, start_tls=True, validate_certs=True, cert_bundle=str(tls_ca.ca_path)
    )


def _reply_of(error: Exception) -> str:
    """The server reply behind an aiosmtplib error, as one line."""
    if isinstance(error, aiosmtplib.SMTPRecipientsRefused):
        [error] = error.recipients
    assert isinstance(error, aiosmtplib.SMTPResponseException)
    return f"{error.code} {error.message}"


async def _send(
    client: aiosmtplib.SMTP, rcpts: list[str]
) -> dict[str, aiosmtplib.SMTPResponse]:
    errors, _ = await client.sendmail(SENDER, rcpts, MESSAGE)
    return errors


# -- recording --------------------------------------------------------------


async def test_healthy_server_records_the_transaction(
    fault_server: FaultServer,
) -> None:
    async with connected(_client(fault_server)) as client:
        errors = await _send(client, ["a@example.com", "b@example.com"])

    assert errors == {}
    [received] = fault_server.received
    assert received.envelope_from == SENDER
    assert received.envelope_rcpts == ("a@example.com", "b@example.com")
    assert received.data == MESSAGE
    assert received.accepted
    assert fault_server.connections == 1
    [transcript] = fault_server.transcripts
    assert [line.split()[0] for line in transcript] == [
        "EHLO",
        "MAIL",
        "RCPT",
        "RCPT",
        "DATA",
        "QUIT",
    ]
    assert transcript[1] == f"MAIL FROM:<{SENDER}> size={len(MESSAGE)}"


# -- scripted replies -------------------------------------------------------


@pytest.mark.parametrize(("verb", "reply"), PROVIDER_FAULTS)
async def test_each_verb_answers_word_for_word(
    fault_server: FaultServer, verb: str, reply: str
) -> None:
    fault_server.script(verb, reply)

    with pytest.raises(aiosmtplib.SMTPException) as caught:
        async with connected(_client(fault_server)) as client:
            await _send(client, ["a@example.com"])

    assert _reply_of(caught.value) == reply
    assert [t for t in fault_server.received if t.accepted] == []


async def test_recipient_rule_refuses_only_its_address(
    fault_server: FaultServer,
) -> None:
    unknown = "550 5.1.1 <x@example.com>: user unknown"
    fault_server.script("RCPT", unknown, match="X@example.com")

    async with connected(_client(fault_server)) as client:
        errors = await _send(client, ["a@example.com", "x@example.com"])

    assert {rcpt: str(r) for rcpt, r in errors.items()} == {"x@example.com": unknown}
    [received] = fault_server.received
    assert received.envelope_rcpts == ("a@example.com",)


async def test_sender_rule_refuses_only_its_address(
    fault_server: FaultServer,
) -> None:
    fault_server.script("MAIL", "550 5.7.1 Sender denied", match="other@example.com")

    async with connected(_client(fault_server)) as client:
        await _send(client, ["a@example.com"])
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as caught:
            await client.sendmail("other@example.com", ["a@example.com"], MESSAGE)

    assert _reply_of(caught.value) == "550 5.7.1 Sender denied"
    assert len(fault_server.received) == 1


async def test_data_rule_records_the_refused_message(
    fault_server: FaultServer,
) -> None:
    fault_server.script("DATA", "554 5.2.2 Submission quota exceeded")

    async with connected(_client(fault_server)) as client:
        with pytest.raises(aiosmtplib.SMTPDataError):
            await _send(client, ["a@example.com"])

    [received] = fault_server.received
    assert received.reply == "554 5.2.2 Submission quota exceeded"
    assert not received.accepted
    assert received.data == MESSAGE


async def test_times_limits_a_rule_then_normal_replies_return(
    fault_server: FaultServer,
) -> None:
    fault_server.script("RCPT", "451 4.7.1 Try again later", times=2)

    async with connected(_client(fault_server)) as client:
        for _ in range(2):
            with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
                await _send(client, ["a@example.com"])
        errors = await _send(client, ["a@example.com"])

    assert errors == {}
    assert [t.envelope_rcpts for t in fault_server.received] == [("a@example.com",)]


async def test_rules_fire_in_the_order_they_were_added(
    fault_server: FaultServer,
) -> None:
    fault_server.script("MAIL", "451 4.7.1 First", times=1)
    fault_server.script("MAIL", "452 4.3.1 Second", times=1)

    replies = []
    async with connected(_client(fault_server)) as client:
        for _ in range(2):
            with pytest.raises(aiosmtplib.SMTPSenderRefused) as caught:
                await _send(client, ["a@example.com"])
            replies.append(_reply_of(caught.value))
        await _send(client, ["a@example.com"])

    assert replies == ["451 4.7.1 First", "452 4.3.1 Second"]
    assert len(fault_server.received) == 1


async def test_421_closes_the_connection(fault_server: FaultServer) -> None:
    fault_server.script("MAIL", "421 4.7.0 Too many messages", times=1)

    async with connected(_client(fault_server)) as client:
        with pytest.raises(aiosmtplib.SMTPSenderRefused):
            await _send(client, ["a@example.com"])
        with pytest.raises(aiosmtplib.SMTPServerDisconnected):
            await client.noop()

    async with connected(_client(fault_server)) as client:
        await _send(client, ["a@example.com"])
    assert fault_server.connections == 2


async def test_drop_after_closes_abruptly_and_reconnect_works(
    fault_server: FaultServer,
) -> None:
    fault_server.drop_after(messages=2)

    async with connected(_client(fault_server)) as client:
        await _send(client, ["a@example.com"])
        await _send(client, ["b@example.com"])
        with pytest.raises(aiosmtplib.SMTPServerDisconnected):
            await _send(client, ["c@example.com"])

    async with connected(_client(fault_server)) as client:
        await _send(client, ["c@example.com"])

    rcpts = [t.envelope_rcpts for t in fault_server.received]
    assert rcpts == [("a@example.com",), ("b@example.com",), ("c@example.com",)]
    assert fault_server.connections == 2
    # No reply of any kind was sent before the close.
    assert fault_server.transcripts[0][-1].startswith("MAIL")


@pytest.mark.parametrize("verb", ["VRFY", "QUIT"])
def test_unknown_verbs_cannot_be_scripted(fault_server: FaultServer, verb: str) -> None:
    with pytest.raises(ValueError, match="verb"):
        fault_server.script(verb, "550 5.0.0 No")


@pytest.mark.parametrize("reply", ["250 OK", "550", "550 5.1.1 a\r\n250 OK", "ok"])
def test_only_fault_replies_can_be_scripted(
    fault_server: FaultServer, reply: str
) -> None:
    with pytest.raises(ValueError, match="reply"):
        fault_server.script("MAIL", reply)


# -- TLS and AUTH -----------------------------------------------------------


async def test_tls_server_requires_starttls_first(
    fault_server_tls: FaultServer,
) -> None:
    async with connected(_client(fault_server_tls, start_tls=False)) as client:
        mail = await client.execute_command(b"MAIL", f"FROM:<{SENDER}>".encode())

    assert mail.code == 530


async def test_tls_server_accepts_the_right_login(
    fault_server_tls: FaultServer, tls_ca: TestCA
) -> None:
    async with connected(_tls_client(fault_server_tls, tls_ca)) as client:
        await client.ehlo()
        await client.auth_plain(FAULT_USERNAME, FAULT_PASSWORD.reveal())
        await _send(client, ["a@example.com"])

    assert len(fault_server_tls.received) == 1
    [transcript] = fault_server_tls.transcripts
    assert "AUTH PLAIN [redacted]" in transcript
    assert all(FAULT_PASSWORD.reveal() not in line for line in transcript)


@pytest.mark.parametrize(
    "reply",
    [
        "535 5.7.3 Authentication unsuccessful",
        "535 5.7.139 Authentication unsuccessful, the user credentials were incorrect",
    ],
)
@pytest.mark.parametrize("method", ["auth_plain", "auth_login"])
async def test_auth_rule_fails_even_good_credentials(
    fault_server_tls: FaultServer, tls_ca: TestCA, reply: str, method: str
) -> None:
    fault_server_tls.script("AUTH", reply)

    async with connected(_tls_client(fault_server_tls, tls_ca)) as client:
        await client.ehlo()
        with pytest.raises(aiosmtplib.SMTPAuthenticationError) as caught:
            await getattr(client, method)(FAULT_USERNAME, FAULT_PASSWORD.reveal())

    assert _reply_of(caught.value) == reply


async def test_wrong_password_is_refused(
    fault_server_tls: FaultServer, tls_ca: TestCA
) -> None:
    async with connected(_tls_client(fault_server_tls, tls_ca)) as client:
        await client.ehlo()
        with pytest.raises(aiosmtplib.SMTPAuthenticationError) as caught:
            await client.auth_login(FAULT_USERNAME, "fake-wrong-password")

    assert caught.value.code == 535


async def test_runs_on_the_current_event_loop() -> None:
    async with FaultServer() as server:
        server.script("RCPT", "550 5.1.1 No such user", match="x@example.com")
        async with connected(_client(server)) as client:
            errors = await _send(client, ["a@example.com", "x@example.com"])

    assert list(errors) == ["x@example.com"]
    assert server.connections == 1
