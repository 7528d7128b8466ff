"""The Postfix harness itself: TLS, AUTH, relay refusal and Maildir counts.

Each test talks SMTP over loopback to the private instance that
``tests.support.postfix`` starts; none of it uses mailroom's own code, so a
failure here is the harness's, not the product's.
"""

from __future__ import annotations

import shutil
import smtplib
import ssl
import subprocess
from collections import Counter
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default
from typing import Final

import aiosmtplib
import pytest

from tests.support.postfix import PostfixInstance

pytestmark = pytest.mark.postfix

# Set, so neither client asks the resolver for this machine's name.
CLIENT_NAME: Final = "client.example.com"
RECIPIENTS: Final = ("alice@example.com", "bob@example.com")
# RFC 4954 6: 535 5.7.8 is "authentication credentials invalid".
AUTH_INVALID: Final = 535
# Postfix's reply to an RCPT that its restrictions refuse (RFC 3463 5.7.1).
ACCESS_DENIED: Final = 554


def _client(postfix: PostfixInstance, context: ssl.SSLContext) -> aiosmtplib.SMTP:
    return aiosmtplib.SMTP(
        hostname=postfix.host,
        port=postfix.port,
        start_tls=True,
        tls_context=context,
        local_hostname=CLIENT_NAME,
        timeout=10,
    )


def _trusting(postfix: PostfixInstance) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(postfix.ca_path))


def _message(number: int) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "sender@example.com"
    message["To"] = ", ".join(RECIPIENTS)
    message["Subject"] = f"harness message {number}"
    message["Message-ID"] = f"<harness-{number}@example.com>"
    message.set_content(f"body {number}\n")
    return message


def _header(raw: bytes, name: str) -> str:
    return str(BytesParser(policy=default).parsebytes(raw, headersonly=True)[name])


async def test_authenticated_tls_mail_lands_once_per_recipient(
    postfix: PostfixInstance,
) -> None:
    async with _client(postfix, _trusting(postfix)) as smtp:
        await smtp.login(postfix.username, postfix.password)
        for number in range(3):
            await smtp.send_message(_message(number), recipients=list(RECIPIENTS))

    deliveries = postfix.wait_for(6)

    pairs = Counter(
        (item.recipient, _header(item.message_bytes, "Message-ID"))
        for item in deliveries
    )
    expected = {
        (recipient, f"<harness-{number}@example.com>")
        for recipient in RECIPIENTS
        for number in range(3)
    }
    assert set(pairs) == expected
    assert set(pairs.values()) == {1}
    # Postfix names the protocol ESMTPSA only for TLS plus AUTH (RFC 3848).
    received = _header(deliveries[0].message_bytes, "Received")
    assert "with ESMTPSA" in received
    assert f"Authenticated sender: {postfix.username}" in received


async def test_wrong_password_is_refused_with_535(postfix: PostfixInstance) -> None:
    async with _client(postfix, _trusting(postfix)) as smtp:
        with pytest.raises(aiosmtplib.SMTPAuthenticationError) as refused:
            await smtp.login(postfix.username, "not-the-password")

    assert refused.value.code == AUTH_INVALID
    assert postfix.log_shows("authentication failed")


async def test_unauthenticated_recipient_is_refused(postfix: PostfixInstance) -> None:
    async with _client(postfix, _trusting(postfix)) as smtp:
        await smtp.mail("sender@example.com")
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
            await smtp.rcpt(RECIPIENTS[0])

    assert refused.value.code == ACCESS_DENIED
    assert "5.7.1" in refused.value.message
    assert postfix.log_shows("reject: RCPT")
    assert postfix.delivered() == []


async def test_auth_is_offered_only_after_starttls(postfix: PostfixInstance) -> None:
    plain = aiosmtplib.SMTP(
        hostname=postfix.host,
        port=postfix.port,
        start_tls=False,
        local_hostname=CLIENT_NAME,
        timeout=10,
    )
    async with plain:
        await plain.ehlo()
        assert plain.supports_extension("starttls")
        assert not plain.supports_extension("auth")
        await plain.starttls(tls_context=_trusting(postfix))
        await plain.ehlo()
        assert plain.supports_extension("auth")


def test_certificate_is_checked_against_its_own_ca(postfix: PostfixInstance) -> None:
    # smtplib, not aiosmtplib: asyncio leaks the socket of a failed handshake.
    smtp = smtplib.SMTP(postfix.host, postfix.port, CLIENT_NAME, timeout=10)
    try:
        # The system trust store does not hold the harness's throwaway CA.
        with pytest.raises(ssl.SSLCertVerificationError):
            smtp.starttls(context=ssl.create_default_context())
    finally:
        smtp.close()


def test_swaks_sends_with_tls_and_auth_plain(postfix: PostfixInstance) -> None:
    swaks = shutil.which("swaks")
    assert swaks, "swaks is missing: run .ci/run, or apt-get install swaks"
    command = [
        swaks,
        "--server", f"{postfix.host}:{postfix.port}",
        "--helo", CLIENT_NAME,
        "--from", postfix.username,
        "--to", "carol@example.org",
        "--header", "Subject: from swaks",
        "--tls", "--tls-verify", "--tls-ca-path", str(postfix.ca_path),
        "--auth", "PLAIN",
        "--auth-user", postfix.username,
        "--auth-password", postfix.password,
    ]  # fmt: skip

    result = subprocess.run(command, capture_output=True, text=True, timeout=30)

    assert result.returncode == 0, result.stdout + result.stderr
    [delivery] = postfix.wait_for(1)
    assert delivery.recipient == "carol@example.org"
    assert _header(delivery.message_bytes, "Subject") == "from swaks"
